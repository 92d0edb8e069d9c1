"""Latencies of the deployed lifecycle, measured on one `casepilot demo` run (demo world, 2 cores).

The demo drives the platform `casepilot up` starts (deployments, schedules, the drift automation)
and records when each step ended and which flow run did it; this script runs it once and derives:

- data cut-off → challenger registered: labeled batches landed → the retrain run that registered
  them finished (first training: scheduled retrain; after drift: the automation's retrain, from
  the last drifted day's labels);
- drift onset → page → retrain started: the first drifted message sent → the page received by
  on-call's webhook → the drift automation's retrain run started;
- approval → champion serving: the reviewer's approval → the promote run moved `champion` → the
  service answered from the new champion, with the requests that failed during the switch.

    .venv/bin/python benchmarks/bench_lifecycle.py [--overlay FILE] [--out results/lifecycle.json]
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

HERE = Path(__file__).resolve().parent


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds(), 1)


def figures(summary: Any) -> dict[str, Any]:
    """The lifecycle latencies from a finished demo summary (None where a step did not run)."""
    from flows.demo_flow import FIRST_TRAINING

    def step(name: str) -> Any:
        return summary.find(name)

    def first(prefix: str) -> Any:
        return next((s for s in summary.steps if s.name.startswith(prefix)), None)

    landed, trained = first("labeled data of day"), step(FIRST_TRAINING)
    drift_days = [s for s in summary.steps if s.name.endswith("(after drift)")]
    page, retrain = step("page"), step("automated retraining (drift automation)")
    approvals = [s for s in summary.steps if s.name == "approval (automated demo reviewer)"]
    promoted, reload = step("promotion"), step("service reload")
    out: dict[str, Any] = {
        "first data cut-off → challengers registered (s)": _seconds(
            trained and trained.ended_at, landed and landed.ended_at
        ),
    }
    if drift_days and retrain and retrain.status == "done":
        onset = drift_days[0].data["traffic"].since
        received = (
            datetime.fromisoformat(page.data["pages"][0]["received_at"]) if page.data else None
        )
        run = retrain.data["run"]
        out["drift data cut-off → challengers registered (s)"] = _seconds(
            run.ended, drift_days[-1].ended_at
        )
        out["drift onset → page (s)"] = _seconds(received, onset)
        out["page → retrain started (s)"] = _seconds(run.started, received)
    if approvals and promoted and reload and reload.status == "done":
        out["approval → champion moved (s)"] = _seconds(promoted.ended_at, approvals[-1].ended_at)
        out["approval → champion serving (s)"] = _seconds(reload.ended_at, approvals[-1].ended_at)
        out["failed requests during the switch"] = reload.data["failed"]
    out["demo wall time (s)"] = round(summary.seconds, 1)
    out["steps"] = [[s.name, s.status, s.by, round(s.seconds, 1)] for s in summary.steps]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lifecycle.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from flows.demo import run_demo
    from flows.demo_params import DEMO_OVERLAY

    console = Console(width=160)
    summary = run_demo(Path("params.yaml"), console, overlays=(DEMO_OVERLAY, *args.overlay))
    result = figures(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    for key, value in result.items():
        if key != "steps":
            console.print(f"{key}: {value}")


if __name__ == "__main__":
    main()
