"""Quantization benchmark on the synthetic world: chosen precision ÷ fp32 latency, per stage.

Goal (issue 5): ≥ 2× faster at ≤ 1 point lost for the encoder stages (trigger, topic, the
retrieve query embedder) and a measured speed-up for the generator (answer, tone).

    .venv/bin/python benchmarks/bench_quantize.py --seed 7 --days 2

Trains every stage with small settings (recorded in the results) on a seeded split of the
synthetic world, then runs `quantize_stage` with `quantize.method: auto` on each — the same code
`casepilot quantize` runs — and, for the answer stage, also GPTQ 4-bit (the GPU path, measured
here on CPU). Latencies are medians of rounds interleaved across candidates in one process, so
the ratios hold on a shared, busy machine even when the absolute times do not.
Writes `benchmarks/results/quantize.json`.

    .venv/bin/python benchmarks/bench_quantize.py --stages trigger,topic,retrieve --rounds 9 \
        --onnx-sweep

`--candidates` overrides `quantize.auto_candidates` (e.g. `onnx,onnx_int8`); `--rounds` the
interleaved timing rounds; `--onnx-sweep` also scores every `onnx_int8` setting (per-channel,
reduce_range, signed/unsigned weights) of each encoder stage against its fp32 model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# Small training settings: the benchmark measures quantization, not the best attainable model.
SMALL_TRAINING = {
    "trigger": {"max_steps": 60, "learning_rate": 1e-4, "warmup_ratio": 0.1},
    "topic": {"max_steps": 60, "learning_rate": 3e-4, "warmup_ratio": 0.1},
    "answer": {"epochs": 1.0},
    "tone": {"epochs": 1.0},
}


def _train_stages(
    params, split, docs, models: Path, qdrant: Path, tag: str, wanted: set[str]
) -> dict[str, float]:
    """Train each wanted stage that has no folder yet under `models`; returns seconds per stage."""
    from pipelines.stages import answer, retrieve, tone, topic, trigger

    seconds: dict[str, float] = {}

    def run(stage: str, fn, *args, **kwargs) -> None:
        if stage not in wanted or (models / stage / "stage.json").is_file():
            return
        started = time.perf_counter()
        fn(*args, **kwargs)
        seconds[stage] = round(time.perf_counter() - started, 1)
        print(f"train {stage}: {seconds[stage]} s", flush=True)

    cfg = {s: getattr(params, s).model_copy(update=u) for s, u in SMALL_TRAINING.items()}
    run("trigger", trigger.train, cfg["trigger"], split.train, split.val, models / "trigger")
    run("topic", topic.train, cfg["topic"], split.train, split.val, models / "topic")
    run("retrieve", retrieve.train, params.retrieve, split.train, None, models / "retrieve",
        docs=docs, location=str(qdrant), data_version=tag)  # fmt: skip
    run("answer", answer.train, cfg["answer"], split.train, split.val, models / "answer", docs=docs)
    run("tone", tone.train, cfg["tone"], split.train, split.val, models / "tone")
    return seconds


def _summary(report: dict) -> dict:
    """fp32 vs chosen (from a `quantize.json`): latency ratio, speed-up, metric change."""
    by_method = {c["method"]: c for c in report["candidates"]}
    verdicts = {v["method"]: v for v in report["verdicts"]}
    base, chosen = by_method["none"], by_method[report["chosen"]]
    return {
        "chosen": report["chosen"],
        "reason": report["reason"],
        "key_metric": report["key_metric"],
        "fp32_metric": base["metric"],
        "chosen_metric": chosen["metric"],
        "metric_change": chosen["metric"] - base["metric"],
        "fp32_latency_ms": base["latency_ms"],
        "chosen_latency_ms": chosen["latency_ms"],
        "latency_ratio": chosen["latency_ms"] / base["latency_ms"],
        "speedup": verdicts[report["chosen"]]["speedup"],
        "validation_cases": report["validation_cases"],
        "workload_examples": report["workload_examples"],
        "seconds": report["seconds"],
        "candidates": [
            {
                "method": c["method"],
                "metric": c["metric"],
                "metric_drop": verdicts[c["method"]]["metric_drop"],
                "latency_ms": c["latency_ms"],
                "speedup": verdicts[c["method"]]["speedup"],
                "disk_mb": round(c["disk_bytes"] / 1e6, 2),
                "memory_mb": round(c["memory_bytes"] / 1e6, 2),
                "passed": verdicts[c["method"]]["passed"],
            }
            for c in report["candidates"]
        ],
    }


SWEEP = [  # (per_channel, reduce_range, weight_type) of onnx_int8
    (pc, rr, wt) for pc in (True, False) for rr in (False, True) for wt in ("qint8", "quint8")
]


def _onnx_sweep(stage: str, model_dir: Path, val, work: Path, cfg, rounds: int) -> list[dict]:
    """Key metric and latency ÷ fp32 of every onnx_int8 setting (rounds interleaved with fp32)."""
    from pipelines.quantize.onnx_runtime import write_onnx_variant
    from pipelines.quantize.run import _time_interleaved
    from pipelines.quantize.stages import stage_adapter

    adapter = stage_adapter(stage, list(val)[: cfg.max_val_cases], batch=cfg.latency_batch)
    loaded, metrics = {"none": adapter.load(model_dir)}, {}
    metrics["none"] = adapter.evaluate(loaded["none"])[adapter.key_metric]
    for per_channel, reduce_range, weight_type in SWEEP:
        name = f"pc{int(per_channel)}-rr{int(reduce_range)}-{weight_type}"
        folder, _ = write_onnx_variant(
            stage, model_dir, work / name, "onnx_int8", threads=cfg.torch_threads,
            per_channel=per_channel, reduce_range=reduce_range, weight_type=weight_type,
        )  # fmt: skip
        loaded[name] = adapter.load(folder)
        metrics[name] = adapter.evaluate(loaded[name])[adapter.key_metric]
    seconds = _time_interleaved(adapter, loaded, rounds)
    return [
        {"setting": name, adapter.key_metric: metrics[name],
         "metric_change": metrics[name] - metrics["none"],
         "speedup": seconds["none"] / seconds[name]}
        for name in loaded
    ]  # fmt: skip


def _one_thread_check(stage: str, fp32_dir: Path, chosen_dir: Path, val, cfg, rounds: int):
    """fp32 ÷ chosen latency with torch and ONNX Runtime both on ONE intra-op thread.

    On a loaded 2-core box a 2-thread torch op waits at every barrier for a descheduled thread,
    which flatters whichever runtime copes better; one thread each compares the kernels alone.
    """
    import torch

    from pipelines.quantize.onnx_runtime import session
    from pipelines.quantize.run import _time_interleaved
    from pipelines.quantize.stages import stage_adapter

    adapter = stage_adapter(stage, list(val)[: cfg.max_val_cases], batch=cfg.latency_batch)
    loaded = {"none": adapter.load(fp32_dir), "chosen": adapter.load(chosen_dir)}
    torch.set_num_threads(1)  # the stages' loaders set 2
    target = loaded["chosen"].embedder if stage == "retrieve" else loaded["chosen"].classifier.model
    if hasattr(target, "session"):  # an ONNX candidate: a new session on one thread
        target.session = session(target.onnx_path, 1)
    seconds = _time_interleaved(adapter, loaded, rounds)
    torch.set_num_threads(cfg.torch_threads)
    return {"threads": 1, "rounds": rounds, "speedup": seconds["none"] / seconds["chosen"],
            "fp32_ms": 1000 * seconds["none"] / adapter.workload_size,
            "chosen_ms": 1000 * seconds["chosen"] / adapter.workload_size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--stages", default="trigger,topic,retrieve,answer,tone,answer-gptq")
    parser.add_argument("--max-val-cases", type=int, default=240)
    parser.add_argument("--work", type=Path, default=None, help="models (default: under home)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quantize.json")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument(
        "--resume", action="store_true", help="reuse a stage's quantize.json from an earlier run"
    )
    parser.add_argument("--candidates", default=None, help="override quantize.auto_candidates")
    parser.add_argument("--rounds", type=int, default=None, help="override latency_rounds")
    parser.add_argument(
        "--onnx-sweep", action="store_true", help="score every onnx_int8 setting per encoder"
    )
    parser.add_argument(
        "--one-thread-check", action="store_true",
        help="encoders: also time fp32 vs the chosen method on one intra-op thread each",
    )  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="add the stages of earlier result files"
    )
    args = parser.parse_args()

    from pipelines.config import load_params
    from pipelines.data.dataset import split_cases
    from pipelines.data.synth.world import generate_world
    from pipelines.quantize.run import quantize_stage

    params = load_params(args.params)
    params.home.apply()
    work = args.work or params.home.root / "bench" / f"quantize-seed{args.seed}-days{args.days}"
    models, qdrant = work / "models", work / "qdrant"
    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    world = generate_world(params.data.synth, seed=args.seed, days=args.days)
    cases = [case for day in world.days for case in day.cases]
    split = split_cases(cases, params.data.validation_share, params.data.split_seed)
    tag = f"synth-{args.seed}-{args.days}"
    stages = [name for name in args.stages.split(",") if name]
    wanted = {name.partition("-")[0] for name in stages}
    train_seconds = _train_stages(params, split, world.docs, models, qdrant, tag, wanted)
    results: dict[str, dict] = {}
    for name in stages:
        stage, _, variant = name.partition("-")
        update = {"max_val_cases": args.max_val_cases}
        if args.candidates:
            update["auto_candidates"] = tuple(args.candidates.split(","))
        if args.rounds:
            update["latency_rounds"] = args.rounds
        update |= {"method": "gptq"} if variant == "gptq" else {}
        cfg = params.quantize.model_copy(update=update)
        done = work / "quantized" / name / "quantize.json"
        if args.resume and done.is_file():  # measured by an earlier (or interrupted) run
            results[name] = _summary(json.loads(done.read_text(encoding="utf-8")))
        else:
            report = quantize_stage(
                cfg, stage, models / stage, split.val, work / "quantized" / name,
                docs=world.docs, pool=split.train,
            )  # fmt: skip
            results[name] = _summary(report.to_json())
        if args.one_thread_check and stage in ("trigger", "topic", "retrieve"):
            results[name]["one_thread"] = _one_thread_check(
                stage, models / stage, work / "quantized" / name, split.val, cfg, cfg.latency_rounds
            )
        if args.onnx_sweep and stage in ("trigger", "topic", "retrieve"):
            results[name]["onnx_int8_sweep"] = _onnx_sweep(
                stage, models / stage, split.val, work / "sweep" / name, cfg, cfg.latency_rounds
            )
        print(json.dumps({name: {k: results[name][k] for k in
                                 ("chosen", "speedup", "metric_change")}}), flush=True)  # fmt: skip
    parts = {}
    for part in args.merge:  # stages measured by other processes (same world and split)
        earlier = json.loads(part.read_text(encoding="utf-8"))
        results = earlier["stages"] | results
        parts[part.name] = {
            "stages": list(earlier["stages"]),
            "wall_seconds": earlier["wall_seconds"],
            "train_seconds": earlier["train_seconds"],
            "load_average": [earlier["machine"]["load_average_at_start"],
                             earlier["machine"]["load_average_at_end"]],
        }  # fmt: skip
    encoders = [results[s] for s in ("trigger", "topic", "retrieve") if s in results]
    generators = [results[s] for s in ("answer", "tone") if s in results]
    payload = {
        "goal": {
            "encoders": "≥ 2× faster (chosen ÷ fp32 latency ≤ 0.5) at ≤ 1 point lost",
            "generators": "a measured speed-up",
        },
        "met": {
            "encoders": all(r["speedup"] >= 2 and r["metric_change"] >= -0.01 for r in encoders),
            "generators": any(r["speedup"] > 1 for r in generators),
        },
        "stages": results,
        "quantize_params": params.quantize.model_dump(mode="json")
        | {"max_val_cases": args.max_val_cases}
        | ({"auto_candidates": args.candidates.split(",")} if args.candidates else {})
        | ({"latency_rounds": args.rounds} if args.rounds else {}),
        "training_overrides": SMALL_TRAINING,
        "train_seconds": train_seconds,
        "split": {
            "train": len(split.train),
            "val": len(split.val),
            "val_share": params.data.validation_share,
            "split_seed": params.data.split_seed,
        },  # fmt: skip
        "world": {"seed": args.seed, "days": args.days, "cases": len(cases)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "merged_runs": parts,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "shared": "yes: other jobs ran at the same time; ratios come from interleaved rounds",
            "load_average_at_start": load_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload["met"]), f"wall {payload['wall_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
