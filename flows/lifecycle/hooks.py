"""What the lifecycle flows tell the outside world: failure alerts and the drift-breach event.

`report_failure` is every flow's `on_failure`/`on_crashed` hook: an alert in the alert channel
(pipelines/notify/alerts.py) and a page (pipelines/notify/paging.py, deduplicated per flow). The
drift event is what the `retrain-on-drift` automation (flows/lifecycle/deploy.py) listens for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.config import ConfigError, Params, load_params
from pipelines.notify.alerts import Alert, send_alert
from pipelines.notify.paging import PageEvent, page
from pipelines.quiet import configure_output

if TYPE_CHECKING:
    from monitoring.monitor import MonitorReport

log = logging.getLogger("casepilot.flows")
DRIFT_EVENT = "casepilot.drift.breach"


def monitor_resource_id(params: Params) -> str:
    """The Prefect resource a monitor's events are about: one per Evidently project."""
    return f"casepilot.monitor.{params.monitor.evidently_project}"


def load_flow_params(params_file: str) -> Params:
    """Load params for a flow run and put every framework's state under CASEPILOT_HOME."""
    params = load_params(params_file)
    params.home.apply()
    configure_output()  # quiet unless CASEPILOT_VERBOSE (pipelines/quiet.py)
    return params


def _params_of_run(flow_run: Any) -> Params:
    """The run's params, or the defaults when its params file is what failed to load."""
    try:
        return load_params((flow_run.parameters or {}).get("params_file", "params.yaml"))
    except ConfigError:
        return Params()


def _run_url(flow_run: Any) -> str | None:
    from prefect.utilities.urls import url_for

    try:
        return url_for(flow_run)
    except Exception:  # noqa: BLE001 - no UI URL configured (ephemeral API): no link, still alert
        return None


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook: alert and page that `flow` ended Failed or Crashed, with the run's link."""
    params = _params_of_run(flow_run)
    summary = f"Prefect flow '{flow.name}' run '{flow_run.name}' ended {state.name}: " + (
        state.message or "no message"
    )
    link = _run_url(flow_run)
    details = {"flow": flow.name, "flow_run_id": str(flow_run.id), "state": state.name}
    send_alert(
        Alert(
            kind="flow_failed",
            summary=summary[:500],
            severity="critical",
            source="prefect",
            details=details | {"url": link},
        ),
        params,
    )
    outcome = page(
        PageEvent(
            summary=summary[:1000],
            dedup_key=f"casepilot-flow-failed-{flow.name}",
            severity="error",
            source="prefect",
            link=link,
            link_text="flow run",
            details=details,
        ),
        params,
    )
    log.warning("flow %s %s; page %s (%s)", flow.name, state.name, outcome.status, outcome.reason)


# Options of every lifecycle flow: a failed or crashed run is alerted and paged; its outcome is
# persisted (JSON, in the home's Prefect result storage, `PREFECT_HOME/storage`, or the storage
# block `PREFECT_DEFAULT_RESULT_STORAGE_BLOCK` names on a scale-out setup), so it can be read
# from the API later — and so a run whose final state the server hands back without data (a
# set-state retried under load is rejected as a duplicate) still returns its outcome instead of
# raising MissingResult. Tasks keep their results in memory (`TASK_OPTIONS`).
FLOW_OPTIONS: dict[str, Any] = {
    "on_failure": [report_failure],
    "on_crashed": [report_failure],
    "persist_result": True,
    "result_serializer": "json",
}
TASK_OPTIONS: dict[str, Any] = {"persist_result": False}


def emit_drift_breach(params: Params, report: MonitorReport) -> str | None:
    """Emit the drift-breach event (the automation's trigger); returns the event id, if sent."""
    from prefect.events import emit_event

    project = params.monitor.evidently_project
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": monitor_resource_id(params),
            "prefect.resource.name": f"casepilot monitor {project}",
        },
        payload={
            "evidence_url": report.evidence_url,
            "reasons": list(report.drift.reasons),
            "drifted_share": report.drift.drifted_share,
            "page": report.page,
            "alert_reason": report.alert.reason,
            "monitoring_run_id": report.run.run_id,
        },
    )
    return str(event.id) if event is not None else None


def page_drift(params: Params, report: MonitorReport) -> str:
    """Page on-call about drift (N of M windows breached); returns the page status."""
    outcome = page(
        PageEvent(
            summary=report.summary,
            dedup_key=f"casepilot-drift-{params.monitor.evidently_project}",
            severity="error",
            source="monitor",
            link=report.evidence_url,
            link_text="Evidently snapshot",
            details={"breaches": list(report.breaches), "reasons": list(report.drift.reasons)},
        ),
        params,
    )
    return outcome.status
