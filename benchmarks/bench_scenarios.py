"""The scenario-suite curve: failure rate of the default suite as labels accumulate.

    nice -n 10 .venv/bin/python benchmarks/bench_scenarios.py [--days 1 3 6] [--jobs 2] [--seed 7]

Iteration D trains every cascade stage on days 1..D of the demo world (params.yaml + the demo
overlay `configs/demo.yaml`: 250 cases a day, the drift topic from day 5, the demo's training
sizes) with the project's own commands (`benchmarks/demo_models.py`: `casepilot data synth`,
`casepilot train <stage> --no-mlflow`), then runs the scenario suite (`scenarios/`, one sampled
message per scenario, `register.scenario_messages_per_scenario`) through the real cascade of
those folders (`casepilot scenarios run --models DIR`). Writes
`benchmarks/results/scenarios.json`, `benchmarks/results/scenarios.md` (the table) and
`benchmarks/scenarios_curve.png`. Trained folders are cached under
`$CASEPILOT_HOME/bench/service-demo-seed<S>-days<D>/` of a dedicated home
(`--home`, default `.casepilot/bench-scenarios`), so a rerun only evaluates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from demo_models import demo_models  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PNG = REPO / "benchmarks" / "scenarios_curve.png"


def demo_params(out: Path) -> Path:
    """params.yaml merged with configs/demo.yaml (without its `demo:` timeline), written to out."""
    from flows.demo.params import deep_merge

    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    overlay = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    overlay.pop("demo", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(deep_merge(base, overlay), sort_keys=False), encoding="utf-8")
    return out


def evaluate(models: Path, params_file: Path, seed: int) -> dict:
    """Run the suite on the cascade in `models` and return the report's summary."""
    from pipelines.cascade import load_cascade_from_dirs
    from pipelines.config import load_params
    from pipelines.evaluate.scenarios.runner import run_suite
    from pipelines.evaluate.scenarios.schema import load_suite

    params = load_params(params_file)
    suite = load_suite(REPO / "scenarios")
    cascade = load_cascade_from_dirs(models, qdrant_location=":memory:")
    started = time.perf_counter()
    report = run_suite(
        cascade, suite, per_scenario=params.register.scenario_messages_per_scenario, seed=seed
    )
    summary = report.summary()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


KINDS = ("must_answer", "expected_topic", "must_abstain", "must_not (any)")


def _kind_rate(row: dict, kind: str) -> float:
    """A kind's failure rate; `must_not (any)`: share of messages breaking any must_not rule."""
    if kind == "must_not (any)":
        return row["must_not_failed"] / row["messages"]
    return row["by_kind"].get(kind, {}).get("failure_rate", 0.0)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [r["days"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(days, [100 * r["failure_rate"] for r in rows], "o-", label="all scenarios")
    for kind in KINDS:
        ax.plot(days, [100 * _kind_rate(r, kind) for r in rows], ".--", label=kind)
    ax.set_xlabel("days of labels trained on (demo world, 250 cases/day; drift topic from day 5)")
    ax.set_ylabel("scenario failure rate (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(days)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("casepilot scenario suite across retrains")
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)


def table(rows: list[dict]) -> str:
    lines = [
        "| days trained | scenarios | messages | failure rate | must_answer | expected_topic "
        "| must_abstain | must_not (any) | suite seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kinds = [f"{100 * _kind_rate(r, k):.1f}%" for k in KINDS]
        lines.append(
            f"| 1–{r['days']} | {r['scenarios']} | {r['messages']} | "
            f"{100 * r['failure_rate']:.1f}% | {' | '.join(kinds)} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", type=Path, default=REPO / ".casepilot" / "bench-scenarios")
    parser.add_argument("--train-only", action="store_true", help="train the folders, no suite")
    parser.add_argument("--jobs", type=int, default=1, help="stages trained at once")
    args = parser.parse_args()
    os.environ["CASEPILOT_HOME"] = str(args.home.resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params_file = demo_params(args.home / "params-demo.yaml")
    saved = RESULTS / "scenarios.json"  # rows of earlier runs (other days) are kept
    rows = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else []
    for days in args.days:
        started = time.perf_counter()
        models = demo_models(args.seed, days, params=params_file, jobs=args.jobs)
        trained = round(time.perf_counter() - started, 1)
        print(f"days 1-{days}: models ready in {trained} s", flush=True)
        if args.train_only:
            continue
        summary = evaluate(models, params_file, args.seed)
        rows = [r for r in rows if r["days"] != days] + [
            {"days": days, "train_seconds": trained, **summary}
        ]
        rows.sort(key=lambda r: r["days"])
        print(json.dumps({k: v for k, v in summary.items() if k != "by_topic"}), flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "scenarios.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
        (RESULTS / "scenarios.md").write_text(table(rows), encoding="utf-8")
        plot(rows)


if __name__ == "__main__":
    main()
