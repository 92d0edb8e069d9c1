"""The one process supervisor of the local platform: a `supervisord` per CASEPILOT_HOME.

`casepilot up` (flows/platform/up.py) and `casepilot mlflow-server start` hand every service to
it as a program (`CASEPILOT_HOME/run/programs/<name>.conf`, 0600). supervisord is the one place
that knows what runs: it starts each program in a process group of its own, restarts one that
crashes (`autorestart`, with `startretries` for one that cannot start at all), stops the whole
group on `down` (`stopasgroup`/`killasgroup`) and answers `supervisorctl -c
CASEPILOT_HOME/run/supervisord.conf status`. It listens on a unix socket only (0700), never on
a TCP port.

Why supervisor: it daemonizes, restarts crashed programs and has an XML-RPC API; honcho neither
daemonizes nor restarts, and Prefect's serve/worker machinery runs flows, not an MLflow,
Evidently, Label Studio or BentoML server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import Faults, SupervisorTransport

from pipelines.home import Home

ALIVE = ("STARTING", "RUNNING", "BACKOFF")  # BACKOFF: restarting after an early exit
URL_TAG = "; casepilot-url = "


@dataclass(frozen=True)
class Program:
    """A service for supervisord: what it runs, where it logs, where it answers."""

    name: str
    command: list[str]
    env: Mapping[str, str]  # its whole environment; the config holds what differs from the daemon's
    log: Path
    url: str
    cwd: Path | None = None
    startsecs: int = 3  # up this long counts as started; an earlier exit is retried 3 times


def run_dir(home: Home) -> Path:
    return home.root / "run"


def config_file(home: Home) -> Path:
    return run_dir(home) / "supervisord.conf"


def program_file(home: Home, name: str) -> Path:
    return run_dir(home) / "programs" / f"{name}.conf"


def socket_path(home: Home) -> Path:
    """The control socket: under the home, or under the temp dir when that path is too long."""
    path = run_dir(home) / "supervisord.sock"
    if len(str(path)) <= 100:  # a unix socket path holds at most 107 bytes
        return path
    digest = hashlib.sha256(str(home.root.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"casepilot-{os.getuid()}-{digest}.sock"


def rpc(home: Home) -> Any:
    """supervisord's XML-RPC interface (`supervisor.*` methods) over the home's socket."""
    transport = SupervisorTransport(None, None, f"unix://{socket_path(home)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def running(home: Home) -> bool:
    """True when this home's supervisord answers."""
    if not socket_path(home).exists():
        return False
    try:
        return rpc(home).getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return False


def _escape(value: str) -> str:
    return str(value).replace("%", "%%")  # supervisor expands %(name)s in its values


def _quoted(key: str, value: str) -> str:
    quote = '"' if '"' not in value else "'"
    if quote in value or "\n" in value:
        raise ValueError(f"environment variable {key} holds quotes of both kinds or a newline; "
                         "supervisord cannot pass it on: change its value")  # fmt: skip
    return f"{key}={quote}{_escape(value)}{quote}"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def write_config(home: Home) -> Path:
    """supervisord's own config: unix socket (0700), log and pid file under the home."""
    run = run_dir(home)
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(run, 0o700)
    home.logs.mkdir(parents=True, exist_ok=True)
    sock = _escape(str(socket_path(home)))
    text = f"""[unix_http_server]
file = {sock}
chmod = 0700

[supervisord]
logfile = {_escape(str(home.logs / "supervisord.log"))}
logfile_maxbytes = 10MB
logfile_backups = 2
pidfile = {_escape(str(run / "supervisord.pid"))}
childlogdir = {_escape(str(home.logs))}
identifier = casepilot

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{sock}

[include]
files = programs/*.conf
"""
    _write_private(config_file(home), text)
    return config_file(home)


def ensure_running(home: Home, env: Mapping[str, str], timeout_s: float = 30.0) -> None:
    """Start this home's supervisord (it daemonizes) with `env` unless it already runs."""
    if running(home):
        return
    conf = write_config(home)
    program_file(home, "x").parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    daemon = Path(sys.executable).with_name("supervisord")
    done = subprocess.run([str(daemon), "-c", str(conf)], env=dict(env), capture_output=True,
                          text=True, timeout=timeout_s, cwd=run_dir(home))  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"supervisord did not start ({conf}): {done.stderr or done.stdout}")
    deadline = time.monotonic() + timeout_s
    while not running(home):
        if time.monotonic() > deadline:
            log = home.logs / "supervisord.log"
            raise RuntimeError(f"supervisord did not answer on {socket_path(home)} within "
                               f"{timeout_s:.0f}s; see {log}")  # fmt: skip
        time.sleep(0.1)


