"""The demo's copilot service: `bentoml serve` (the `casepilot serve` command line) as a subprocess.

It binds 127.0.0.1 on a free port, reads the demo's params file, loads `champion` and shadows
`challenger` from the MLflow registry, and is always stopped (its whole process group) when the
demo ends, also on failure. Its embedded Qdrant folder is its own (`serve-qdrant`): an embedded
Qdrant folder is locked by one process, and the demo process builds indexes while it serves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from pipelines.config import Params

READY_TIMEOUT_S = 600.0  # loading five stages on a busy 2-core machine
STOP_TIMEOUT_S = 60.0


@dataclass
class RunningService:
    """A started service: its URL, API key, process and log file."""

    url: str
    api_key: str
    process: subprocess.Popen
    log: Path

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def admin(self, route: str, payload: dict[str, Any] | None = None, timeout: float = 600) -> Any:
        """POST an admin route with the API key; returns the JSON answer."""
        response = httpx.post(
            f"{self.url}/admin/{route}", json=payload or {}, headers=self.headers(), timeout=timeout
        )
        response.raise_for_status()
        return response.json()

    def reload(self) -> dict[str, Any]:
        """Re-resolve `champion`/`challenger` now; the answer lists the versions serving."""
        return self.admin("reload", {"force": False})

    def flush(self) -> dict[str, Any]:
        """Wait until every request so far is shadowed and written to the prediction log."""
        return self.admin("flush", {"timeout_s": 300})

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


def _wait_ready(service: RunningService, console: Console) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with console.status(f"starting the copilot service on {service.url} (loading models) …"):
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"the service exited while starting:\n{service.tail()}")
            try:
                if httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the service was not ready in {READY_TIMEOUT_S:.0f} s:\n{service.tail()}"
                )
            time.sleep(1.0)  # poll interval of a bounded wait for readiness


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextmanager
def copilot_service(
    params: Params, params_file: Path, api_key: str, console: Console
) -> Iterator[RunningService]:
    """Start the service, wait until its models are loaded, yield it, and always stop it."""
    from flows.cli_serve import serve_command
    from flows.services import free_port

    port = free_port()
    command, env = serve_command(
        "127.0.0.1", port, params_file=params_file, models_alias="champion",
        shadow_alias="challenger", models_dir=None,
    )  # fmt: skip
    env = {
        **env,
        **params.home.framework_env(),
        params.serve.api_key_env: api_key,
        "CASEPILOT_QDRANT_LOCATION": str(params.home.root / "serve-qdrant"),
    }
    log = params.home.logs / "demo-service.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        service = RunningService(f"http://127.0.0.1:{port}", api_key, process, log)
        try:
            _wait_ready(service, console)
            yield service
        finally:
            _stop(process)
