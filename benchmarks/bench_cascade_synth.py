"""End-to-end benchmark on the synthetic world: train every stage, evaluate the whole cascade.

Goal (issue 4): emitted suggestions ≥ 90% correct (ROUGE-L F1 ≥ 0.8 against the reference
`agent_reply`) at ≥ 60% coverage of answerable cases, and every abstention has a reason.

    .venv/bin/python benchmarks/bench_cascade_synth.py --seed 7 --days 3            # fine-tuned
    .venv/bin/python benchmarks/bench_cascade_synth.py --seed 7 --days 3 --frozen   # floor

Writes `benchmarks/results/cascade.json` (`cascade_frozen.json`) with the precision–coverage
curve (suggestions ranked by p(answerable) × p(topic) × answer score). `--frozen` swaps the
fine-tuned trigger/topic for logistic regressions on frozen MiniLM embeddings and the answer
generator for the answer stage's retrieved-reply rule alone (`cascade_frozen.py`): the baseline,
in minutes. Diagnostics beside the goal metrics: `reference_ceiling` (precision of answering each
topic with its most frequent training reply: what a topic-level model could reach) and
`precision_topic_macro` (emitted suggestions matching any canonical reply of the true topic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# params.yaml's trigger/topic training defaults are sized for Banking77/CLINC150 (10k+ cases);
# on a 3-day world (~20 training cases per topic) 4 epochs at 5e-5 leave the topic model at
# ~70% accuracy. The benchmark trains them as the behavioural tests do (`synth_models`,
# tests/stages/conftest.py) and records these overrides in the results; every other
# setting comes from params.yaml.
SMALL_WORLD_TRAINING = {
    "trigger": {"epochs": 3.0, "learning_rate": 1e-4, "warmup_ratio": 0.1},
    "topic": {"epochs": 6.0, "learning_rate": 3e-4, "warmup_ratio": 0.1},
}
CURVE_POINTS = 12


def reference_ceiling(train, val) -> float:
    """Precision of always answering a topic with its most frequent training reply."""
    by_topic: dict[str, Counter] = {}
    for case in train:
        if case.answerable and case.topic and case.agent_reply:
            by_topic.setdefault(case.topic, Counter())[case.agent_reply] += 1
    resolved = [c for c in val if c.answerable and c.topic and c.agent_reply]
    hits = sum(
        c.topic in by_topic and by_topic[c.topic].most_common(1)[0][0] == c.agent_reply
        for c in resolved
    )
    return hits / max(len(resolved), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="models + index (default: home)")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/cascade[_frozen].json"
    )
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="the frozen-embedding floor instead of fine-tuned stages (see cascade_frozen.py)",
    )
    args = parser.parse_args()
    args.out = args.out or RESULTS / ("cascade_frozen.json" if args.frozen else "cascade.json")

    from pipelines.cascade import load_cascade_from_dirs
    from pipelines.config import load_params
    from pipelines.data.dataset import split_cases
    from pipelines.data.synth.world import generate_world
    from pipelines.evaluate.cascade import cascade_curve, evaluate_cascade
    from pipelines.evaluate.text_metrics import rouge_l
    from pipelines.stages import answer, retrieve, tone, topic, trigger

    params = load_params(args.params)
    params.home.apply()
    work = args.work or params.home.root / "bench" / f"cascade-seed{args.seed}-days{args.days}"
    models = work / "models"
    started = time.perf_counter()
    world = generate_world(params.data.synth, seed=args.seed, days=args.days)
    cases = [case for day in world.days for case in day.cases]
    split = split_cases(cases, params.data.validation_share, params.data.split_seed)
    seconds: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        result = fn(*a, **kw)
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {seconds[name]} s", flush=True)
        return result

    if args.frozen:
        from cascade_frozen import build_frozen_cascade

        work = work.with_name(work.name + "-frozen")
        cascade, fitted = timed(
            "fit_frozen", build_frozen_cascade, params, split.train, split.val, world.docs, work
        )
    else:
        fitted = {}
        trigger_cfg = params.trigger.model_copy(update=SMALL_WORLD_TRAINING["trigger"])
        topic_cfg = params.topic.model_copy(update=SMALL_WORLD_TRAINING["topic"])
        timed(
            "train_trigger", trigger.train, trigger_cfg, split.train, split.val, models / "trigger"
        )
        timed("train_topic", topic.train, topic_cfg, split.train, split.val, models / "topic")
        timed(
            "build_index",
            retrieve.train,
            params.retrieve,
            split.train,
            split.val,
            models / "retrieve",
            docs=world.docs,
            location=str(work / "qdrant"),
            data_version=f"synth-{args.seed}-{args.days}",
        )
        timed(
            "train_answer",
            answer.train,
            params.answer,
            split.train,
            split.val,
            models / "answer",
            docs=world.docs,
        )
        timed("train_tone", tone.train, params.tone, split.train, split.val, models / "tone")
        cascade = load_cascade_from_dirs(models, qdrant_location=str(work / "qdrant"))
    report = timed(
        "evaluate_cascade",
        evaluate_cascade,
        cascade,
        split.val,
        match_threshold=params.monitor.match_threshold,
        figures=False,
    )
    macros = {t.name: t.macros for t in world.topics}
    emitted = [(s, c) for s, c in zip(report.suggestions, split.val, strict=True) if s.text]
    topic_macro = sum(
        c.answerable
        and any(
            rouge_l(s.text, m) >= params.monitor.match_threshold for m in macros.get(c.topic, ())
        )
        for s, c in emitted
    )
    metrics = report.metrics
    wanted = [c.answerable and bool(c.agent_reply) for c in split.val]
    curve_coverage, curve_precision = cascade_curve(report.suggestions, report.correct, wanted)
    picks = (
        sorted(
            {round(i * (len(curve_coverage) - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)}
        )
        if len(curve_coverage)
        else []
    )
    result = {
        "goal": {"precision_at_least": 0.9, "coverage_at_least": 0.6},
        "met": bool(
            metrics["precision"] >= 0.9
            and metrics["coverage"] >= 0.6
            and metrics["abstentions_without_reason"] == 0
        ),
        "coverage": metrics["coverage"],
        "precision": metrics["precision"],
        "abstentions_without_reason": metrics["abstentions_without_reason"],
        "abstain_reasons": report.abstain_reasons,
        "precision_coverage_curve": [
            {"coverage": float(curve_coverage[i]), "precision": float(curve_precision[i])}
            for i in picks
        ],
        "reference_ceiling": reference_ceiling(split.train, split.val),
        "mode": "frozen_baseline" if args.frozen else "fine_tuned",
        "frozen_fit_on_val": fitted,
        "training_overrides": {} if args.frozen else SMALL_WORLD_TRAINING,
        "precision_topic_macro": topic_macro / max(len(emitted), 1),
        "metrics": metrics,
        "split": {
            "train": len(split.train),
            "val": len(split.val),
            "val_share": params.data.validation_share,
            "split_seed": params.data.split_seed,
        },
        "world": {
            "seed": args.seed,
            "days": args.days,
            "cases": len(cases),
            "topics": len(world.topics),
            "docs": len(world.docs),
        },
        "thresholds": {
            name: getattr(getattr(stage, "meta", None), "threshold", None)
            for name, stage in (("trigger", cascade.trigger), ("topic", cascade.topic))
        }
        | {"answer.retrieved_match_similarity": params.answer.retrieved_match_similarity},
        "versions": cascade.versions,
        "seconds": seconds,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "met",
                    "coverage",
                    "precision",
                    "reference_ceiling",
                    "precision_topic_macro",
                    "wall_seconds",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
