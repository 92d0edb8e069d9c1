"""Shared decoder-only LM code for the answer and tone stages: build, fine-tune, save, generate.

The base is configurable (`GeneratorConfig.base_model`: a local folder or a cached hub id). When
it is null, the embedded default is built (`tiny.py`): a byte-level BPE tokenizer trained on the
corpus with the `tokenizers` library and a small Llama-architecture model (decoder-only, so GPTQ
applies to it later) sized by `tiny_layers` / `tiny_hidden` / `tiny_heads`, trained from scratch.
Training is causal-LM fine-tuning of `prompt → target` pairs with the transformers Trainer; the
loss covers the target tokens only. Full fine-tuning by default, a LoRA adapter (peft) with
`lora: true` on a pretrained base.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import GeneratorConfig
from pipelines.stages.decoder.tiny import build_tiny_model, train_tokenizer

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
    from transformers import Trainer

    from pipelines.stages.training import (
        causal_lm_arguments,
        causal_lm_collator,
        deepspeed_config_path,
        under_distributed_launcher,
    )

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
        model = _with_lora(model, cfg.lora_rank)
    rows = [encode(tokenizer, ex, cfg.max_length) for ex in train]
    val_rows = [encode(tokenizer, ex, cfg.max_length) for ex in val]
    trainer = Trainer(
        model=model,
        args=causal_lm_arguments(cfg, work_dir, n_train=len(rows), deepspeed=deepspeed),
        train_dataset=rows,
        eval_dataset=val_rows or None,
        data_collator=causal_lm_collator(tokenizer.pad_token_id),
        callbacks=list(callbacks),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    val_loss = trainer.evaluate()["eval_loss"] if val_rows else None
    if use_lora:
        adapter = model
        adapter.save_pretrained(str(work_dir / ADAPTER_DIR), safe_serialization=True)
        model = adapter.merge_and_unload()
    return model.eval(), _fit_report(trainer, seconds, val_loss, base=base, lora=use_lora)


def _fit_report(
    trainer: Any, seconds: float, val_loss: float | None, *, base: str, lora: bool
) -> FitReport:
    """The report of a finished run: first and last logged training loss, steps, seconds."""
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return FitReport(
        train_loss_first=losses[0] if losses else float("nan"),
        train_loss_last=losses[-1] if losses else float("nan"),
        val_loss=val_loss,
        steps=trainer.state.global_step,
        seconds=round(seconds, 1),
        base=base,
        lora=lora,
    )


def _with_lora(model: Any, rank: int) -> Any:
    """`model` wrapped with a LoRA adapter of rank `rank` on all its linear layers."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


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
