"""The Evidently workspace of the monitors: one project, its dashboard, one snapshot per window.

The workspace lives in `CASEPILOT_HOME/evidently` (`evidently ui --workspace` serves it). Each
monitoring run adds one snapshot holding the drift report and the online metrics (as `MeanValue`
metrics, see `monitoring.drift.compute_drift(tracked=...)`), so every panel is a metric over time.
The "Reviewed" tab plots the latest reviewed day of the review queue (`tracked_values`: the
online metrics plus `monitoring.review.run.latest_values`): reviewed correctness with its 95%
interval next to the match rate, and the label-free estimates' error against it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitoring.online import OnlineMetrics
from pipelines.config import Params
from pipelines.data.contract import STAGES

if TYPE_CHECKING:
    from monitoring.drift import DriftResult

log = logging.getLogger(__name__)

DRIFT_TAB = "Drift"
ONLINE_TAB = "Online"
REVIEW_TAB = "Reviewed"
# The calibrated stages whose accuracy `monitoring.online.estimated_accuracy` estimates label-free
ESTIMATED_STAGES = ("trigger", "topic")


@dataclass(frozen=True)
class PanelSpec:
    """One dashboard panel: title, tab, and the (legend, metric, labels) lines it plots."""

    title: str
    tab: str
    lines: tuple[tuple[str, str, dict[str, str]], ...]
    description: str = ""


def _mean(legend: str, column: str) -> tuple[str, str, dict[str, str]]:
    return (legend, "MeanValue", {"column": column})


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec(
        "Share of drifted signals",
        DRIFT_TAB,
        (("drifted share", "DriftedColumnsCount", {"value_type": "share"}),),
        "text descriptors, topic mix, trigger rate and confidences",
    ),
    PanelSpec(
        "Embedding drift (ROC AUC)",
        DRIFT_TAB,
        (_mean("message embeddings", "embedding_drift_auc"),),
        "above monitor.embedding_drift_threshold means drift",
    ),
    PanelSpec(
        "Match rate: champion vs shadow",
        ONLINE_TAB,
        (
            _mean("champion (all cases)", "match_rate"),
            _mean("champion (shadow cases)", "champion_match_rate_paired"),
            _mean("shadow", "shadow_match_rate"),
        ),
        "suggestion vs the reply the agent sent",
    ),
    PanelSpec(
        "Acceptance and coverage",
        ONLINE_TAB,
        (_mean("acceptance", "acceptance"), _mean("coverage", "coverage")),
    ),
    PanelSpec(
        "Abstain rate per stage",
        ONLINE_TAB,
        tuple(_mean(stage, f"abstain_{stage}") for stage in STAGES),
    ),
    PanelSpec(
        "Estimated accuracy (average confidence)",
        ONLINE_TAB,
        tuple(_mean(stage, f"est_acc_{stage}") for stage in ESTIMATED_STAGES),
        "label-free: mean calibrated probability of the predicted class",
    ),
)


# Reviewed figures (Label Studio review queue): points appear once a day has been reviewed.
REVIEW_PANELS: tuple[PanelSpec, ...] = (
    PanelSpec(
        "Reviewed suggestion correctness (95% interval)",
        REVIEW_TAB,
        (
            _mean("champion", "reviewed_champion_suggestion_correct"),
            _mean("champion low", "reviewed_champion_suggestion_correct_low"),
            _mean("champion high", "reviewed_champion_suggestion_correct_high"),
            _mean("challenger", "reviewed_challenger_suggestion_correct"),
        ),
        "share of suggestions reviewers rated correct or usable; compare the match rate",
    ),
    PanelSpec(
        "Reviewed trigger and topic accuracy (champion)",
        REVIEW_TAB,
        (
            _mean("trigger", "reviewed_champion_trigger_accuracy"),
            _mean("topic", "reviewed_champion_topic_accuracy"),
        ),
        "design-based estimates from the day's stratified review sample",
    ),
    PanelSpec(
        "Label-free estimate error vs reviewed",
        REVIEW_TAB,
        tuple(
            _mean(f"{kind} {stage}", f"{prefix}_error_{stage}")
            for kind, prefix in (("raw", "label_free"), ("calibrated", "calibrated"))
            for stage in ESTIMATED_STAGES
        ),
        "average-confidence estimate minus reviewed accuracy (0 = honest)",
    ),
)
ALL_PANELS = (*PANELS, *REVIEW_PANELS)


def tracked_values(params: Params, online: OnlineMetrics) -> dict[str, float]:
    """What a monitoring snapshot stores besides drift: the window's online metrics and the
    latest reviewed day's figures (empty until the review queue has labels)."""
    from monitoring.review.run import latest_values

    return {**online.as_values(), **latest_values(params)}


