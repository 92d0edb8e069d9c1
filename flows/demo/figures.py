"""The deployed lifecycle's latencies, derived from one demo run's summary (DemoSummary).

`casepilot demo` writes them to `$CASEPILOT_HOME/logs/demo-figures.json` at the end of every run
(benchmarks/bench_lifecycle.py reads that file, or runs the demo itself):

- data cut-off → challenger registered: labeled batches landed → the retrain run that registered
  them finished (first training: scheduled retrain; after drift: the automation's retrain, from
  the last drifted day's labels);
- drift onset → page → retrain started: the first drifted message sent → the page received by
  on-call's webhook → the drift automation's retrain run started;
- approval → champion serving: the reviewer's approval → the promote run moved `champion` → the
  service answered from the new champion, with the requests that failed during the switch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds(), 1)


def figures(summary: Any) -> dict[str, Any]:
    """The lifecycle latencies from a finished demo summary (None where a step did not run)."""
    from flows.demo.flow import FIRST_TRAINING

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
