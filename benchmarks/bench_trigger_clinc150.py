"""Benchmark: the trigger stage on CLINC150, trained by `casepilot train trigger`, vs a floor.

Labels: answerable = the `banking` and `credit_cards` domains; not answerable = every other
domain, `small_talk`, `meta` and `oos` (`pipelines.data.importers.intents.import_clinc150`).
Split: train on `train` + `oos_train` (10% of it, seed 14, stratified via `split_cases`, is the
stage's validation for early stopping, temperature and threshold); test on `val` + `oos_val`.
The frozen baseline (LR on frozen MiniLM embeddings) sees the same cases, same run.

Run: .venv/bin/python benchmarks/bench_trigger_clinc150.py [--epochs 3 --lr 5e-5]
Goal (issue 4): AUROC >= 0.998 and, at the threshold keeping 95% of answerable messages,
<= 1% of not-answerable ones let through.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from classifier_bench import (
    SHARED_DATA,
    bench_env,
    cached_baseline,
    casepilot,
    cli_run,
    frozen_baseline,
    machine,
    save_result,
    write_params,
)

from pipelines.data.contract import write_jsonl
from pipelines.data.dataset import split_cases
from pipelines.data.importers.intents import CLINC_EVAL, CLINC_TRAIN, import_clinc150
from pipelines.evaluate.evaluation import classification_metrics
from pipelines.home import Home

VAL_SHARE, VAL_SEED = 0.10, 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="default: CASEPILOT_HOME/bench")
    parser.add_argument("--baseline-only", action="store_true", help="compute the floor, stop")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse a model trained by an earlier invocation in --work (its recorded times)",
    )
    args = parser.parse_args()
    root = SHARED_DATA / "clinc150"
    if not (root / "train_val.json").is_file():
        raise SystemExit(f"{root}/train_val.json not found: this benchmark needs ../shared/data")
    home = Home.from_env()
    work = args.work or home.root / "bench" / "trigger_clinc150"
    train_cases = import_clinc150(root, CLINC_TRAIN)
    test_cases = import_clinc150(root, CLINC_EVAL)
    fit, val = split_cases(train_cases, VAL_SHARE, VAL_SEED)
    for name, part in (("fit", fit), ("val", val), ("test", test_cases)):
        write_jsonl(part, work / f"{name}.jsonl")
    overrides = {
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "early_stopping_patience": args.patience,
        "metric_for_best_model": "loss",
    }
    params = write_params(work / "params.yaml", "trigger", overrides)
    baseline = cached_baseline(
        work / "frozen_baseline.json",
        lambda: frozen_baseline(
            ([c.message for c in fit], [c.answerable for c in fit]),
            ([c.message for c in val], [c.answerable for c in val]),
            [c.message for c in test_cases],
        ),
    )
    if args.baseline_only:
        return
    env = bench_env(home.root)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = machine()["load_average_1_5_15"]

    train_run = cli_run(
        work,
        "train_run",
        lambda: casepilot(
            "train",
            "trigger",
            "--cases",
            str(work / "fit.jsonl"),
            "--val",
            str(work / "val.jsonl"),
            "--out",
            str(work / "model"),
            "--params",
            str(params),
            env=env,
        ),
        args.reuse,
    )
    metrics_file = work / "test_metrics.json"
    eval_run = cli_run(
        work,
        "evaluate_run",
        lambda: casepilot(
            "evaluate",
            "trigger",
            "--model",
            str(work / "model"),
            "--cases",
            str(work / "test.jsonl"),
            "--params",
            str(params),
            "--json-out",
            str(metrics_file),
            env=env,
        ),
        args.reuse,
    )
    stage = json.loads(metrics_file.read_text())
    stage_meta = json.loads((work / "model" / "stage.json").read_text())

    truth = np.array([int(c.answerable) for c in test_cases])
    positive = baseline["classes"].index(True)
    probs = np.stack([1 - baseline["probs"][:, positive], baseline["probs"][:, positive]], axis=1)
    floor = classification_metrics(truth, probs, positive_index=1)

    def summary(m: dict) -> dict:
        return {
            "auroc": m["auroc"],
            "fpr_at_95_recall": m["fpr_at_95_recall"],
            "accuracy": m["accuracy"],
            "precision": m["precision"],
            "recall": m["recall"],
            "f1": m["f1"],
            "ece": m["ece"],
        }

    result = {
        "benchmark": "trigger_clinc150",
        "started_at": started_at,
        "data": "../shared/data/clinc150/train_val.json; answerable = banking + credit_cards",
        "split": {
            "train": list(CLINC_TRAIN),
            "test": list(CLINC_EVAL),
            "val_share_of_train": VAL_SHARE,
            "val_seed": VAL_SEED,
            "method": "pipelines.data.dataset.split_cases (hash of case id, stratified)",
            "n_fit": len(fit),
            "n_val": len(val),
            "n_test": len(test_cases),
            "test_answerable": int(truth.sum()),
        },
        "config": overrides | {"seed": stage_meta["config"]["seed"], "base_model": "minilm"},
        "stage": summary(stage)
        | {
            "threshold": stage["threshold"],
            "coverage_at_threshold": stage["coverage"],
            "precision_at_threshold": stage["selective_precision"],
            "temperature": stage_meta["temperature"],
            "val_ece_uncalibrated": stage_meta["metrics"]["val_ece_uncalibrated"],
            "val_ece_calibrated": stage_meta["metrics"]["val_ece"],
            "train_steps": stage_meta["metrics"]["train_steps"],
        },
        "frozen_baseline": summary(floor)
        | {
            "model": "LogisticRegression on frozen all-MiniLM-L6-v2 embeddings",
            "C": baseline["C"],
            "seconds": round(baseline["seconds"], 1),
        },
        "wall_seconds": {
            "train_cli": train_run["wall_seconds"],
            "evaluate_cli": eval_run["wall_seconds"],
        },
        "cpu_seconds": {
            "train_cli": train_run["cpu_seconds"],
            "evaluate_cli": eval_run["cpu_seconds"],
            "train_minutes_on_2_dedicated_cores_est": round(train_run["cpu_seconds"] / 120, 1),
        },
        "goal": {
            "auroc_min": 0.998,
            "fpr_at_95_recall_max": 0.01,
            "met": stage["auroc"] >= 0.998 and stage["fpr_at_95_recall"] <= 0.01,
        },
        "machine": machine()
        | {
            "load_average_before": load_before,
            "note": "2 cores shared with other jobs; wall times inflated",
        },
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = save_result("trigger_clinc150", result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("stage", "frozen_baseline", "wall_seconds", "cpu_seconds", "goal")
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
