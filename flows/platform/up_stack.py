"""`Stack`: what one `casepilot up` found running or started, and the status it reports.

Every start goes through `Stack.start` (port check, launch as a process group, log under
`CASEPILOT_HOME/logs`) and every service is recorded at once in the state file
(flows/platform/stack.py), so `casepilot down` stops it even when a later start fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from flows.platform import stack
from flows.platform.stack import HOST, Service
from pipelines.config import Params

console = Console()
REPO = Path(__file__).resolve().parents[2]


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
