"""`casepilot serve`: run the BentoML copilot service (`bentos.service:CopilotService`).

`bentoml serve` runs in its own process group; SIGTERM, SIGINT and SIGHUP sent to `casepilot
serve` are forwarded to that whole group (BentoML's arbiter and its workers), so stopping the
PID you started stops the server. If the group is still running `STOP_GRACE_S` after the
signal it is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

console = Console()
REPO = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 60.0  # the service flushes its prediction log on SIGTERM; then SIGKILL
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run `command` in a new process group, forwarding stop signals to it; its exit code."""
    process = subprocess.Popen(command, env=env, start_new_session=True)
    stopping = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL if stopping.is_set() else signum)
            except ProcessLookupError:
                return
        stopping.set()

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        deadline = None  # set when the first stop signal has been seen
        while True:
            try:
                code = process.wait(timeout=0.5)
                return 128 - code if code < 0 else code  # killed by a signal: 128 + its number
            except subprocess.TimeoutExpired:
                if not stopping.is_set():
                    continue
                deadline = deadline or time.monotonic() + STOP_GRACE_S
                if time.monotonic() < deadline:
                    continue
                console.print(
                    f"[red]server still running {STOP_GRACE_S:g} s after the signal; "
                    "killing it[/red]"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_command(
    host: str,
    port: int,
    *,
    params_file: Path,
    models_alias: str,
    shadow_alias: str,
    models_dir: Path | None,
) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command line and environment for these options."""
    env = {
        **os.environ,
        "CASEPILOT_PARAMS": str(params_file.resolve()),
        "CASEPILOT_SERVE_ALIAS": models_alias,
        "CASEPILOT_SHADOW_ALIAS": shadow_alias,
    }
    if models_dir is not None:
        env["CASEPILOT_MODELS_DIR"] = str(models_dir.resolve())
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [
        str(bentoml),
        "serve",
        "bentos.service:CopilotService",
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(REPO),
    ]
    return command, env


def serve(
    port: int | None = typer.Option(None, "--port", help="port (default: serve.port)"),
    host: str | None = typer.Option(
        None,
        "--host",
        help="bind address (default: serve.host, 127.0.0.1); anything else exposes the service",
    ),
    models_alias: str = typer.Option(
        "champion", "--models-alias", help="registry alias that answers requests"
    ),
    shadow_alias: str = typer.Option(
        "challenger", "--shadow-alias", help="registry alias run in shadow"
    ),
    models_dir: Path | None = typer.Option(
        None,
        "--models-dir",
        help="serve <dir>/<alias>/<stage> folders instead of the MLflow registry",
    ),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Serve suggestions (champion) with the challenger in shadow, logging every request."""
    from flows.cli.main import params_or_exit

    params = params_or_exit(params_file)
    cfg = params.serve
    command, env = serve_command(
        host or cfg.host,
        port or cfg.port,
        params_file=params_file,
        models_alias=models_alias,
        shadow_alias=shadow_alias,
        models_dir=models_dir,
    )
    if not env.get(cfg.api_key_env):
        console.print(
            f"[yellow]${cfg.api_key_env} is not set: /feedback and /admin/* will "
            "refuse every request[/yellow]"
        )
    source = f"folders under {models_dir}" if models_dir else params.mlflow_tracking_uri
    console.print(
        f"serving [bold]{models_alias}[/bold] (shadow: {shadow_alias}) from {source} "
        f"on http://{host or cfg.host}:{port or cfg.port}"
    )
    raise typer.Exit(run_forwarding_signals(command, env))
