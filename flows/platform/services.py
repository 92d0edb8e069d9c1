"""Local services as managed processes: an `mlflow server` on 127.0.0.1 over the embedded store.

The server is the `mlflow` program of the home's supervisord (flows/platform/supervisor.py: its
own process group, restarted after a crash, stopped by `casepilot down` or
`casepilot mlflow-server stop`). It writes its output to `CASEPILOT_HOME/logs/mlflow-server.log`;
`CASEPILOT_HOME/logs/mlflow-server.json` (pid, port, URL, auth) tells this home's clients where
it answers (pipelines/registry/tracking.py). It serves the same store the
embedded default uses: the backend is `params.mlflow_tracking_uri` (SQLite or PostgreSQL) and
artifacts live under `CASEPILOT_HOME/mlflow/artifacts`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.registry.tracking import healthy, server_record_file

if TYPE_CHECKING:
    from pipelines.config import Params

HOST = "127.0.0.1"
NAME = "mlflow"  # its program name in supervisord (`casepilot up` shows it under this name)
DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class ServerInfo:
    """A running server as recorded for its clients (`mlflow-server.json`)."""

    pid: int
    host: str
    port: int
    backend_store_uri: str
    artifacts: str
    log: str
    auth: bool = False  # runs `--app-name basic-auth` (flows/platform/mlflow_auth.py)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def pid_file(params: Params) -> Path:
    return server_record_file(params.home)


def free_port(host: str = HOST) -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def read_server(params: Params) -> ServerInfo | None:
    """The recorded server if supervisord runs it, with its current pid, else None (stale
    record removed)."""
    from flows.platform import supervisor

    path = pid_file(params)
    if not path.is_file():
        return None
    try:
        info = ServerInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError):
        path.unlink(missing_ok=True)
        return None
    now = {p["name"]: p for p in supervisor.programs(params.home)}.get(NAME)
    if now is None or now["statename"] not in supervisor.ALIVE:
        path.unlink(missing_ok=True)
        return None
    if now["pid"] > 0 and now["pid"] != info.pid:  # restarted after a crash
        info = replace(info, pid=int(now["pid"]))
        path.write_text(json.dumps(asdict(info)), encoding="utf-8")
    return info


def server_command(params: Params, port: int, host: str = HOST, *, auth: bool = False) -> list[str]:
    """Return the `mlflow server` command line over the embedded store (`auth`: basic-auth)."""
    backend = params.mlflow_tracking_uri
    if not backend.startswith(DATABASE_SCHEMES):
        raise ValueError(
            f"register.tracking_uri is {backend!r}, already a server; a local `mlflow server` "
            "needs a database store: set register.tracking_uri to null (SQLite under "
            "CASEPILOT_HOME) or a postgresql+psycopg:// URL"
        )
    artifacts = (params.home.mlflow / "artifacts").as_uri()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", host, "--port", str(port),
        "--backend-store-uri", backend,
        # the same file root the embedded store writes to, so both modes share every artifact
        "--default-artifact-root", artifacts,
        "--artifacts-destination", artifacts,
        "--workers", str(params.register.server_workers),
    ] + (["--app-name", "basic-auth"] if auth else [])  # fmt: skip


def start_mlflow_server(
    params: Params,
    *,
    port: int | None = None,
    host: str = HOST,
    timeout_s: float = 90.0,
    poll_s: float = 0.5,
    auth_env: dict[str, str] | None = None,
    wait: bool = True,
) -> ServerInfo:
    """Start `mlflow server` in its own process group and wait until `/health` answers.

    Returns the running server; if one is already recorded and alive, returns that one.
    `auth_env` (flows/platform/mlflow_auth.server_env) runs it with built-in authentication;
    `wait=False` returns at once (poll `wait_mlflow_server`) so callers can start other services
    meanwhile.
    """
    auth = auth_env is not None
    running = _running_server(params, auth=auth)
    if running is not None:
        return running
    params.home.ensure()
    if params.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(params.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    port = port or params.register.server_port
    command = server_command(params, port, host, auth=auth)
    if healthy(f"http://{host}:{port}"):
        raise RuntimeError(
            f"something already answers on {host}:{port} but it is not this home's server "
            f"({pid_file(params)} has no live record); stop it or pass another --port"
        )
    info = _launch_server(params, command, host, port, auth_env)
    if wait:
        wait_mlflow_server(params, info, timeout_s=timeout_s, poll_s=poll_s)
    return info


def _running_server(params: Params, *, auth: bool) -> ServerInfo | None:
    """This home's live server, None if none runs; raises if it runs with the other auth mode."""
    running = read_server(params)
    if running is not None and running.auth != auth:
        state = "with" if running.auth else "without"
        raise RuntimeError(
            f"an mlflow server {state} authentication already runs on {running.url} for this "
            "CASEPILOT_HOME; stop it first (`casepilot mlflow-server stop` or `casepilot down`)"
        )
    return running


def _launch_server(
    params: Params, command: list[str], host: str, port: int, auth_env: dict[str, str] | None
) -> ServerInfo:
    """Hand `command` to the home's supervisord, logging to the home; record where it answers."""
    from flows.platform import supervisor

    log = params.home.logs / "mlflow-server.log"
    env = {
        **os.environ,
        **params.home.framework_env(),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(auth_env or {}),
    }
    url = f"http://{host}:{port}"
    started = supervisor.start(params.home, supervisor.Program(NAME, command, env, log, url))
    info = ServerInfo(
        pid=int(started["pid"]),
        host=host,
        port=port,
        backend_store_uri=command[command.index("--backend-store-uri") + 1],
        artifacts=str(params.home.mlflow / "artifacts"),
        log=str(log),
        auth=auth_env is not None,
    )
    pid_file(params).write_text(json.dumps(asdict(info)), encoding="utf-8")
    return info


def wait_mlflow_server(
    params: Params, info: ServerInfo, *, timeout_s: float = 90.0, poll_s: float = 0.5
) -> ServerInfo:
    """Wait until the started server answers `/health`; stop it and raise if it never does."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / poll_s) + 1):
        alive = read_server(params) is not None
        if alive and healthy(info.url):
            return info
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    stop_mlflow_server(params)
    log = Path(info.log)
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.is_file() else ""
    raise RuntimeError(
        f"mlflow server on {info.url} did not become healthy within {timeout_s:.0f}s; "
        f"is port {info.port} free? Last log lines ({log}):\n{tail}"
    )


def stop_mlflow_server(params: Params) -> bool:
    """Stop the server's whole process group through supervisord; True if one ran."""
    from flows.platform import supervisor

    stopped = supervisor.stop(params.home, NAME)
    pid_file(params).unlink(missing_ok=True)
    return stopped
