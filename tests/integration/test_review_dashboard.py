"""The reviewed figures join the Evidently dashboard: a monitoring run after a reviewed day stores
the day's reviewed accuracy (with its interval) and the label-free error in its snapshot, and
every "Reviewed" panel line plots that value.

The reviewed day is the synthetic world's, labelled by an oracle from the truth
(tests/review_world.py); the snapshot is written by the `monitor` flow's own `run_monitor` into
a real Evidently workspace and read back through Evidently's data storage, as the UI reads it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from monitoring.dashboard import REVIEW_PANELS, open_workspace
from monitoring.log.store import PredictionLog
from monitoring.monitor import run_monitor
from monitoring.review.run import latest_values
from pipelines.config import params_from_mapping
from pipelines.home import Home
from tests.integration.test_dashboard import series
from tests.review_world import reviewed_day

pytestmark = pytest.mark.slow  # MiniLM embeddings for the drift report (about 20-40 s)


def test_monitoring_run_stores_the_reviewed_figures_for_every_review_panel(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = params_from_mapping(
        {"review": {"daily_size": 30, "lookback_hours": 24 * 3650}}, home=home, env={}
    )
    cases = reviewed_day(params, "2026-01-05")
    reviewed = {k: v for k, v in latest_values(params).items() if not math.isnan(v)}
    assert reviewed["reviewed_champion_suggestion_correct"] > 0  # an oracle's day is recorded
    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        window = log.window()
    finally:
        log.close()

    report = run_monitor(params, cases, window, history=[], timestamp=datetime.now(UTC))

    project = open_workspace(params).get_project(report.run.project_id)
    titles = {p.title for p in project.dashboard.model().panels}
    assert {spec.title for spec in REVIEW_PANELS} <= titles
    plotted = 0
    for spec in REVIEW_PANELS:
        for legend, metric, labels in spec.lines:
            values = series(params, project.id, metric, labels)
            expected = reviewed.get(labels["column"])
            if expected is None:  # e.g. calibrated error: needs an earlier reviewed day
                assert values == [], (spec.title, legend)
                continue
            assert values == pytest.approx([expected]), (spec.title, legend)
            plotted += 1
    assert plotted >= 8  # champion/challenger correctness with interval, accuracies, raw errors
    assert report.drift.tracked["reviewed_champion_suggestion_correct_low"] == pytest.approx(
        reviewed["reviewed_champion_suggestion_correct_low"]
    )
