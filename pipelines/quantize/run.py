"""Quantize a trained stage behind an accuracy gate: measure every candidate, keep the best.

`quantize_stage` writes each candidate precision (fp32, bf16, torch int8 dynamic, quanto
int8/int4; ONNX Runtime fp32 and int8 for the encoder stages; GPTQ for the decoder stages when
`quantize.method: gptq`) as a full stage folder,
loads it through the stage's own `load`, scores its key metric on validation and times a fixed
workload (rounds interleaved across candidates, so a busy machine slows all of them alike).
`choose` is the gate: with `method: auto` the fastest candidate whose key metric drops by at
most `max_metric_drop`; with a named method that method if it passes; otherwise fp32, with the
reason. The chosen folder is written to `out_dir` with `quantize.json` (every candidate) and its
method recorded in `stage.json`, so the stage's normal `load` applies it.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.quantize.methods import GPTQ, NONE, ONNX_METHODS, folder_bytes, model_bytes
from pipelines.quantize.stages import (
    check_unquantized,
    record_quantization,
    stage_adapter,
    stage_methods,
    write_variant,
)
from pipelines.stages.base import StageAdapter

if TYPE_CHECKING:
    from pipelines.config import QuantizeConfig
    from pipelines.data.contract import KnowledgeDoc, LabeledCase

REPORT_FILE = "quantize.json"


@dataclass(frozen=True)
class Candidate:
    """One measured precision of a stage."""

    method: str
    metric: float  # the stage's key metric on validation
    latency_ms: float  # median per example of the timed workload
    disk_bytes: int  # the variant's stage folder
    memory_bytes: int  # weights and buffers as loaded
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The gate's view of one candidate against fp32."""

    method: str
    metric_drop: float  # fp32 metric − candidate metric (positive = worse)
    speedup: float  # fp32 latency ÷ candidate latency
    passed: bool
    reason: str


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize.json` holds: every candidate, the verdicts, the choice and why."""

    stage: str
    key_metric: str
    method_requested: str
    max_metric_drop: float
    chosen: str
    reason: str
    candidates: list[Candidate]
    verdicts: list[Verdict]
    validation_cases: int
    workload_examples: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(candidates: Sequence[Candidate], max_metric_drop: float) -> list[Verdict]:
    """Each candidate's metric drop and speed-up against fp32, and whether it passes the gate."""
    base = next((c for c in candidates if c.method == NONE), None)
    if base is None:
        raise ValueError("the gate needs the fp32 ('none') candidate as its baseline")
    verdicts = []
    for c in candidates:
        drop = base.metric - c.metric
        speedup = base.latency_ms / c.latency_ms if c.latency_ms > 0 else 0.0
        passed = drop <= max_metric_drop + 1e-12
        reason = (
            f"drop {drop:+.4f} ≤ {max_metric_drop:g}"
            if passed
            else f"drop {drop:+.4f} > {max_metric_drop:g}"
        )
        verdicts.append(Verdict(c.method, drop, speedup, passed, f"{reason}, {speedup:.2f}× fp32"))
    return verdicts


def choose(verdicts: Sequence[Verdict], requested: str) -> tuple[str, str]:
    """The gate's decision (method, why): see the module docstring."""
    by_method = {v.method: v for v in verdicts}
    if requested == NONE:
        return NONE, "quantize.method is 'none': fp32 kept without measuring alternatives"
    if requested != "auto":
        verdict = by_method[requested]
        if verdict.passed:
            return requested, f"{requested} requested and within the gate: {verdict.reason}"
        return NONE, f"kept fp32: requested {requested} failed the gate ({verdict.reason})"
    passing = [v for v in verdicts if v.passed]
    best = max(passing, key=lambda v: v.speedup)  # fp32 itself always passes (drop 0)
    if best.method != NONE:
        return best.method, f"{best.method}: fastest within the gate ({best.reason})"
    failed = [f"{v.method} {v.reason}" for v in verdicts if v.method != NONE]
    return NONE, "kept fp32: no candidate faster within the gate: " + "; ".join(failed)


def candidate_methods(stage: str, cfg: QuantizeConfig) -> list[str]:
    """fp32 plus what `cfg.method` asks for (auto: every CPU candidate the stage supports)."""
    supported = stage_methods(stage)
    if cfg.method == "auto":
        return [NONE, *(m for m in cfg.auto_candidates if m in supported and m != NONE)]
    if cfg.method not in supported:
        raise ValueError(
            f"params.yaml: quantize.method {cfg.method!r} does not apply to the {stage} stage "
            f"(it supports {', '.join(supported)}); use 'auto'"
        )
    return [NONE] if cfg.method == NONE else [NONE, cfg.method]


def _time_interleaved(adapter: StageAdapter, loaded: dict[str, Any], rounds: int) -> dict:
    """Median seconds of the workload per method, one warm-up then `rounds` interleaved runs."""
    for model in loaded.values():
        adapter.workload(model)
    runs: dict[str, list[float]] = {m: [] for m in loaded}
    for _ in range(rounds):
        for method, model in loaded.items():
            started = time.perf_counter()
            adapter.workload(model)
            runs[method].append(time.perf_counter() - started)
    return {m: statistics.median(times) for m, times in runs.items()}


def _build(adapter: StageAdapter, src: Path, work: Path, method: str, cfg: QuantizeConfig):
    """Write the candidate folder for `method` (fp32: the source folder itself)."""
    if method == NONE:
        return src, {}
    dst = work / method
    settings: dict[str, Any] = {}
    if method in ONNX_METHODS:
        from pipelines.quantize.onnx_runtime import write_onnx_variant

        return write_onnx_variant(
            adapter.stage, src, dst, method, threads=cfg.torch_threads,
            per_channel=cfg.onnx_per_channel, reduce_range=cfg.onnx_reduce_range,
            weight_type=cfg.onnx_weight_type,
        )  # fmt: skip
    if method == GPTQ:
        from pipelines.quantize.gptq import quantize_gptq

        assert adapter.calibration is not None
        settings = quantize_gptq(
            src, dst, adapter.calibration(src), bits=cfg.gptq_bits, group_size=cfg.gptq_group_size
        )
    return write_variant(adapter.stage, src, dst, method, settings), settings


def quantize_stage(
    cfg: QuantizeConfig,
    stage: str,
    model_dir: Path,
    val_cases: Sequence[LabeledCase],
    out_dir: Path,
    *,
    docs: Sequence[KnowledgeDoc] = (),
    pool: Sequence[LabeledCase] | None = None,
    log: Any = print,
) -> QuantizeReport:
    """Measure the candidates of `stage`, gate them, write the chosen folder to `out_dir`."""
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_folders(stage, model_dir, out_dir)
    torch.set_num_threads(cfg.torch_threads)
    started = time.perf_counter()
    val = list(val_cases)[: cfg.max_val_cases]
    adapter = stage_adapter(
        stage, val, docs=docs, pool=pool, batch=cfg.latency_batch,
        generator_metric=cfg.generator_metric,
    )  # fmt: skip
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out_dir.parent) as tmp:
        candidates = _measure(adapter, model_dir, Path(tmp), cfg, log)
        verdicts = judge(candidates, cfg.max_metric_drop)
        chosen, reason = choose(verdicts, cfg.method)
        record = {"reason": reason, "key_metric": adapter.key_metric}
        _write_chosen(stage, model_dir, Path(tmp) / chosen, out_dir, chosen, record)
    report = QuantizeReport(
        stage=stage, key_metric=adapter.key_metric, method_requested=cfg.method,
        max_metric_drop=cfg.max_metric_drop, chosen=chosen, reason=reason,
        candidates=candidates, verdicts=verdicts, validation_cases=len(val),
        workload_examples=adapter.workload_size,
        seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    return report


def _check_folders(stage: str, model_dir: Path, out_dir: Path) -> None:
    """Refuse a quantized or foreign `model_dir`, and an `out_dir` that would overwrite it."""
    info = check_unquantized(model_dir)
    if info.get("stage") != stage:
        raise ValueError(f"{model_dir} holds a {info.get('stage')!r} stage, not {stage!r}")
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError("--out must differ from --model: the fp32 folder stays as it is")


def _measure(
    adapter: StageAdapter, model_dir: Path, work: Path, cfg: QuantizeConfig, log: Any
) -> list[Candidate]:
    """Build, load and score each candidate, then time them all (interleaved rounds)."""
    folders, loaded, measured = {}, {}, {}
    for method in candidate_methods(adapter.stage, cfg):
        log(f"{adapter.stage}: building and scoring {method}")
        folder, settings = _build(adapter, model_dir, work, method, cfg)
        model = adapter.load(folder)
        folders[method], loaded[method] = folder, model
        measured[method] = (adapter.evaluate(model), settings)
    log(f"{adapter.stage}: timing {len(loaded)} candidates × {cfg.latency_rounds} rounds")
    seconds = _time_interleaved(adapter, loaded, cfg.latency_rounds)
    return [
        Candidate(
            method=m,
            metric=float(measured[m][0][adapter.key_metric]),
            latency_ms=1000 * seconds[m] / max(adapter.workload_size, 1),
            disk_bytes=folder_bytes(folders[m]),
            memory_bytes=model_bytes(adapter.weights(loaded[m])) if adapter.weights else 0,
            metrics={k: float(v) for k, v in measured[m][0].items()},
            settings=measured[m][1],
        )
        for m in loaded
    ]


def _write_chosen(
    stage: str, src: Path, folder: Path, out_dir: Path, method: str, record: dict[str, Any]
) -> None:
    """Write the chosen variant as the complete stage folder `out_dir` (copies, no links)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if method == NONE:
        write_variant(stage, src, out_dir, NONE, record)
    else:
        shutil.copytree(folder, out_dir)
        record_quantization(out_dir, record)