def open_workspace(params: Params) -> Any:
    """The local Evidently workspace under `params.home.evidently` (created if needed)."""
    from evidently.ui.workspace import Workspace

    params.home.evidently.mkdir(parents=True, exist_ok=True)
    return Workspace.create(str(params.home.evidently))


def ensure_project(params: Params, workspace: Any | None = None) -> Any:
    """The monitors' project (`monitor.evidently_project`) with its dashboard; idempotent."""
    from evidently.sdk.models import DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    workspace = workspace or open_workspace(params)
    name = params.monitor.evidently_project
    found = workspace.search_project(name)
    project = found[0] if found else workspace.create_project(name, "casepilot monitors")
    # The dashboard model is edited and saved whole: `ProjectDashboard.add_panel` in 0.7.23 lists
    # a panel twice in a tab that already exists.
    dashboard = project.dashboard.model()
    existing = {panel.title for panel in dashboard.panels}
    added = False
    for spec in ALL_PANELS:
        if spec.title in existing:
            continue
        values = [
            PanelMetric(legend=legend, metric=metric, metric_labels=labels)
            for legend, metric, labels in spec.lines
        ]
        panel = line_plot_panel(spec.title, values, description=spec.description, size="half")
        tab = next((t for t in dashboard.tabs if t.title == spec.tab), None)
        if tab is None:
            tab = DashboardTabModel(title=spec.tab, panels=[])
            dashboard.tabs.append(tab)
        dashboard.panels.append(panel)
        tab.panels.append(panel.id)
        added = True
    if added:
        workspace.save_dashboard(project.id, dashboard)
    return project


def project_url(ui_port: int, project_id: Any) -> str:
    """The Evidently UI page of the project (`evidently ui` on 127.0.0.1:`monitor.ui_port`)."""
    return f"http://127.0.0.1:{ui_port}/projects/{project_id}"


def snapshot_url(ui_port: int, project_id: Any, snapshot_id: Any) -> str:
    """The Evidently UI page of one snapshot (the evidence behind a page)."""
    return f"{project_url(ui_port, project_id)}/reports/{snapshot_id}"


@dataclass(frozen=True)
class MonitoringRun:
    """Where a monitoring run was stored, and its links."""

    run_id: str
    project_id: str
    project_url: str
    snapshot_url: str


def write_monitoring_run(
    params: Params,
    drift_result: DriftResult,
    online_metrics: OnlineMetrics,
    timestamp: datetime | None = None,
) -> MonitoringRun:
    """Store the window's snapshot (stamped `timestamp`) in the project; returns its ids and links.

    The online metrics are plotted from the snapshot, so `drift_result` must have been computed
    with `tracked=online_metrics.as_values()`; values it lacks are logged and left out.
    """
    from evidently.core.report import Snapshot

    missing = [
        k
        for k, v in online_metrics.as_values().items()
        if v == v and k not in drift_result.tracked  # v == v: not NaN
    ]
    if missing:
        log.warning(
            "online metrics %s are not in the drift snapshot: pass "
            "tracked=online_metrics.as_values() to compute_drift to plot them",
            ", ".join(missing),
        )
    workspace = open_workspace(params)
    project = ensure_project(params, workspace)
    model = drift_result.snapshot.to_snapshot_model()
    if timestamp is not None:
        model.timestamp = timestamp
    model.metadata = {
        **model.metadata,
        "breach": str(drift_result.breach),
        "drifted": ", ".join(drift_result.drifted) or "none",
        "requests": str(online_metrics.requests),
    }
    ref = workspace.add_run(project.id, Snapshot.load_model(model))
    return MonitoringRun(
        run_id=str(ref.id),
        project_id=str(project.id),
        project_url=project_url(params.monitor.ui_port, project.id),
        snapshot_url=snapshot_url(params.monitor.ui_port, project.id, ref.id),
    )
