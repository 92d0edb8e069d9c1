"""The `monitor` flow's drift step, without Prefect: the latest window judged, or why not yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitoring.monitor import MonitorReport
    from pipelines.config import Params


def judge_latest_window(params: Params) -> MonitorReport | str:
    """The latest window's MonitorReport against the accepted training data, or why it is not
    judged yet (a string: fewer than `monitor.window_cases` predictions since the last one)."""
    from monitoring.log.store import PredictionLog
    from monitoring.monitor import run_monitor, unjudged_window_problem
    from pipelines.data.intake.store import load_accepted

    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        window = log.window(limit=params.monitor.window_cases)
    finally:
        log.close()
    if waiting := unjudged_window_problem(params, window):
        return waiting
    reference = load_accepted(params)
    if not reference:
        raise ValueError(
            "no accepted training data to compare against; run intake (`casepilot data intake`)"
        )
    return run_monitor(params, reference, window)
