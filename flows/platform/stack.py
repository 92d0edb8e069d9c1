"""The services `casepilot up` runs, as this home's supervisord reports them, and their checks.

supervisord (flows/platform/supervisor.py) is the one place that knows what runs: `read_state`
asks it. `launch`/`stop_group` start and stop a one-off process group outside the platform (a
test's Label Studio, an idle stand-in); a recorded group is signalled only while it is provably
ours: its leader still runs the recorded command line, or the leader is gone and members remain
(Linux hands out no pid equal to a live process group's id, so those members can only be the
leader's children).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.home import Home

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Service:
    """One running service: where it answers, its process (group) and its log."""

    name: str
    url: str
    pid: int
    pgid: int
    log: str
    cmdline: list[str]
    # supervisord's state name when read (STARTING, RUNNING, BACKOFF, EXITED, ...): a snapshot,
    # not part of which service this is
    state: str = field(default="RUNNING", compare=False)


def read_state(home: Home) -> dict[str, Service]:
    """What this home's supervisord runs (any state; see `is_running`), {} when it does not run."""
    from flows.platform import supervisor

    return {
        info["name"]: Service(
            name=info["name"],
            url=supervisor.program_url(home, info["name"]),
            pid=int(info["pid"]),
            pgid=int(info["pid"]),
            log=info["stdout_logfile"],
            cmdline=supervisor.program_command(home, info["name"]),
            state=info["statename"],
        )
        for info in supervisor.programs(home)
    }


def _cmdline(pid: int) -> list[str] | None:
    """The process's command line, None when it is gone (a zombie has an empty one)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_ours(service: Service) -> bool:
    """True when the recorded group still runs and is provably the one we started."""
    if not _group_exists(service.pgid):
        return False
    leader = _cmdline(service.pid)
    return leader is None or leader == service.cmdline


def is_running(service: Service) -> bool:
    """True when the service's main process still runs its recorded command."""
    from flows.platform.supervisor import ALIVE

    return service.state in ALIVE and _cmdline(service.pid) == service.cmdline


def launch(name: str, command: list[str], env: Mapping[str, str], log: Path, url: str,
           cwd: Path | None = None) -> Service:  # fmt: skip
    """Start `command` in a new process group, output appended to `log`; returns its record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    service = Service(name, url, process.pid, process.pid, str(log), [str(c) for c in command])
    wait_for_exec(process, service.cmdline)
    return service


def wait_for_exec(process: subprocess.Popen, cmdline: list[str], timeout_s: float = 10.0) -> None:
    """Wait until the child runs `cmdline` (between fork and exec /proc shows another one)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.02) + 1):
        if process.poll() is not None or _cmdline(process.pid) == cmdline:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def port_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str, *, data: bytes | None = None, timeout_s: float = 3.0) -> bytes | None:
    """The body of a 2xx answer from `url` (POST when `data`), else None."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read() if 200 <= response.status < 300 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_healthy(service: Service, check: Callable[[], bool], timeout_s: float,
                 poll_s: float = 0.5, home: Home | None = None) -> bool:  # fmt: skip
    """Poll `check` until it passes; raise with the log's tail if the process dies or stalls.

    With `home` the service is supervised: a crash it restarts from is waited through, and only
    supervisord giving up (FATAL) or stopping it counts as dead.
    """
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / poll_s) + 2):
        if not _alive(service, home):
            problem = "exited"
            break
        if check():
            return True
        if time.monotonic() > deadline:
            problem = f"was not healthy within {timeout_s:.0f}s"
            break
        time.sleep(poll_s)
    else:
        problem = "was not healthy in time"
    log = Path(service.log)
    tail = log.read_text(encoding="utf-8", errors="replace")[-1500:] if log.is_file() else ""
    raise RuntimeError(f"{service.name} ({service.url}) {problem}; last lines of {log}:\n{tail}")


def _alive(service: Service, home: Home | None) -> bool:
    if home is not None:
        from flows.platform.supervisor import ALIVE

        now = read_state(home).get(service.name)
        return now is not None and now.state in ALIVE
    with contextlib.suppress(ChildProcessError):  # reap our own exited child
        os.waitpid(service.pid, os.WNOHANG)
    return _cmdline(service.pid) == service.cmdline


def stop_groups(
    services: list[Service], *, timeout_s: float = 15.0, poll_s: float = 0.2
) -> dict[str, str]:
    """SIGTERM every service's group at once, SIGKILL what is left after `timeout_s`.

    Returns what happened to each (by name); groups that are not provably ours are left alone.
    """
    started = time.monotonic()
    outcome = {s.name: "not running" for s in services if not is_ours(s)}
    live = [s for s in services if s.name not in outcome]
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for service in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.pgid, sig)
        deadline = time.monotonic() + wait_s
        for _ in range(int(wait_s / poll_s) + 2):
            for service in live:
                with contextlib.suppress(ChildProcessError):  # reap our own children
                    os.waitpid(service.pid, os.WNOHANG)
            for service in [s for s in live if not _group_exists(s.pgid)]:
                how = "stopped" if sig == signal.SIGTERM else "killed (ignored SIGTERM)"
                outcome[service.name] = f"{how} in {time.monotonic() - started:.1f}s"
                live.remove(service)
            if not live or time.monotonic() > deadline:
                break
            time.sleep(poll_s)
    outcome.update({s.name: "STILL RUNNING" for s in live})
    return outcome


def stop_group(service: Service, *, timeout_s: float = 15.0) -> str:
    """Stop one service's group (see `stop_groups`); says what happened."""
    return stop_groups([service], timeout_s=timeout_s)[service.name]
