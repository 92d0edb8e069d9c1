"""Deployments, schedules and the drift automation on a Prefect server, from `params.yaml`.

- `ensure_work_pool`: the process work pool (`schedule.work_pool`) — flow runs are local
  processes started by a `prefect worker`, no Docker.
- `register_deployments`: `retrain` (cron `schedule.retrain_cron`), `monitor` (cron
  `schedule.monitor_cron`) — each replaced by an interval when `schedule.<flow>_interval_seconds`
  is set —, `review` / `review-collect` (crons `schedule.review_cron` /
  `schedule.review_collect_cron`, same interval overrides: flows/lifecycle/review.py),
  `promote` (every `schedule.promote_poll_seconds`) and `rollback` (on demand), in
  `schedule.timezone`,
  with the code taken from this checkout (a `set_working_directory` pull step, no remote code
  store) and every flow run's state under the same CASEPILOT_HOME.
- the automation `casepilot-retrain-on-drift`: a `casepilot.drift.breach` event from this
  project's monitor runs the `retrain` deployment.

All are idempotent: registering again updates what is there. `casepilot up` calls them after
starting the server; `casepilot schedule` runs them against `schedule.prefect_api_url`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.lifecycle.hooks import DRIFT_EVENT, monitor_resource_id

if TYPE_CHECKING:
    from pipelines.config import Params

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "casepilot"  # every flow's deployment has this name: `retrain/casepilot`, …
AUTOMATION = "casepilot-retrain-on-drift"
FLOWS = ("retrain", "monitor", "promote", "rollback", "review", "review-collect")
# flow name -> its entrypoint in this checkout (the rest live in flows/lifecycle/loop.py)
ENTRYPOINTS = {
    "review": "flows/lifecycle/review.py:review",
    "review-collect": "flows/lifecycle/review.py:review_collect",
}
# An interval schedule's first run: this long after registration, past one loop of the server's
# scheduler (`casepilot up` runs it every 10 s), so the first slot is never already in the past.
INTERVAL_FIRST_RUN_S = 30
# Periodic checks: one at a time, and a run that comes due while the last one still runs is
# cancelled rather than queued, so a busy box never works off a backlog of stale polls at once.
POLLS = ("promote", "monitor", "review", "review-collect")


@contextlib.contextmanager
def prefect_api(params: Params) -> Iterator[str]:
    """Point the Prefect client at `schedule.prefect_api_url`, else `PREFECT_API_URL`.

    The environment is read now, not at Prefect's import: `casepilot up` sets it late.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = (
        params.schedule.prefect_api_url
        or os.environ.get("PREFECT_API_URL")
        or PREFECT_API_URL.value()
    )
    if not url:
        raise RuntimeError(
            "no Prefect server to register with: set schedule.prefect_api_url in params.yaml "
            "(or CASEPILOT_PREFECT_API_URL), or start one with `casepilot up`"
        )
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


