"""`casepilot up` / `casepilot down`: the local platform on 127.0.0.1, started and stopped as one.

`up` starts the Prefect server and a process worker on `schedule.work_pool`, the MLflow server over
the embedded store with built-in authentication (flows/platform/mlflow_auth.py), the Evidently UI over the
monitors' workspace, Label Studio for the review queue (flows/platform/up_studio.py) and — once a
champion is registered — the BentoML service. Slow starters are launched together and then
polled (bounded deadlines), so the whole stack is up in about the time of the slowest. Every
process is recorded in `CASEPILOT_HOME/run/services.json` (flows/platform/stack.py); `down` stops
exactly those groups. Running `up` again starts only what is not running. The
service gets an API key (`CASEPILOT_API_KEY`, else generated into
`CASEPILOT_HOME/secrets/service-api-key`, 0600; flows/platform/service_key.py) that the flows send when
they ask it to reload.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from flows.platform import stack
from flows.platform import up_studio as cli_up_studio
from flows.platform.stack import HOST, Service
from pipelines.config import Params

console = Console()
REPO = Path(__file__).resolve().parents[2]
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
DEFAULT_PREFECT_PORT = 4200
SCHEDULER_LOOP_ENV = "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"
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


@dataclass
class Stack:
    """What this `up` found or started, and what it reports."""

    params: Params
    params_file: Path
    env: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    failed: bool = False

    def running(self, name: str) -> Service | None:
        """The recorded service if it still runs (a dead leader's leftovers are stopped)."""
        service = self.services.get(name)
        if service is None:
            return None
        if stack.is_running(service):
            self.status[name] = "already running"
            return service
        stack.stop_group(service)
        del self.services[name]
        return None

    def start(self, name: str, command: list[str], url: str, port: int, **env: str) -> Service:
        if not stack.port_free(port):
            raise RuntimeError(
                f"{name}: port {port} on {HOST} is taken by another program; stop it or "
                "choose another port in params.yaml"
            )
        log = self.params.home.logs / f"{name}.log"
        service = stack.launch(name, command, {**self.env, **env}, log, url, cwd=REPO)
        self.record(service, "started")
        return service

    def record(self, service: Service, status: str) -> None:
        self.services[service.name] = service
        self.status.setdefault(service.name, status)
        stack.write_state(self.params.home, self.services)

    def fail(self, name: str, err: Exception) -> None:
        self.failed = True
        self.status[name] = "FAILED"
        console.print(f"[red]{name}: {err}[/red]")


def _start_prefect(st: Stack, api: str, port: int) -> Service:
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
               "--port", str(port)]  # fmt: skip
    ui = api.removesuffix("/api")  # the server's UI; its API lives under /api
    # the scheduler creates due runs every loop (Prefect's default: 60 s late at worst)
    loop = st.env.get(SCHEDULER_LOOP_ENV, "10")
    return st.running("prefect-server") or st.start(
        "prefect-server", command, ui, port, **{SCHEDULER_LOOP_ENV: loop}
    )


def _start_worker(st: Stack, api: str) -> Service:
    pool = st.params.schedule.work_pool
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
               "--type", "process", "--name", f"casepilot-{pool}"]  # fmt: skip
    if found := st.running("prefect-worker"):
        return found
    log = st.params.home.logs / "prefect-worker.log"
    ui = f"{api.removesuffix('/api')}/work-pools/work-pool/{pool}"
    service = stack.launch("prefect-worker", command, st.env, log, ui, REPO)
    st.record(service, "started")
    return service


def _worker_online(api: str, pool: str) -> bool:
    body = stack.http_ok(f"{api}/work_pools/{pool}/workers/filter", data=b"{}")
    return body is not None and any(w.get("status") == "ONLINE" for w in json.loads(body))


def _register_deployments(st: Stack) -> None:
    """Register the lifecycle deployments (flows/lifecycle/loop.py) when that module exists."""
    if importlib.util.find_spec("flows.lifecycle.loop") is None:
        st.status["deployments"] = "skipped: flows/lifecycle/loop.py not present yet"
        return
    from flows.lifecycle import loop as lifecycle

    if not hasattr(lifecycle, "register_deployments"):
        st.status["deployments"] = "skipped: flows.lifecycle.loop has no register_deployments"
        return
    accepts_file = "params_file" in inspect.signature(lifecycle.register_deployments).parameters
    extra = {"params_file": st.params_file} if accepts_file else {}
    names = lifecycle.register_deployments(st.params, **extra)
    st.status["deployments"] = "registered " + ", ".join(map(str, names or []))


def _start_mlflow(st: Stack) -> tuple[Service, object]:
    from flows.platform import mlflow_auth, services

    creds = mlflow_auth.load_or_create_credentials(st.params.home)
    port = st.params.register.server_port
    if not (services.read_server(st.params) or stack.port_free(port)):
        raise RuntimeError(f"mlflow: port {port} on {HOST} is taken; set register.server_port")
    already = services.read_server(st.params) is not None
    info = services.start_mlflow_server(
        st.params, port=port, auth_env=mlflow_auth.server_env(st.params.home, creds), wait=False
    )
    command = services.server_command(st.params, info.port, auth=True)
    service = Service("mlflow", info.url, info.pid, info.pid, info.log, command)
    st.record(service, "already running" if already else "started")
    return service, creds


