"""A real `prefect server start` (and process worker) on 127.0.0.1 for tests, stopped by group.

The scheduler's loop is lowered to 2 s (`PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS`) so a
deployment's schedule creates its runs within seconds instead of the default minute.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PYTHON = sys.executable


def healthy(url: str) -> bool:
    """True when the Prefect API at `url` answers /health with 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def drain_prefect_workers(timeout_s: float = 60.0) -> None:
    """Send this process's queued flow-run logs and events while their server still runs.

    Prefect's log and event workers are process-wide. Left queued when a test's server stops,
    their items are retried against the dead URL, and the next `prefect_test_harness` exit
    (which drains with no timeout) waits for them: 339 s in test_review_studio.py's teardown
    in the full suite, 0.5 s when that module ran alone.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout_s, at_exit=False)
    EventsWorker.drain_all(timeout=timeout_s, at_exit=False)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it does not end within 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=10)


@contextlib.contextmanager
def prefect_server(root: Path) -> Iterator[str]:
    """Start `prefect server start` with its own database under `root`; yield the API URL."""
    from flows.platform.services import free_port

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL", None)
    log_path = root / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + 180  # 2 loaded cores: 6-8 s idle, >90 s seen
            while not healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prefect server did not get healthy: {log_path.read_text()}"
                    )
                time.sleep(0.5)
            yield url
            drain_prefect_workers()
        finally:
            _stop(process)


@contextlib.contextmanager
def process_worker(api_url: str, pool: str, root: Path, env: dict[str, str]) -> Iterator[Path]:
    """Run `prefect worker start --type process` on `pool`, polling every second; yield its log."""
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"worker-{pool}.log"
    full_env = {
        **os.environ, **env, "PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            yield log_path
        finally:
            _stop(process)
