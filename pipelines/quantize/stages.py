"""Per-stage pieces of quantization: load a variant folder, its key metric, a timed workload.

Every candidate is written as a complete stage folder and loaded through the stage's own `load`,
so what is measured here is exactly what the registry, the cascade and the service will run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.quantize.methods import CPU_METHODS, GPTQ, NONE, ONNX_METHODS, recorded_method

STAGE_FILE = "stage.json"
KEY_METRICS = {
    "trigger": "auroc",
    "topic": "accuracy",
    "retrieve": "recall_at_k",
    "answer": "rouge_l_generated",  # raw generations vs the agent's reply, before thresholds
    "tone": "rouge_l_rewrite",
}
LOGPROB = "mean_logprob"  # decoders' alternative key metric: log-likelihood of the reference
GENERATORS = ("answer", "tone")
_WEIGHTS = {  # what the folder's weights are, for whoever reads stage.json
    NONE: "fp32 safetensors",
    "bf16": "bf16 safetensors",
    "int8_dynamic": "fp32 safetensors; torch dynamic int8 applied at load",
    "quanto_int8": "fp32 safetensors; optimum-quanto int8 weights applied at load",
    "quanto_int4": "fp32 safetensors; optimum-quanto int4 weights applied at load",
    GPTQ: "GPTQ safetensors checkpoint (GPTQModel)",
    "onnx": "model.onnx run in ONNX Runtime (fp32); fp32 safetensors kept",
    "onnx_int8": "model.onnx with ONNX Runtime dynamic int8 weights; fp32 safetensors kept",
}


@dataclass(frozen=True)
class StageAdapter:
    """How to load, score and time one stage's variants on a fixed validation set."""

    stage: str
    key_metric: str
    load: Callable[[Path], Any]
    evaluate: Callable[[Any], dict[str, float]]
    workload: Callable[[Any], None]  # the timed work: a fixed batch through the model
    workload_size: int  # examples per workload run (latency is reported per example)
    calibration: Callable[[Path], list[list[int]]] | None = None  # GPTQ token ids


def read_stage_info(model_dir: Path) -> dict[str, Any]:
    """The `stage.json` of a stage folder, with a clear error when the folder is not one."""
    path = Path(model_dir) / STAGE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} missing: {model_dir} is not a trained stage folder; "
            f"run `casepilot train <stage> --out {model_dir}` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def stage_methods(stage: str) -> tuple[str, ...]:
    """The methods a stage supports: the torch CPU ones everywhere, GPTQ for decoders only,
    ONNX Runtime for the encoders only."""
    if stage in GENERATORS:
        return (NONE, *CPU_METHODS, GPTQ)
    return (NONE, *CPU_METHODS, *ONNX_METHODS)


def write_variant(stage: str, src: Path, dst: Path, method: str, record: dict[str, Any]) -> Path:
    """Write `src` as a complete stage folder in precision `method` into `dst`.

    bf16 rewrites the weights in bfloat16 (half the size); int8/quanto keep the fp32
    safetensors and quantize at load; GPTQ is written by `quantize_gptq` before this is called
    (then `dst` already holds its checkpoint). `record` goes into stage.json `quantization`.
    """
    src, dst = Path(src), Path(dst)
    if method != GPTQ:
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    if method == "bf16" and stage != "retrieve":
        _save_bf16(stage, src, dst)
    info = read_stage_info(src)
    info["quantization"] = {"method": method, "weights": _WEIGHTS.get(method, "")}
    (dst / STAGE_FILE).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    return record_quantization(dst, record)


def record_quantization(folder: Path, record: dict[str, Any]) -> Path:
    """Merge `record` into the `quantization` entry of the folder's stage.json; returns folder."""
    info = read_stage_info(folder)
    prior = info.get("quantization")
    info["quantization"] = {**(prior if isinstance(prior, dict) else {}), **record}
    (Path(folder) / STAGE_FILE).write_text(
        json.dumps(info, indent=2, default=str), encoding="utf-8"
    )
    return Path(folder)


def _save_bf16(stage: str, src: Path, dst: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if stage in GENERATORS else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(src)).to(torch.bfloat16)
    model.save_pretrained(str(dst), safe_serialization=True)


def _limit(items: Sequence[Any], n: int) -> list[Any]:
    return list(items[:n])


def stage_adapter(
    stage: str,
    val_cases: Sequence[LabeledCase],
    *,
    docs: Sequence[KnowledgeDoc] = (),
    pool: Sequence[LabeledCase] | None = None,
    batch: int = 32,
    generator_metric: str = "rouge_l",
) -> StageAdapter:
    """The adapter of `stage` over `val_cases` (answer: context from `pool` and `docs`).

    `generator_metric` 'mean_logprob' makes the decoders' key metric the mean token
    log-probability of the reference replies instead of ROUGE-L of greedy generations.
    """
    if stage in ("trigger", "topic"):
        return _classifier_adapter(stage, val_cases, batch)
    if stage == "retrieve":
        return _retrieve_adapter(val_cases, batch)
    if stage in GENERATORS:
        adapter = _generator_adapter(stage, val_cases, docs, pool, batch)
        if generator_metric == LOGPROB:
            return replace(adapter, key_metric=LOGPROB)
        return adapter
    raise ValueError(f"unknown stage {stage!r}; use trigger, topic, retrieve, answer or tone")