def _champion_missing(params: Params) -> list[str]:
    """Stages without a `champion` version in the registry (the service needs all of them)."""
    from pipelines.data.contract import STAGES
    from pipelines.registry.register import CHAMPION, aliases_of, registry_client
    from pipelines.registry.store import registered_model_name

    client = registry_client(params)
    return [
        s for s in STAGES if CHAMPION not in aliases_of(client, registered_model_name(params, s))
    ]


def _start_bentoml(st: Stack) -> Service | None:
    from flows.cli.serve import serve_command

    if found := st.running("bentoml"):
        return found
    from flows.platform.service_key import api_key_file, load_or_create_api_key

    cfg = st.params.serve
    command, env = serve_command(HOST, cfg.port, params_file=st.params_file,
                                 models_alias="champion", shadow_alias="challenger",
                                 models_dir=None)  # fmt: skip
    url = f"http://{HOST}:{cfg.port}"
    # /feedback and /admin/reload need it: the env var's key, else the stored or a new one
    env[cfg.api_key_env] = load_or_create_api_key(st.params, st.env)
    st.status["service API key"] = (
        f"in {api_key_file(st.params)} (0600); send it as X-API-Key to /feedback and /admin/*"
    )
    passed = {k: v for k, v in env.items() if k.startswith("CASEPILOT_") or k == cfg.api_key_env}
    service = st.start("bentoml", [sys.executable, *command], url, cfg.port, **passed)
    missing = _champion_missing(st.params)
    if missing:  # it runs, not ready, and loads them once the platform promotes a champion
        st.status["bentoml"] = (
            f"started, waiting for a champion of {', '.join(missing)} (/readyz 503 until then; "
            f"it polls the registry every serve.reload_poll_s={cfg.reload_poll_s:g} s)"
        )
    return service


def bring_up(params: Params, params_file: Path) -> Stack:
    """Start what is not running yet, wait until everything answers; returns the stack's state."""
    from flows.platform import mlflow_auth, services

    params.home.ensure()
    api, prefect_port = prefect_api_url(params)
    from pipelines.registry.tracking import without_own_sign_in

    # children sign in for this home themselves: never with credentials this process set for
    # another home's server
    env = without_own_sign_in({**os.environ, **params.home.framework_env(), "PREFECT_API_URL": api})
    os.environ["PREFECT_API_URL"] = api  # for register_deployments in this process
    st = Stack(params, params_file.resolve(), env, services=stack.read_state(params.home))
    pending: list[tuple[Service, Callable[[], bool], float]] = []

    def attempt(name: str, action: Callable[[], Any]) -> Any:
        """The action's result; a failure is reported and returns None (the rest carry on)."""
        try:
            return action() or True
        except Exception as err:  # noqa: BLE001 - reported; `up` exits 1
            st.fail(name, err)
            return None

    # launch the slow starters together, then wait for each
    prefect = attempt("prefect-server", lambda: _start_prefect(st, api, prefect_port))
    mlflow = attempt("mlflow", lambda: _start_mlflow(st))
    ui = attempt("evidently-ui", lambda: _start_evidently(st))
    studio = attempt("label-studio", lambda: cli_up_studio.start(st))  # flows/platform/up_studio.py
    if prefect and attempt("prefect-server", lambda: stack.wait_healthy(
            prefect, lambda: stack.http_ok(f"{api}/health") is not None, 120)):  # fmt: skip
        # deployments first: they create the work pool the worker then polls (no create race)
        attempt("deployments", lambda: _register_deployments(st))
        pool = params.schedule.work_pool
        if worker := attempt("prefect-worker", lambda: _start_worker(st, api)):
            pending.append((worker, lambda: _worker_online(api, pool), 90))
    if mlflow:
        server, creds = mlflow
        healthy = lambda: services.healthy(server.url)  # noqa: E731
        if attempt("mlflow", lambda: stack.wait_healthy(server, healthy, 150)) and attempt(
            "mlflow", lambda: mlflow_auth.ensure_registry_users(server.url, creds)
        ):
            where = mlflow_auth.secrets_file(params.home)
            st.status["mlflow users"] = f"admin, reviewer, promoter; passwords in {where} (0600)"
            bento = attempt("bentoml", lambda: _start_bentoml(st))
            if isinstance(bento, Service) and not _champion_missing(params):
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
        attempt(service.name, lambda s=service, c=check, t=timeout_s: stack.wait_healthy(s, c, t))
    return st


def _start_evidently(st: Stack) -> Service:
    port = st.params.monitor.ui_port
    command = [sys.executable, "-m", "evidently.cli", "ui", "--host", HOST, "--port", str(port),
               "--workspace", str(st.params.home.evidently)]  # fmt: skip
    url = f"http://{HOST}:{port}"
    return st.running("evidently-ui") or st.start("evidently-ui", command, url, port)


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
    console.print(f"state: {stack.state_file(st.params.home)}; stop with `casepilot down`")


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
    """Stop exactly the processes `casepilot up` started (their process groups)."""
    from flows.cli.main import params_or_exit
    from flows.platform import services

    params = params_or_exit(params_file)
    recorded = stack.read_state(params.home)
    running = {n: s for n, s in recorded.items() if stack.is_ours(s)}
    if not running:
        console.print(f"nothing running (no live services in {stack.state_file(params.home)})")
        stack.state_file(params.home).unlink(missing_ok=True)
        return
    for name, outcome in stack.stop_groups(list(running.values())).items():
        console.print(f"{name} (pid {running[name].pid}): {outcome}")
    services.read_server(params)  # drops the mlflow pid file now that its process is gone
    stack.state_file(params.home).unlink(missing_ok=True)
