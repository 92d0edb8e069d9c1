"""A DVC stage started by a retrain stops when that retrain is killed.

`pipelines.repro.run.run_stage` starts `dvc repro` in a process group of its own (so a timeout
stops the stage's whole tree) and names itself in `CASEPILOT_STAGE_RUNNER`. SIGKILL of the
retrain's process (or its group) does not reach that group: measured, `dvc repro` and
`casepilot train` kept training and writing the stage's output folder after the kill
(benchmarks/retrain_resume.py). Every `casepilot` command therefore calls `exit_with_runner`:
when the variable is set, a thread kills the command's process group (DVC and the stage) once
the runner is gone. A hand-run `dvc repro` has no runner, and nothing changes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

RUNNER_ENV = "CASEPILOT_STAGE_RUNNER"  # "<pid>:<start time>" of the process running the stage


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid apart), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if fields[0] != "Z" else None  # field 22 of proc(5); a zombie is gone


def runner_token(pid: int | None = None) -> str:
    """The `CASEPILOT_STAGE_RUNNER` value naming `pid` (default: this process)."""
    pid = pid or os.getpid()
    return f"{pid}:{start_time(pid)}"


def exit_with_runner(environ: Mapping[str, str] | None = None, poll_s: float = 1.0) -> bool:
    """Kill this process group once the stage's runner is gone; True when watching.

    Does nothing without `CASEPILOT_STAGE_RUNNER`, off Linux, when the runner it names is not
    running now (a stale value must not kill a shell's job; a retrain killed before its stage
    command started leaves that one command to finish), or when this process shares the
    runner's process group (killing the runner's group stops it already; killing ours would
    kill the runner's).
    """
    token = (os.environ if environ is None else environ).get(RUNNER_ENV, "")
    pid, _, started = token.partition(":")
    if not pid.isdigit() or start_time(int(pid)) != started:
        return False
    try:
        if os.getpgid(int(pid)) == os.getpgrp():
            return False
    except ProcessLookupError:
        return False

    def watch() -> None:
        while start_time(int(pid)) == started:
            time.sleep(poll_s)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="stage-runner-watch", daemon=True).start()
    return True
