"""`Stack`: what one `casepilot up` found running or started, and the status it reports.

Every start goes through `Stack.start` (port check, then a program of this home's supervisord,
flows/platform/supervisor.py, logging under `CASEPILOT_HOME/logs`), so supervisord restarts it
after a crash and `casepilot down` stops it even when a later start fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from flows.platform import stack, supervisor
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
        """The service if supervisord runs it (or restarts it) now; None when it must start."""
        service = self.services.get(name)
        if service is None or service.state not in supervisor.ALIVE:
            self.services.pop(name, None)
            return None
        self.status[name] = "already running"
        return service

    def start(
        self, name: str, command: list[str], url: str, port: int | None, **env: str
    ) -> Service:
        """Hand `command` to supervisord as `name` (after checking its port is free)."""
        if port is not None and not stack.port_free(port):
            raise RuntimeError(
                f"{name}: port {port} on {HOST} is taken by another program; stop it or "
                "choose another port in params.yaml"
            )
        log = self.params.home.logs / f"{name}.log"
        command = [str(part) for part in command]
        program = supervisor.Program(name, command, {**self.env, **env}, log, url, cwd=REPO)
        info = supervisor.start(self.params.home, program, base_env=self.env)
        service = Service(name, url, info["pid"], info["pid"], str(log), command, info["statename"])
        self.record(service, "started")
        return service

    def record(self, service: Service, status: str) -> None:
        self.services[service.name] = service
        self.status.setdefault(service.name, status)

    def fail(self, name: str, err: Exception) -> None:
        self.failed = True
        self.status[name] = "FAILED"
        console.print(f"[red]{name}: {err}[/red]")