def _daemon_env(home: Home) -> dict[str, str]:
    """The environment supervisord runs with (each program inherits it), {} if unreadable."""
    try:
        pid = int(rpc(home).getPID())
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, ValueError, xmlrpc.client.Error):
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def program_config(program: Program, inherited: Mapping[str, str]) -> str:
    """The `[program:x]` section: restarted on a crash, stopped as a whole process group."""
    if any("\n" in str(part) for part in program.command):
        raise ValueError(f"{program.name}: a newline in its command line; supervisord's config "
                         "holds one line per command: pass the code through a file")  # fmt: skip
    env = {k: v for k, v in program.env.items() if inherited.get(k) != v}
    lines = [
        f"[program:{program.name}]",
        f"command = {_escape(shlex.join(map(str, program.command)))}",
        f"directory = {_escape(str(program.cwd or Path.cwd()))}",
        f"environment = {','.join(_quoted(k, v) for k, v in sorted(env.items()))}",
        f"stdout_logfile = {_escape(str(program.log))}",
        "stdout_logfile_maxbytes = 50MB",
        "stdout_logfile_backups = 2",
        "redirect_stderr = true",
        "autostart = false",  # started by `start` below, so a config reload never starts it
        "autorestart = true",
        f"startsecs = {program.startsecs}",
        "startretries = 3",
        "stopsignal = TERM",
        "stopwaitsecs = 15",
        "stopasgroup = true",
        "killasgroup = true",
        f"{URL_TAG}{program.url}",
    ]
    return "\n".join(lines) + "\n"


def start(
    home: Home, program: Program, base_env: Mapping[str, str] | None = None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Hand `program` to this home's supervisord and start it; its process info (with pid).

    A supervisord not running yet starts with `base_env` (default: the program's), which every
    program inherits; a program's config holds only what differs from it.
    """
    ensure_running(home, program.env if base_env is None else base_env)
    program.log.parent.mkdir(parents=True, exist_ok=True)
    server = rpc(home)
    _write_private(program_file(home, program.name), program_config(program, _daemon_env(home)))
    added, changed, removed = server.reloadConfig()[0]
    if program.name in changed or program.name in removed:
        _remove(server, program.name)
    if program.name in added or program.name in changed:
        server.addProcessGroup(program.name)
    if server.getProcessInfo(program.name)["statename"] not in ALIVE:
        server.startProcess(program.name, False)
    deadline = time.monotonic() + timeout_s
    while (info := server.getProcessInfo(program.name))["pid"] <= 0:
        if info["statename"] == "FATAL" or time.monotonic() > deadline:
            raise RuntimeError(f"{program.name} did not start: {info['description']}; "
                               f"see {program.log}")  # fmt: skip
        time.sleep(0.05)
    return info


def _remove(server: Any, name: str) -> dict[str, Any] | None:
    """Stop (the whole group) and forget one program; its last info, None if unknown."""
    try:
        info = server.getProcessInfo(name)
    except xmlrpc.client.Fault:
        return None
    if info["statename"] in ALIVE:
        with contextlib.suppress(xmlrpc.client.Fault):  # stopped meanwhile
            server.stopProcess(name, True)
    server.removeProcessGroup(name)
    return info


def programs(home: Home) -> list[dict[str, Any]]:
    """supervisord's info on every program (name, statename, pid, stdout_logfile, ...)."""
    if not running(home):
        return []
    return list(rpc(home).getAllProcessInfo())


def program_url(home: Home, name: str) -> str:
    """The URL recorded with the program (its config's `casepilot-url` line), '' if none."""
    path = program_file(home, name)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    tagged = (line.removeprefix(URL_TAG) for line in text.splitlines() if line.startswith(URL_TAG))
    return next(tagged, "")


def program_command(home: Home, name: str) -> list[str]:
    path = program_file(home, name)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("command = ")), "command = ")
    return shlex.split(line.removeprefix("command = ").replace("%%", "%"))


def stop(home: Home, name: str) -> bool:
    """Stop and forget one program; shut supervisord down when none is left. True if it ran."""
    if not running(home):
        return False
    server = rpc(home)
    info = _remove(server, name)
    program_file(home, name).unlink(missing_ok=True)
    if not server.getAllProcessInfo():
        shutdown(home)
    return info is not None and info["statename"] in ALIVE


def shutdown(home: Home, timeout_s: float = 60.0) -> dict[str, str]:
    """Stop every program (each whole group), then supervisord itself; what happened to each."""
    if not running(home):
        return {}
    server = rpc(home)
    started = time.monotonic()
    before = {p["name"]: p for p in server.getAllProcessInfo()}
    outcome = {name: "not running" for name, p in before.items() if p["statename"] not in ALIVE}
    for result in server.stopAllProcesses(True):
        took = f"{time.monotonic() - started:.1f}s"
        outcome[result["name"]] = f"stopped in {took}" if result["status"] == Faults.SUCCESS else (
            f"stop failed: {result['description']}")  # fmt: skip
    pid = int(server.getPID())
    with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
        server.shutdown()
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    for name in before:
        program_file(home, name).unlink(missing_ok=True)
    return outcome
