"""Schedules fire on a real Prefect server: a deployment's interval creates and runs flow runs.

`prefect server start` on 127.0.0.1 (scheduler loop lowered to 2 s) and a real process worker;
nothing calls the flow: the server's scheduler creates the runs, the worker executes them. With
SQLAlchemy 2.1 the scheduler failed every loop (`Can't evaluate bulk DML statement`) and no run
was ever created; this test is the proof that the pinned 2.0.x works. The second test checks the
lifecycle deployments (review and review-collect among them) carry the configured crons and
interval overrides.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.prefect_server import prefect_server, process_worker

pytestmark = pytest.mark.slow  # a Prefect server, a worker and a flow-run process start

TICK = """
from pathlib import Path
from prefect import flow


@flow(name="tick")
def tick(out: str) -> str:
    Path(out).write_text("ticked")
    return "ticked"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-schedule")) as url:
        yield url


def test_an_interval_schedule_creates_and_runs_a_flow_run_by_itself(
    server: str, tmp_path: Path
) -> None:
    from prefect import Flow, get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle.deploy import ensure_work_pool
    from pipelines.config import params_from_mapping
    from pipelines.home import Home

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "tick.py").write_text(TICK)
    marker = tmp_path / "ticked.txt"
    pool = "tick-pool"
    params = params_from_mapping(
        {"schedule": {"prefect_api_url": server, "work_pool": pool}},
        home=Home(tmp_path / "home"),
        env={},
    )
    ensure_work_pool(params)
    with temporary_settings({PREFECT_API_URL: server}):
        flow = Flow.from_source(source=str(tmp_path / "code"), entrypoint="tick.py:tick")
        deployment_id = flow.to_deployment(
            name="every-5s",
            schedules=[IntervalSchedule(interval=timedelta(seconds=5))],
            parameters={"out": str(marker)},
            work_pool_name=pool,
        ).apply(work_pool_name=pool)
        started = time.monotonic()
        with process_worker(server, pool, tmp_path, env={}) as worker_log:
            completed = _wait_for_completed_run(deployment_id, deadline_s=150)
            elapsed = time.monotonic() - started
            with get_client(sync_client=True) as client:
                scheduled = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
        assert completed is not None, (
            f"no completed scheduled run within 150 s; worker log:\n{worker_log.read_text()}"
        )
    assert completed.auto_scheduled  # created by the server's scheduler, not by a call
    assert completed.created_by is not None and completed.created_by.type == "SCHEDULE"
    assert marker.read_text() == "ticked"  # the worker really ran the flow's code
    assert len(scheduled) >= 2  # the scheduler keeps future runs queued
    print(f"first scheduled run completed {elapsed:.1f} s after the worker started")


def _wait_for_completed_run(deployment_id, deadline_s: float):
    """Poll the API (bounded) until a run of the deployment is Completed; None on timeout."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            done = [r for r in runs if r.state is not None and r.state.is_completed()]
            if done:
                return done[0]
            failed = [r for r in runs if r.state is not None and r.state.is_final()]
            assert not failed, f"a scheduled run ended {failed[0].state}"
            time.sleep(1)
    return None


def test_lifecycle_deployments_carry_crons_and_interval_overrides(
    server: str, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle.deploy import register_deployments
    from pipelines.config import load_params
    from pipelines.home import Home

    params_file = tmp_path / "params.yaml"
    schedule = {"prefect_api_url": server, "work_pool": "lifecycle-pool",
                "monitor_interval_seconds": 30, "promote_poll_seconds": 7,
                "review_cron": "15 5 * * *", "review_collect_interval_seconds": 45}  # fmt: skip
    params_file.write_text(yaml.safe_dump({"schedule": schedule}))
    params = load_params(params_file, home=Home(tmp_path / "home"), env={})
    register_deployments(params, params_file)
    with temporary_settings({PREFECT_API_URL: server}), get_client(sync_client=True) as client:
        found = {
            name: client.read_deployment_by_name(f"{name}/casepilot").schedules
            for name in ("retrain", "monitor", "promote", "rollback", "review", "review-collect")
        }
        review = client.read_deployment_by_name("review-collect/casepilot")
    assert found["retrain"][0].schedule.cron == params.schedule.retrain_cron
    assert found["monitor"][0].schedule.interval == timedelta(seconds=30)  # the override
    assert found["promote"][0].schedule.interval == timedelta(seconds=7)
    assert found["rollback"] == []
    assert found["review"][0].schedule.cron == "15 5 * * *"  # the configured cron
    assert found["review-collect"][0].schedule.interval == timedelta(seconds=45)  # the override
    assert review.entrypoint == "flows/lifecycle/review.py:review_collect"
    assert review.parameters == {"params_file": str(params_file.resolve())}
