"""Shared decoder-only LM code for the answer and tone stages: build, fine-tune, save, generate.

The base is configurable (`GeneratorConfig.base_model`: a local folder or a cached hub id). When
it is null, the embedded default is built here: a byte-level BPE tokenizer trained on the corpus
with the `tokenizers` library and a small Llama-architecture model (decoder-only, so GPTQ applies
to it later) sized by `tiny_layers` / `tiny_hidden` / `tiny_heads`, trained from scratch.
Training is causal-LM fine-tuning of `prompt → target` pairs with the transformers Trainer; the
loss covers the target tokens only. Full fine-tuning by default, a LoRA adapter (peft) with
`lora: true` on a pretrained base.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import GeneratorConfig

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Prompt field markers: atomic tokens in the embedded tokenizer, plain text for any other base.
MARKERS = ("<|context|>", "<|topic|>", "<|message|>", "<|reply|>", "<|draft|>", "<|rewrite|>")
ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class Example:
    """One fine-tuning pair: the model reads `prompt` and learns to write `target`."""

    prompt: str
    target: str


@dataclass(frozen=True)
class Generated:
    """A greedy continuation and its mean token log-probability."""

    text: str
    mean_logprob: float
    tokens: int

    @property
    def confidence(self) -> float:
        """exp(mean log-prob): the geometric-mean probability of the generated tokens."""
        return math.exp(self.mean_logprob) if self.tokens else 0.0


@dataclass(frozen=True)
class FitReport:
    """What one fine-tuning run did: losses, steps, seconds, and how the base was made."""

    train_loss_first: float
    train_loss_last: float
    val_loss: float | None
    steps: int
    seconds: float
    base: str
    lora: bool


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Return a byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK, *MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
    )


def build_tiny_model(cfg: GeneratorConfig, tokenizer: Any) -> Any:
    """Return a freshly initialised small Llama-style causal LM sized by the `tiny_*` fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.tiny_hidden % cfg.tiny_heads:
        raise ValueError(
            f"params.yaml: tiny_hidden ({cfg.tiny_hidden}) must be divisible by tiny_heads "
            f"({cfg.tiny_heads}); change one of them"
        )
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.tiny_hidden,
        intermediate_size=cfg.tiny_hidden * 4,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        num_key_value_heads=cfg.tiny_heads,
        max_position_embeddings=cfg.max_length + cfg.max_new_tokens,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def load_base(cfg: GeneratorConfig, corpus: Sequence[str]) -> tuple[Any, Any, str]:
    """Return (model, tokenizer, base description): the configured base, or the tiny default."""
    if cfg.base_model is None:
        tokenizer = train_tokenizer(corpus, cfg.vocab_size)
        tiny = (
            f"tiny-llama(layers={cfg.tiny_layers},hidden={cfg.tiny_hidden},vocab={len(tokenizer)})"
        )
        return build_tiny_model(cfg, tokenizer), tokenizer, tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model)
    except OSError as err:
        raise FileNotFoundError(
            f"params.yaml: base_model {cfg.base_model!r} is neither a local model folder nor a "
            f"cached hub id ({err}); point it at a saved model, or set it to null for the tiny "
            f"default"
        ) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, cfg.base_model


def encode(tokenizer: Any, example: Example, max_length: int) -> dict[str, list[int]]:
    """Tokenise a pair for training: prompt cut from the left to fit, labels on the target only."""
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"][: max_length // 2]
    target = [*target, tokenizer.eos_token_id]
    prompt = prompt_ids(tokenizer, example.prompt, max_length - len(target))
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target}


