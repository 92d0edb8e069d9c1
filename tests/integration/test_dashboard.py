"""Evidently workspace: monitoring runs become snapshots, the dashboard plots every metric."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.dashboard import (
    ALL_PANELS,
    PANELS,
    ensure_project,
    open_workspace,
    write_monitoring_run,
)
from monitoring.drift import compute_drift, drift_frame_from_cases, drift_frame_from_window
from monitoring.monitor import history_path, load_history, run_monitor
from monitoring.online import online_metrics
from pipelines.config import Params, SynthConfig
from pipelines.data.synth import generate_world
from pipelines.home import Home
from tests.unit.test_online import CASES, T0, write_log


@pytest.fixture
def params(home: Home) -> Params:
    return Params(home=home)


@pytest.fixture(scope="module")
def reference_cases() -> list:
    world = generate_world(SynthConfig(cases_per_day=40), seed=3, days=2)
    return [case for batch in world.days for case in batch.cases]


def series(params: Params, project_id, metric: str, labels: dict[str, str]) -> list[float]:
    """The values the Evidently UI would plot for one panel line (its own data storage)."""
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    storage = InMemoryDataStorage(str(params.home.evidently))
    flt = SeriesFilter(
        tags=[], metadata={}, metric=f"evidently:metric_v2:{metric}", metric_labels=labels
    )
    response = asyncio.run(storage.get_data_series(project_id, [flt], None, None))
    return [v for s in response.series for v in s.values]


@pytest.mark.slow
def test_three_runs_three_snapshots_and_every_panel(
    params: Params, tmp_path: Path, reference_cases: list
) -> None:
    log = write_log(f"sqlite:///{tmp_path / 'p.db'}")
    window = log.window()
    log.close()
    online = online_metrics(window, params.monitor.match_threshold)
    drift = compute_drift(
        drift_frame_from_cases(reference_cases),
        drift_frame_from_window(window),
        params.monitor,
        tracked=online.as_values(),
    )
    runs = [
        write_monitoring_run(
            params, drift, online, datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=h)
        )
        for h in range(3)
    ]
    workspace = open_workspace(params)
    projects = workspace.search_project(params.monitor.evidently_project)
    assert len(projects) == 1  # created once
    project = projects[0]
    assert sorted(str(i) for i in workspace.list_runs(project.id)) == sorted(r.run_id for r in runs)
    assert runs[0].snapshot_url == (
        f"http://127.0.0.1:8000/projects/{project.id}/reports/{runs[0].run_id}"
    )
    dashboard = project.dashboard.model()
    assert {p.title for p in dashboard.panels} == {spec.title for spec in ALL_PANELS}
    assert {t.title for t in dashboard.tabs} == {"Drift", "Online", "Reviewed"}
    in_tabs = [panel_id for tab in dashboard.tabs for panel_id in tab.panels]
    assert sorted(in_tabs) == sorted(p.id for p in dashboard.panels)  # each panel once
    ensure_project(params)  # idempotent: no duplicate panels
    assert len(open_workspace(params).get_project(project.id).dashboard.model().panels) == len(
        ALL_PANELS
    )
    # every line of every operational panel has one point per run (the reviewed ones wait for
    # a reviewed day: tests/integration/test_review_dashboard.py)
    for spec in PANELS:
        for _legend, metric, labels in spec.lines:
            values = series(params, project.id, metric, labels)
            assert len(values) == 3, (spec.title, labels)
    assert series(params, project.id, "MeanValue", {"column": "coverage"}) == pytest.approx(
        [0.5] * 3
    )
    assert series(params, project.id, "DriftedColumnsCount", {"value_type": "share"}) == (
        pytest.approx([drift.drifted_share] * 3)
    )


@pytest.mark.slow
def test_run_monitor_keeps_history_and_links_evidence(
    params: Params, tmp_path: Path, reference_cases: list
) -> None:
    log = write_log(f"sqlite:///{tmp_path / 'p.db'}")
    window = log.window()
    log.close()
    first = run_monitor(params, reference_cases, window, timestamp=T0)
    second = run_monitor(params, reference_cases, window, timestamp=T0 + timedelta(hours=1))
    assert len(second.breaches) == 2 and load_history(params) == list(second.breaches)
    entries = json.loads(history_path(params).read_text())
    assert [e["run_id"] for e in entries] == [first.run.run_id, second.run.run_id]
    assert second.evidence_url.startswith("http://127.0.0.1:8000/projects/")
    assert second.online.requests == len(CASES)
    assert second.alert.considered == 2
    # a history passed in decides the page and is not persisted
    forced = run_monitor(params, reference_cases, window, history=[True, True], timestamp=T0)
    assert forced.alert.page == forced.drift.breach
    assert len(load_history(params)) == 2
