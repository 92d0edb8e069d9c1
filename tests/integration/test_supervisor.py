"""The platform's one process supervisor: a real supervisord per home, restarts, stops, config."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from flows.platform import stack, supervisor
from pipelines.home import Home

pytestmark = pytest.mark.slow  # real supervisord daemons, a few seconds each
SCRIPT = "import os, signal; print(os.environ['GREETING'], flush=True); signal.pause()"
IDLE = [sys.executable, "-c", SCRIPT]


def _program(home: Home, name: str = "idle", **env: str) -> supervisor.Program:
    full = {**os.environ, "GREETING": "hello", **env}
    return supervisor.Program(name, IDLE, full, home.logs / f"{name}.log", "-", startsecs=1)


def _wait(predicate, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout_s:.0f}s")


def test_a_crashed_program_is_restarted_and_stop_removes_it_and_the_daemon(home: Home) -> None:
    info = supervisor.start(home, _program(home), base_env=dict(os.environ))
    assert supervisor.running(home) and info["pid"] > 0
    first = stack.read_state(home)["idle"]
    assert first.pid == first.pgid == info["pid"] and first.cmdline == IDLE
    assert os.getpgid(first.pid) == first.pid  # its own process group, stopped as one
    log = home.logs / "idle.log"
    # the program's own setting reached it through the config (not the daemon's environment)
    assert _wait(lambda: log.is_file() and "hello" in log.read_text())
    os.killpg(first.pgid, signal.SIGKILL)  # a crash

    def restarted() -> stack.Service | None:
        now = stack.read_state(home).get("idle")
        return now if now and now.pid not in (0, first.pid) and now.state == "RUNNING" else None

    again = _wait(restarted)
    assert stack.is_running(again)
    assert _wait(lambda: log.read_text().count("hello") == 2)  # the new process runs the same
    assert supervisor.stop(home, "idle") is True
    assert not supervisor.running(home)  # nothing left to supervise: the daemon is gone too
    assert not supervisor.program_file(home, "idle").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(again.pgid, 0)
    assert supervisor.stop(home, "idle") is False and supervisor.shutdown(home) == {}


def test_shutdown_stops_every_program_and_reports_each(home: Home) -> None:
    for name in ("one", "two"):
        supervisor.start(home, _program(home, name), base_env=dict(os.environ))
    pids = {name: s.pid for name, s in stack.read_state(home).items()}
    outcome = supervisor.shutdown(home)
    assert set(outcome) == {"one", "two"}
    assert all(what.startswith("stopped in ") for what in outcome.values()), outcome
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert stack.read_state(home) == {}


def test_program_config_escapes_values_and_holds_only_what_differs(tmp_path: Path) -> None:
    program = supervisor.Program(
        "x",
        ["run", "a b", "100%"],
        {"SAME": "1", "PCT": "5%", "QUOTE": 'say "hi"', "PATH": "/bin"},
        tmp_path / "x.log",
        "http://127.0.0.1:1",
    )
    text = supervisor.program_config(program, {"SAME": "1", "PATH": "/usr/bin"})
    assert "command = run 'a b' 100%%" in text
    assert 'environment = PATH="/bin",PCT="5%%",QUOTE=\'say "hi"\'' in text
    assert "SAME" not in text  # inherited from supervisord unchanged
    assert "autorestart = true" in text and "stopasgroup = true" in text
    assert "killasgroup = true" in text
    both = supervisor.Program("y", ["run"], {"BAD": "'\""}, tmp_path / "y.log", "-")
    with pytest.raises(ValueError, match="BAD holds quotes of both kinds"):
        supervisor.program_config(both, {})
    script = supervisor.Program("z", ["python", "-c", "a\nb"], {}, tmp_path / "z.log", "-")
    with pytest.raises(ValueError, match="z: a newline in its command line"):
        supervisor.program_config(script, {})


def test_a_long_home_gets_a_short_socket_path_and_a_failing_program_is_reported(
    tmp_path: Path,
) -> None:
    deep = Home(tmp_path / ("d" * 90) / "home").ensure()
    sock = supervisor.socket_path(deep)
    assert len(str(sock)) < 100 and str(sock) != str(deep.root / "run" / "supervisord.sock")
    env = dict(os.environ)
    failing = supervisor.Program(
        "broken", [sys.executable, "-c", "raise SystemExit(3)"], env, deep.logs / "b.log", "-"
    )
    try:
        supervisor.start(deep, failing, base_env=env)
        # it exits before `startsecs`: retried, then FATAL (supervisord gives up)
        assert _wait(lambda: stack.read_state(deep)["broken"].state == "FATAL", 60)
        assert not stack.is_running(stack.read_state(deep)["broken"])
        assert (deep.root / "run" / "supervisord.conf").is_file()
    finally:
        supervisor.shutdown(deep)
    assert not sock.exists() or not supervisor.running(deep)