def prompt_ids(tokenizer: Any, prompt: str, budget: int) -> list[int]:
    """Token ids of BOS + prompt, keeping the prompt's end (nearest the reply) within `budget`."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    keep = max(budget - len(bos), 1)
    return bos + ids[-keep:]


def _collate(pad_id: int):
    import torch

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate


def fine_tune(
    cfg: GeneratorConfig,
    model: Any,
    tokenizer: Any,
    train: Sequence[Example],
    val: Sequence[Example],
    work_dir: Path,
    *,
    base: str,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, FitReport]:
    """Fine-tune `model` on the pairs; returns the trained model (LoRA merged) and a report."""
    from transformers import Trainer, TrainingArguments

    from pipelines.stages.training import deepspeed_config_path, under_distributed_launcher

    deepspeed = deepspeed_config_path(cfg.deepspeed)
    if deepspeed and not under_distributed_launcher():
        raise RuntimeError(
            "deepspeed is set but this process was not started by a launcher; run it with "
            "`torchrun --nproc_per_node 1 -m flows.cli.main train …` (DS_ACCELERATOR=cpu on CPU)"
        )
    if not train:
        raise ValueError("no training pairs: the cases hold no usable (input, reply) pairs")
    # LoRA on random weights learns next to nothing: a freshly built base is trained in full.
    use_lora = cfg.lora and cfg.base_model is not None
    if use_lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=2 * cfg.lora_rank,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    rows = [encode(tokenizer, ex, cfg.max_length) for ex in train]
    val_rows = [encode(tokenizer, ex, cfg.max_length) for ex in val]
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=max(1, min(50, steps_per_epoch // 2)),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        use_cpu=not _cuda(),
        optim="adamw_torch",
        deepspeed=deepspeed,
        train_sampling_strategy="group_by_length",  # less padding: prompts vary a lot in length
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=val_rows or None,
        data_collator=_collate(tokenizer.pad_token_id),
        callbacks=list(callbacks),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    val_loss = trainer.evaluate()["eval_loss"] if val_rows else None
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    if use_lora:
        adapter = model
        adapter.save_pretrained(str(work_dir / ADAPTER_DIR), safe_serialization=True)
        model = adapter.merge_and_unload()
    report = FitReport(
        train_loss_first=losses[0] if losses else float("nan"),
        train_loss_last=losses[-1] if losses else float("nan"),
        val_loss=val_loss,
        steps=trainer.state.global_step,
        seconds=round(seconds, 1),
        base=base,
        lora=use_lora,
    )
    return model.eval(), report


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def save_generator(model: Any, tokenizer: Any, out_dir: Path, meta: dict[str, Any]) -> Path:
    """Write safetensors weights, tokenizer files and `stage.json` into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "stage.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return out_dir


def load_generator(model_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Read back what `save_generator` wrote: (model in eval mode, tokenizer, stage.json)."""
    from transformers import AutoTokenizer

    from pipelines.quantize.methods import load_causal_lm

    model_dir = Path(model_dir)
    meta_path = model_dir / "stage.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{meta_path} not found: {model_dir} is not a trained generator stage; "
            f"run `casepilot train answer|tone --out {model_dir}` first"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return load_causal_lm(model_dir, meta).eval(), tokenizer, meta  # in its recorded precision


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_length: int,
    max_new_tokens: int,
    batch_size: int = 16,
    decode_rows: int = 32,
) -> list[Generated]:
    """Greedy continuations of `prompts`, each with its mean log-prob, batched (`decoding.greedy`).

    Prompts are prefilled `batch_size` at a time in buckets of similar length and decoded up to
    `decode_rows` together; a row stops at its EOS. The result does not depend on the batch.
    """
    from pipelines.stages.decoder import decoding

    if not prompts:
        return []
    budget = max(max_length - max_new_tokens, 8)
    encoded = [prompt_ids(tokenizer, p, budget) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    decoded = decoding.greedy(
        model, encoded, pad_id=pad if pad is not None else 0, eos_id=tokenizer.eos_token_id,
        max_new_tokens=max_new_tokens, prefill_rows=batch_size, decode_rows=decode_rows,
    )  # fmt: skip
    results = []
    for row in decoded:
        text = tokenizer.decode(row.tokens, skip_special_tokens=True).strip()
        mean = sum(row.logprobs) / len(row.logprobs) if row.logprobs else float("-inf")
        results.append(Generated(text=text, mean_logprob=mean, tokens=len(row.tokens)))
    return results


def versions() -> dict[str, str]:
    """Library versions recorded in stage.json."""
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
