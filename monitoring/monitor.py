"""One monitoring window end to end: drift + online metrics → snapshot → N-of-M page decision.

`run_monitor` is what the Prefect `monitor` flow calls. The breach history (one flag per window,
oldest first) is passed in, or kept in `CASEPILOT_HOME/logs/<monitor.history_file>`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from monitoring.dashboard import MonitoringRun, tracked_values, write_monitoring_run
from monitoring.drift import (
    DriftResult,
    compute_drift,
    drift_frame_from_cases,
    drift_frame_from_window,
)
from monitoring.notify.rules import AlertDecision, breach_n_of_m
from monitoring.online import OnlineMetrics, online_metrics
from pipelines.config import Params
from pipelines.data.contract import LabeledCase

if TYPE_CHECKING:
    import pandas as pd

HISTORY_KEEP = 100  # windows kept in the history file


@dataclass(frozen=True)
class MonitorReport:
    """A window's drift, online metrics, the page decision, and the link to the evidence."""

    drift: DriftResult
    online: OnlineMetrics
    alert: AlertDecision
    run: MonitoringRun
    breaches: tuple[bool, ...]  # the history including this window, oldest first

    @property
    def page(self) -> bool:
        return self.alert.page

    @property
    def evidence_url(self) -> str:
        return self.run.snapshot_url

    @property
    def summary(self) -> str:
        """One paragraph for a page: the decision and the drifted signals."""
        reasons = "; ".join(self.drift.reasons) or "no drift"
        return f"{self.alert.reason}. Latest window: {reasons}. Evidence: {self.evidence_url}"


def history_path(params: Params) -> Path:
    return params.home.logs / params.monitor.history_file


def load_history(params: Params) -> list[bool]:
    """Breach flags of earlier windows, oldest first (empty when none were recorded)."""
    path = history_path(params)
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); delete it to start the breach history afresh"
        ) from err
    return [bool(entry["breach"]) for entry in entries]


def _append_history(
    params: Params, breach: bool, when: datetime, run_id: str, window_end: datetime | None
) -> None:
    path = history_path(params)
    entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    end = window_end.isoformat() if window_end is not None else None
    entries.append({"at": when.isoformat(), "breach": breach, "run_id": run_id, "window_end": end})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries[-HISTORY_KEEP:], indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a killed run never leaves half a file


def last_window_end(params: Params) -> datetime | None:
    """When the newest prediction of the last judged window was made (None: none judged)."""
    path = history_path(params)
    if not path.exists():
        return None
    entries = json.loads(path.read_text(encoding="utf-8"))
    ends = [e["window_end"] for e in entries if e.get("window_end")]
    return datetime.fromisoformat(ends[-1]) if ends else None


def unjudged_window_problem(params: Params, window: pd.DataFrame) -> str | None:
    """Why `window` (the latest `monitor.window_cases` predictions) is not judged yet, or None.

    A window is judged once: when it holds `monitor.window_cases` predictions made after the
    last judged window. A run with less new traffic (a quiet night, a run during a burst) waits
    for more instead of judging the same cases twice — which would also count one drifted
    window twice toward the N-of-M page rule.
    """
    size = params.monitor.window_cases
    if len(window) < size:
        return f"{len(window)} predictions logged, a window needs monitor.window_cases={size}"
    last_end = last_window_end(params)
    if last_end is not None:
        fresh = int((window["created_at"] > last_end).sum())
        if fresh < size:
            return (
                f"{fresh} new predictions since the last judged window (ending {last_end:%H:%M:%S}"
                f" UTC); a window needs monitor.window_cases={size}"
            )
    return None


def reference_sample(cases: Sequence[LabeledCase], size: int, seed: int = 0) -> list[LabeledCase]:
    """A stable random sample of at most `size` reference cases (keeps reports small)."""
    cases = list(cases)
    if len(cases) <= size:
        return cases
    return random.Random(seed).sample(cases, size)


def run_monitor(
    params: Params,
    reference_cases: Sequence[LabeledCase],
    window: pd.DataFrame,
    history: Sequence[bool] | None = None,
    *,
    timestamp: datetime | None = None,
) -> MonitorReport:
    """Monitor one prediction-log window against the training data; decide whether to page.

    `history` is the breach flags of earlier windows, oldest first; None reads (and then
    updates) the history file under `params.home.logs`. A given history is not persisted.
    """
    cfg = params.monitor
    if window.empty:
        raise ValueError("the monitoring window has no predictions; wait for traffic or widen it")
    when = timestamp or datetime.now(UTC)
    online = online_metrics(window, cfg.match_threshold)
    reference = drift_frame_from_cases(reference_sample(reference_cases, cfg.max_reference_cases))
    drift = compute_drift(
        reference,
        drift_frame_from_window(window),
        cfg,
        embedder_name=params.data.validation.embedder,
        tracked=tracked_values(params, online),
        timestamp=when,
        tags=["monitor"],
    )
    run = write_monitoring_run(params, drift, online, when)
    persist = history is None
    earlier = load_history(params) if persist else list(history)
    breaches = (*earlier, drift.breach)
    alert = breach_n_of_m(breaches, cfg.breach_n, cfg.breach_m)
    if persist:
        end = window["created_at"].max().to_pydatetime() if "created_at" in window else None
        _append_history(params, drift.breach, when, run.run_id, end)
    return MonitorReport(drift=drift, online=online, alert=alert, run=run, breaches=breaches)