def _classifier_adapter(stage: str, val: Sequence[LabeledCase], batch: int) -> StageAdapter:
    from pipelines.stages import topic, trigger

    module = trigger if stage == "trigger" else topic

    def examples(model: Any):
        if stage == "trigger":
            return trigger.examples(val)
        return topic.examples(val, model.meta.labels)

    def workload(model: Any) -> None:
        data = examples(model)
        model.classifier.logits(_limit(data.texts, batch), _limit(data.pairs, batch))

    return StageAdapter(
        stage=stage,
        key_metric=KEY_METRICS[stage],
        load=module.load,
        evaluate=lambda model: module.evaluate(model, val, figures=False)[0],
        workload=workload,
        workload_size=min(batch, len(val)),
    )


def _retrieve_adapter(val: Sequence[LabeledCase], batch: int) -> StageAdapter:
    from pipelines.stages import retrieve

    messages = _limit([c.message for c in val], batch)
    return StageAdapter(
        stage="retrieve",
        key_metric=KEY_METRICS["retrieve"],
        load=retrieve.load,
        evaluate=lambda index: retrieve.evaluate(index, val),
        workload=lambda index: index.embedder.embed(messages),
        workload_size=len(messages),
    )


def _generator_adapter(
    stage: str,
    val: Sequence[LabeledCase],
    docs: Sequence[KnowledgeDoc],
    pool: Sequence[LabeledCase] | None,
    batch: int,
) -> StageAdapter:
    from pipelines.stages import answer, tone
    from pipelines.stages.decoder import generator

    module = answer if stage == "answer" else tone

    def pairs(cfg: Any) -> list[tuple[str, str]]:
        """(prompt, reference reply) of every validation example."""
        if stage == "tone":
            return [(tone.prompt(d), r) for d, r in tone.tone_pairs(val)]
        found = answer.training_inputs(
            val, docs, pool=pool, max_passages=cfg.max_passages, passage_chars=cfg.passage_chars
        )
        return [(answer.prompt(inp, cfg.max_passages), ref) for inp, ref in found]

    def evaluate(model: Any) -> dict[str, float]:
        if stage == "answer":
            metrics = answer.evaluate(model, val, docs, pool=pool)
        else:
            metrics = tone.evaluate(model, val)
        examples = [generator.Example(p, r) for p, r in pairs(model.cfg)]
        return metrics | {LOGPROB: reference_logprob(model, examples)}

    def workload(model: Any) -> None:
        prompts = [p for p, _ in pairs(model.cfg)][: max(1, batch // 4)]
        fixed_length_generate(model.model, model.tokenizer, prompts, model.cfg)

    def calibration(model_dir: Path) -> list[list[int]]:
        loaded = module.load(model_dir)
        length = loaded.cfg.max_length
        return [
            generator.encode(loaded.tokenizer, generator.Example(p, r), length)["input_ids"]
            for p, r in pairs(loaded.cfg)[:128]
        ]

    return StageAdapter(
        stage=stage,
        key_metric=KEY_METRICS[stage],
        load=module.load,
        evaluate=evaluate,
        workload=workload,
        workload_size=max(1, batch // 4),
        calibration=calibration,
    )


def fixed_length_generate(model: Any, tokenizer: Any, prompts: Sequence[str], cfg: Any) -> None:
    """Greedy-decode exactly `min(max_new_tokens, 32)` tokens per prompt: the same work for
    every variant, whatever each one would have stopped at."""
    import torch

    from pipelines.stages.decoder.generator import prompt_ids

    new_tokens = min(cfg.max_new_tokens, 32)
    encoded = [prompt_ids(tokenizer, p, cfg.max_length - new_tokens) for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    with torch.inference_mode():
        model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=pad,
        )  # fmt: skip


def reference_logprob(model: Any, examples: Sequence[Any], batch: int = 16) -> float:
    """Mean log-probability per reference token, the prompt given (teacher forcing).

    A model that fits its references sits near a maximum of this, so any weight perturbation
    lowers it: the most sensitive check that quantization changed what the decoder learned.
    """
    import torch

    from pipelines.stages.decoder.generator import encode

    rows = [encode(model.tokenizer, ex, model.cfg.max_length) for ex in examples]
    total, count = 0.0, 0
    pad = model.tokenizer.pad_token_id
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in chunk])
        mask = (
            torch.arange(width)[None, :]
            < torch.tensor([len(r["input_ids"]) for r in chunk])[:, None]
        ).long()
        with torch.inference_mode():
            logits = model.model(input_ids=ids.to(model.model.device), attention_mask=mask).logits
        logprobs = logits[:, :-1].float().log_softmax(-1).cpu()
        target = labels[:, 1:]
        keep = target != -100
        picked = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total += float(picked[keep].sum())
        count += int(keep.sum())
    return total / count if count else float("nan")


def check_unquantized(model_dir: Path) -> dict[str, Any]:
    """The stage.json of `model_dir`, refusing a folder that is already quantized."""
    info = read_stage_info(model_dir)
    method = recorded_method(info)
    if method != NONE:
        raise ValueError(
            f"{model_dir} is already quantized ({method}); quantize the fp32 folder that "
            f"`casepilot train` wrote"
        )
    return info
