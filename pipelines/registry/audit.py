"""The registry's audit trail and links: MLflow runs for registry events, UI links, pages.

Every champion move (bootstrap, promotion request, promotion, rollback) is an MLflow run in the
registry experiment, so the history survives alias moves and reads like any other run in the UI;
the same links go into promotion requests and pages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines.registry.store import ensure_experiment, is_remote

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params
    from pipelines.notify.paging import PageResult


def now_iso() -> str:
    """Now in UTC as ISO 8601 to the second: the format of every casepilot time tag."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def mlflow_ui_url(params: Params) -> str:
    """The MLflow UI base: configured, the tracking server itself, or the local `mlflow-server`."""
    if params.promote.mlflow_ui_url:
        return params.promote.mlflow_ui_url.rstrip("/")
    if is_remote(params.mlflow_tracking_uri):
        return params.mlflow_tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{params.register.server_port}"


def version_url(params: Params, name: str, version: str) -> str:
    """The MLflow UI page of a model version (where a reviewer sets the approval tag)."""
    return f"{mlflow_ui_url(params)}/#/models/{name}/versions/{version}"


def run_url(params: Params, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run (an audit record)."""
    return f"{mlflow_ui_url(params)}/#/experiments/{experiment_id}/runs/{run_id}"


def jsonable(value: Any) -> Any:
    """`value` with NaN/inf as None, so evidence stays valid JSON (it holds NaN rates)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; "no value" reads right in the UI
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def log_audit_run(
    client: MlflowClient,
    params: Params,
    event: str,
    stage: str,
    tags: Mapping[str, str],
    evidence: Mapping[str, Any],
) -> tuple[str, str]:
    """Record one registry event as a finished MLflow run; return (experiment id, run id).

    Strings become tags, numbers metrics, and the whole evidence an `evidence.json` artifact.
    """
    from mlflow.entities import Metric

    experiment_id = ensure_experiment(client, params)
    run_tags = {"casepilot.event": event, "casepilot.stage": stage, **tags}
    run = client.create_run(experiment_id, run_name=f"{event}-{stage}", tags=run_tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        numbers = {
            k: float(v)
            for k, v in evidence.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in numbers.items()])
        client.log_dict(run_id, jsonable(dict(evidence)), "evidence.json")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return experiment_id, run_id


def page_event(
    params: Params,
    *,
    summary: str,
    dedup_key: str,
    link: str,
    link_text: str,
    details: Mapping[str, Any],
) -> PageResult:
    """Page on-call from the registry (`pipelines.notify.paging`; never raises: the result
    says what happened)."""
    from pipelines.notify.paging import PageEvent, page

    event = PageEvent(
        summary=summary,
        dedup_key=dedup_key[:255],
        severity="critical",
        source="casepilot-registry",
        link=link,
        link_text=link_text,
        details=jsonable(dict(details)),
    )
    return page(event, params)


def set_version_tags(
    client: MlflowClient, name: str, version: str, tags: Mapping[str, str]
) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