def ensure_work_pool(params: Params) -> str:
    """Create the process work pool `schedule.work_pool` unless it exists; returns its name."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    name = params.schedule.work_pool
    with prefect_api(params), get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="casepilot: lifecycle flows as local processes",
                )
            )
            return name
    if pool.type != "process":
        raise RuntimeError(
            f"work pool {name!r} exists with type {pool.type!r}, not 'process'; set "
            "schedule.work_pool to another name or delete that pool"
        )
    return name


def flow_schedule(params: Params, flow_name: str) -> Any:
    """The Prefect schedule of one lifecycle flow, or None for an on-demand flow.

    `retrain`, `monitor`, `review` and `review-collect` run on their crons unless
    `schedule.<flow>_interval_seconds` is set
    (an interval then replaces the cron, e.g. to compress time in the demo); `promote` polls
    every `schedule.promote_poll_seconds`; `rollback` runs on demand (and from `monitor`).
    """
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    cfg = params.schedule
    interval = {
        "retrain": cfg.retrain_interval_seconds,
        "monitor": cfg.monitor_interval_seconds,
        "promote": cfg.promote_poll_seconds,
        "review": cfg.review_interval_seconds,
        "review-collect": cfg.review_collect_interval_seconds,
    }.get(flow_name)
    if interval is not None:  # first run shortly after registration, then every interval
        first = datetime.now(UTC) + timedelta(seconds=INTERVAL_FIRST_RUN_S)
        return IntervalSchedule(
            interval=timedelta(seconds=interval), anchor_date=first, timezone=cfg.timezone
        )
    cron = {
        "retrain": cfg.retrain_cron,
        "monitor": cfg.monitor_cron,
        "review": cfg.review_cron,
        "review-collect": cfg.review_collect_cron,
    }.get(flow_name)
    return CronSchedule(cron=cron, timezone=cfg.timezone) if cron else None


def _concurrency(flow_name: str) -> Any:
    """One retrain at a time (a drift storm queues one); a poll (`POLLS`) that finds the last one
    still running is cancelled rather than queued, so slow polls never pile up."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    if flow_name == "retrain":
        return 1
    if flow_name in POLLS:
        return ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        )
    return None


def _deployment(params: Params, flow_name: str, params_file: Path) -> Any:
    from prefect import Flow

    cfg = params.schedule
    schedule = flow_schedule(params, flow_name)
    entrypoint = ENTRYPOINTS.get(flow_name, f"flows/lifecycle/loop.py:{flow_name}")
    flow = Flow.from_source(source=str(REPO), entrypoint=entrypoint)
    return flow.to_deployment(
        name=DEPLOYMENT,
        schedules=[schedule] if schedule is not None else None,
        parameters={"params_file": str(params_file)},
        job_variables={"env": params.home.framework_env()},
        work_pool_name=cfg.work_pool,
        concurrency_limit=_concurrency(flow_name),
        tags=["casepilot"],
        description=(flow.description or "").split("\n")[0],
    )


def register_deployments(params: Params, params_file: str | Path = "params.yaml") -> list[str]:
    """Create or update the six deployments and the drift automation; their names.

    Returns `flow/deployment` names (e.g. `retrain/casepilot`) and the automation's name.
    `params_file` is what each run loads (made absolute here, as runs start in the checkout).
    """
    params_path = Path(params_file).expanduser().resolve()
    pool = ensure_work_pool(params)
    names = []
    with prefect_api(params):
        ids = {}
        for flow_name in FLOWS:
            ids[flow_name] = _deployment(params, flow_name, params_path).apply(work_pool_name=pool)
            names.append(f"{flow_name}/{DEPLOYMENT}")
        ensure_drift_automation(params, ids["retrain"])
    return [*names, AUTOMATION]


def _drift_parameters(params: Params) -> dict[str, Any] | None:
    """The drift-triggered retrain's parameters: `schedule.drift_retrain_stages` when set."""
    stages = params.schedule.drift_retrain_stages
    return {"stages": list(stages)} if stages else None


def ensure_drift_automation(params: Params, retrain_deployment_id: Any) -> Any:
    """(Re)create the automation: drift-breach event of this monitor → run `retrain`."""
    from prefect import get_client
    from prefect.automations import Automation, EventTrigger, RunDeployment

    with prefect_api(params):
        with get_client(sync_client=True) as client:
            for old in client.read_automations_by_name(AUTOMATION):
                client.delete_automation(old.id)
        automation = Automation(
            name=AUTOMATION,
            description="Monitor drift breach → retrain (casepilot, DESIGN §3)",
            trigger=EventTrigger(
                expect={DRIFT_EVENT},
                match={"prefect.resource.id": monitor_resource_id(params)},
                posture="Reactive",
                threshold=1,
                within=timedelta(0),
            ),
            actions=[
                RunDeployment(
                    source="selected",
                    deployment_id=retrain_deployment_id,
                    parameters=_drift_parameters(params),
                )
            ],
        )
        return automation.create().id
