"""Quantization's side of a stage folder: write a variant, record its method, score and time it.

What differs per stage (its key metric, how it loads, its timed workload, GPTQ calibration) comes
from the stage's own `Stage.quantize_adapter` (`pipelines.stages.registry`); what differs per
kind of model (bf16 rewrites of encoders and decoders) is decided by `Stage.kind`. Every
candidate is written as a complete stage folder and loaded through the stage's own `load`, so
what is measured here is exactly what the registry, the cascade and the service will run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.quantize.methods import GPTQ, NONE, recorded_method
from pipelines.stages.base import DECODER, ENCODER, StageAdapter, StageInputs
from pipelines.stages.registry import get_stage

STAGE_FILE = "stage.json"
LOGPROB = "mean_logprob"  # decoders' alternative key metric: log-likelihood of the reference
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
    """The methods a stage supports (its `Stage.quantize_methods`)."""
    return tuple(get_stage(stage).quantize_methods)


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
    kind = get_stage(stage).kind
    if method == "bf16" and kind in (ENCODER, DECODER):  # an index's embedder: bf16 at load
        _save_bf16(kind, src, dst)
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


def _save_bf16(kind: str, src: Path, dst: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if kind == DECODER else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(src)).to(torch.bfloat16)
    model.save_pretrained(str(dst), safe_serialization=True)


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
    impl = get_stage(stage)
    adapter = impl.quantize_adapter(val_cases, StageInputs(docs=docs, pool=pool), batch=batch)
    if generator_metric == LOGPROB and impl.kind == DECODER:
        return replace(adapter, key_metric=LOGPROB)
    return adapter


def generator_adapter(
    stage: str,
    key_metric: str,
    *,
    load: Callable[[Path], Any],
    evaluate: Callable[[Any], dict[str, float]],
    pairs: Callable[[Any], list[tuple[str, str]]],
    batch: int,
) -> StageAdapter:
    """A decoder's adapter; `pairs(cfg)`: (prompt, reference reply) of each validation example."""
    from pipelines.stages.decoder import generator

    def scored(model: Any) -> dict[str, float]:
        examples = [generator.Example(p, r) for p, r in pairs(model.cfg)]
        return evaluate(model) | {LOGPROB: reference_logprob(model, examples)}

    def workload(model: Any) -> None:
        prompts = [p for p, _ in pairs(model.cfg)][: max(1, batch // 4)]
        fixed_length_generate(model.model, model.tokenizer, prompts, model.cfg)

    def calibration(model_dir: Path) -> list[list[int]]:
        loaded = load(model_dir)
        length = loaded.cfg.max_length
        return [
            generator.encode(loaded.tokenizer, generator.Example(p, r), length)["input_ids"]
            for p, r in pairs(loaded.cfg)[:128]
        ]

    return StageAdapter(
        stage=stage,
        key_metric=key_metric,
        load=load,
        evaluate=scored,
        workload=workload,
        workload_size=max(1, batch // 4),
        calibration=calibration,
        weights=lambda model: model.model,
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
