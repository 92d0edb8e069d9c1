"""The platform the demo drives: `casepilot up` on free loopback ports, and what ran on it.

`running_platform` starts exactly what an operator's `casepilot up` starts (Prefect server and a
process worker with the lifecycle deployments, schedules and the drift automation, MLflow with
sign-in, the Evidently UI, the BentoML service) and always stops those process groups at the end.
`FlowRuns` reads the Prefect API to wait for the runs the deployments, schedules and the
automation start by themselves, and names each one: which flow run, of which deployment, started
by a schedule, an automation or a person.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.config import Params

POLL_S = 2.0  # the interval of every bounded wait on the Prefect API or the service
PAGE = 200  # the most flow runs Prefect's API returns for one query


def free_ports_overlay() -> dict[str, Any]:
    """Free 127.0.0.1 ports for every server `up` starts (a user's own `up` keeps its ports)."""
    from flows.platform.services import free_port

    return {
        "schedule": {"prefect_api_url": f"http://127.0.0.1:{free_port()}/api"},
        "register": {"server_port": free_port()},
        "monitor": {"ui_port": free_port()},
        "serve": {"port": free_port()},
        "review": {"port": free_port()},
    }


@dataclass(frozen=True)
class Platform:
    """What `casepilot up` runs: the Prefect API and every service's URL."""

    prefect_api: str
    urls: dict[str, str]

    @property
    def line(self) -> str:
        return ", ".join(f"{name} {url}" for name, url in self.urls.items())


@contextlib.contextmanager
def running_platform(params: Params, params_file: Path) -> Iterator[Platform]:
    """`casepilot up` for these params; yields what runs; always stops what it started."""
    from flows.platform import supervisor
    from flows.platform.up import bring_up, prefect_api_url

    try:
        started = bring_up(params, params_file)
        if started.failed:
            problems = [n for n, status in started.status.items() if status == "FAILED"]
            raise RuntimeError(
                f"casepilot up failed for {', '.join(problems)}; see the logs in {params.home.logs}"
            )
        urls = {name: service.url for name, service in started.services.items()}
        yield Platform(prefect_api_url(params)[0], urls)
    finally:
        supervisor.shutdown(params.home)


@dataclass(frozen=True)
class RunInfo:
    """One flow run as the Prefect API reports it."""

    id: str
    name: str
    flow: str
    deployment: str
    started_by: str  # "schedule", "automation <name>", or "API / UI"
    state: str
    message: str
    created: datetime
    started: datetime | None
    ended: datetime | None

    @property
    def line(self) -> str:
        return f"{self.flow}/{self.deployment} run '{self.name}' ({self.started_by})"


def wait_until(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    """Poll `check` every POLL_S until it returns something truthy; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(POLL_S)


class FlowRuns:
    """Flow runs of the lifecycle deployments on the platform's Prefect server."""

    TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self._automations: dict[str, str] = {}
        self._deployments: dict[str, str] = {}

    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        from prefect import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings({PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def runs(self, flow_name: str, *, since: datetime | None = None) -> list[RunInfo]:
        """Deployment runs of `flow_name` created at or after `since`, oldest first."""
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterDeploymentId,
            FlowRunFilterExpectedStartTime,
        )
        from prefect.client.schemas.sorting import FlowRunSort

        run_filter = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=False))
        if since is not None:
            run_filter.expected_start_time = FlowRunFilterExpectedStartTime(after_=since)
        with self._client() as client:
            found = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=run_filter,
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            return [self._info(client, flow_name, run) for run in found]

    def every_run(self) -> list[RunInfo]:
        """Every flow run the server knows (deployment runs or not) that started, oldest first:
        the record of who ran what."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
        from prefect.client.schemas.sorting import FlowRunSort

        started = FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))
        found: list[Any] = []
        with self._client() as client:
            while True:  # the API returns at most PAGE runs a call
                page = client.read_flow_runs(
                    flow_run_filter=started, sort=FlowRunSort.START_TIME_ASC, limit=PAGE,
                    offset=len(found),
                )  # fmt: skip
                found.extend(page)
                if len(page) < PAGE:
                    break
            flows = {str(f.id): f.name for f in client.read_flows(limit=PAGE)}
            return [self._info(client, flows.get(str(r.flow_id), "?"), r) for r in found]

    def _info(self, client: Any, flow_name: str, run: Any) -> RunInfo:
        deployment = str(run.deployment_id)
        if run.deployment_id is None:
            self._deployments[deployment] = "no deployment (a direct call)"
        elif deployment not in self._deployments:
            self._deployments[deployment] = client.read_deployment(run.deployment_id).name
        key = run.idempotency_key or ""
        if run.auto_scheduled:
            started_by = "schedule"
        elif key.startswith("automation "):
            started_by = "automation " + self._automation_name(client, key)
        else:
            started_by = "API / UI"
        state = run.state
        return RunInfo(
            str(run.id), run.name, flow_name, self._deployments[deployment], started_by,
            state.type.value if state else "PENDING", (state.message or "") if state else "",
            run.created, run.start_time, run.end_time,
        )  # fmt: skip

    def _automation_name(self, client: Any, key: str) -> str:
        automation_id = key.split(",")[0].removeprefix("automation ").strip()
        if automation_id not in self._automations:
            try:
                self._automations[automation_id] = client.read_automation(automation_id).name
            except Exception:  # noqa: BLE001 - deleted since; the id still says which
                self._automations[automation_id] = automation_id
        return self._automations[automation_id]

    def wait_finished(
        self,
        flow_name: str,
        *,
        since: datetime,
        timeout_s: float,
        started_by: str | None = None,
    ) -> RunInfo:
        """The first run of `flow_name` created after `since` (optionally started by a schedule
        or an automation) once it has finished; RuntimeError if it did not complete."""

        def finished() -> RunInfo | None:
            for run in self.runs(flow_name, since=since):
                if started_by and not run.started_by.startswith(started_by):
                    continue
                if run.state == "CANCELLED":  # a poll dropped while the last one still ran
                    continue
                if run.state == "CRASHED" and run.started is None:  # never got to run (e.g. the
                    continue  # worker could not submit it to a busy server): the next one will
                return run if run.state in self.TERMINAL else None
            return None

        what = f"a {flow_name} deployment run" + (f" started by {started_by}" if started_by else "")
        run = wait_until(what, finished, timeout_s)
        if run.state != "COMPLETED":
            raise RuntimeError(f"{run.line} ended {run.state}: {run.message}")
        return run
