"""`casepilot up` / `casepilot down`: the local platform on 127.0.0.1, started and stopped as one.

`up` starts the Prefect server and a process worker on `schedule.work_pool`, the MLflow server
over the embedded store with built-in authentication (flows/platform/mlflow_auth.py), the
Evidently UI over the monitors' workspace, Label Studio for the review queue
(flows/platform/up_studio.py) and — once a champion is registered — the BentoML service (their
starters: flows/platform/up_starters.py). Slow starters are launched together and then
polled (bounded deadlines), so the whole stack is up in about the time of the slowest. Every
service is a program of this home's supervisord (flows/platform/supervisor.py), which restarts
one that crashes; `down` stops them all (each whole process group) and supervisord with them.
Running `up` again starts only what is not running. The
service gets an API key (`CASEPILOT_API_KEY`, else generated into
`CASEPILOT_HOME/secrets/service-api-key`, 0600; flows/platform/service_key.py) that the flows
send when they ask it to reload.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.table import Table

from flows.platform import stack
from flows.platform import up_starters as starters
from flows.platform import up_studio as cli_up_studio
from flows.platform.stack import HOST, Service
from flows.platform.up_stack import Stack, console
from pipelines.config import Params

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
DEFAULT_PREFECT_PORT = 4200
ORDER = ("prefect-server", "prefect-worker", "mlflow", "evidently-ui", "label-studio", "bentoml")


def prefect_api_url(params: Params) -> tuple[str, int]:
    """The Prefect API URL `up` serves (schedule.prefect_api_url, else port 4200) and its port."""
    configured = params.schedule.prefect_api_url
    if not configured:
        return f"http://{HOST}:{DEFAULT_PREFECT_PORT}/api", DEFAULT_PREFECT_PORT
    parts = urlsplit(configured)
    if parts.hostname not in (HOST, "localhost"):
        raise ValueError(
            f"schedule.prefect_api_url is {configured!r}, a remote server; `casepilot up` starts "
            "a local one on 127.0.0.1: set it to null (port 4200) or http://127.0.0.1:PORT/api"
        )
    return configured.rstrip("/"), parts.port or DEFAULT_PREFECT_PORT


def _child_env(params: Params, api: str) -> dict[str, str]:
    """The environment every started service inherits (and this process's Prefect API URL)."""
    from pipelines.registry.tracking import without_own_sign_in

    # children sign in for this home themselves: never with credentials this process set for
    # another home's server
    env = without_own_sign_in({**os.environ, **params.home.framework_env(), "PREFECT_API_URL": api})
    os.environ["PREFECT_API_URL"] = api  # for register_deployments in this process
    return env


def bring_up(params: Params, params_file: Path) -> Stack:
    """Start what is not running yet, wait until everything answers; returns the stack's state."""
    from flows.platform import mlflow_auth, services, supervisor

    params.home.ensure()
    api, prefect_port = prefect_api_url(params)
    env = _child_env(params, api)
    home = params.home
    supervisor.ensure_running(home, env)  # every service inherits `env` from it
    st = Stack(params, params_file.resolve(), env, services=stack.read_state(home))
    pending: list[tuple[Service, Callable[[], bool], float]] = []

    def attempt(name: str, action: Callable[[], Any]) -> Any:
        """The action's result; a failure is reported and returns None (the rest carry on)."""
        try:
            return action() or True
        except Exception as err:  # noqa: BLE001 - reported; `up` exits 1
            st.fail(name, err)
            return None

    # launch the slow starters together, then wait for each
    prefect = attempt("prefect-server", lambda: starters.start_prefect(st, api, prefect_port))
    mlflow = attempt("mlflow", lambda: starters.start_mlflow(st))
    ui = attempt("evidently-ui", lambda: starters.start_evidently(st))
    studio = attempt("label-studio", lambda: cli_up_studio.start(st))  # flows/platform/up_studio.py
    answers = lambda: stack.http_ok(f"{api}/health") is not None  # noqa: E731
    if prefect and attempt(
        "prefect-server", lambda: stack.wait_healthy(prefect, answers, 120, home=home)
    ):
        # deployments first: they create the work pool the worker then polls (no create race)
        attempt("deployments", lambda: starters.register_deployments(st))
        pool = params.schedule.work_pool
        if worker := attempt("prefect-worker", lambda: starters.start_worker(st, api)):
            pending.append((worker, lambda: starters.worker_online(api, pool), 90))
    if mlflow:
        server, creds = mlflow
        healthy = lambda: services.healthy(server.url)  # noqa: E731
        if attempt(
            "mlflow", lambda: stack.wait_healthy(server, healthy, 150, home=home)
        ) and attempt("mlflow", lambda: mlflow_auth.ensure_registry_users(server.url, creds)):
            where = mlflow_auth.secrets_file(params.home)
            st.status["mlflow users"] = f"admin, reviewer, promoter; passwords in {where} (0600)"
            bento = attempt("bentoml", lambda: starters.start_bentoml(st))
            if isinstance(bento, Service) and not starters.champion_missing(params):
                ready = f"{bento.url}/readyz"
                pending.append((bento, lambda: stack.http_ok(ready) is not None, 300))
    if isinstance(ui, Service):
        version = f"{ui.url}/api/version"
        pending.append((ui, lambda: stack.http_ok(version) is not None, 120))
    if isinstance(studio, Service):
        pending.append(
            (studio, cli_up_studio.health_check(studio), params.review.startup_timeout_s)
        )
    for service, check, timeout_s in pending:
        attempt(service.name, lambda s=service, c=check, t=timeout_s: stack.wait_healthy(
            s, c, t, home=home))  # fmt: skip
    return st


def _print(st: Stack) -> None:
    table = Table(title=f"casepilot services ({st.params.home.root})")
    table.add_column("service", no_wrap=True)
    table.add_column("URL", overflow="fold")
    table.add_column("pid", no_wrap=True)
    table.add_column("status")
    notes = []
    for name in ORDER:
        service = st.services.get(name)
        status = st.status.get(name, "not started")
        if status.startswith(("skipped:", "started, waiting")):
            notes.append(f"{name} {status}")
            status = status.split(":")[0].split(",")[0] + " (below)"
        url, pid = (service.url, str(service.pid)) if service else ("", "")
        table.add_row(name, url, pid, status)
    console.print(table)
    for name in ("deployments", "mlflow users", cli_up_studio.USERS, "service API key"):
        if name in st.status:
            notes.append(f"{name}: {st.status[name]}")
    for note in notes:
        console.print(note, soft_wrap=True)
    if "prefect-server" in st.services:
        api, _ = prefect_api_url(st.params)
        console.print(f"other shells: export PREFECT_API_URL={api}", soft_wrap=True)
    from flows.platform.supervisor import config_file

    conf = config_file(st.params.home)
    console.print(f"what runs: supervisorctl -c {conf} status; stop with `casepilot down`",
                  soft_wrap=True)  # fmt: skip


def up(params_file: Path = PARAMS) -> None:
    """Start Prefect (server + worker), MLflow (with sign-in), Evidently UI, Label Studio and
    the service."""
    from flows.cli.main import params_or_exit

    params = params_or_exit(params_file)
    try:
        st = bring_up(params, params_file)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    _print(st)
    if st.failed:
        raise typer.Exit(1)


def down(params_file: Path = PARAMS) -> None:
    """Stop everything `casepilot up` started (each whole process group) and its supervisord."""
    from flows.cli.main import params_or_exit
    from flows.platform import services, supervisor

    params = params_or_exit(params_file)
    outcome = supervisor.shutdown(params.home)
    if not outcome:
        console.print(f"nothing running (no supervisord for {params.home.root})")
    for name, what in outcome.items():
        console.print(f"{name}: {what}")
    services.read_server(params)  # drops the mlflow record now that its process is gone
