"""A `retrain` run SIGKILLed mid-training, then run again: what it redoes and the time saved.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/retrain_resume.py \
        [--stages trigger,topic] [--kill-at topic] [--kill-steps 200]

The real `retrain` flow (flows/lifecycle/loop.py) on a tiny world (the tiny BERT params of
tests/integration/test_lifecycle_retrain.py, for every classifier stage in `--stages`), each run a
`python` process of its own talking to one temporary `prefect server` on 127.0.0.1
(tests/prefect_server.py). Three runs:

1. `scratch`: a full run in a fresh home (the time a retrain takes without resuming);
2. `killed`: the same in a second fresh home, SIGKILLed (its whole process group) once the
   `train_<kill-at>` DVC stage is running and its trainer has written a first checkpoint into
   the stage's output folder (files appearing, not a sleep; the kill stage trains
   `--kill-steps` steps so there is a window to land in);
3. `resumed`: the flow again in the killed home.

Recorded: the stages in dvc.lock at the kill (finished), what the resumed run ran and skipped,
the wall times (resumed vs scratch), processes of the killed run still alive after the kill,
and the half-written output folder before and after the rerun. Writes
benchmarks/results/retrain-resume.json. A separate script rather than a `reliability.py`
probe: it starts no `bentoml serve`, and its world, Prefect server and homes share nothing with
the service probes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' helpers: tiny params, a temporary Prefect server
OUT = REPO / "benchmarks" / "results" / "retrain-resume.json"
FLOW = """
import json, sys
from flows.lifecycle.loop import retrain
result = retrain(sys.argv[1], sys.argv[2].split(","))
print("RESULT " + json.dumps(result))
"""


def _env(home: Path, api: str, work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CASEPILOT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(work / "prefect-client"),
        "HF_HUB_OFFLINE": "1",
    }


def _start(home: Path, api: str, work: Path, params: Path, stages: str) -> subprocess.Popen:
    log = (work / f"flow-{home.name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-c", FLOW, str(params), stages], cwd=REPO, env=_env(home, api, work),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _result(work: Path, home: Path) -> dict[str, Any]:
    text = (work / f"flow-{home.name}.log").read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1].removeprefix("RESULT ")) if lines else {}


def run_flow(home: Path, api: str, work: Path, params: Path, stages: str) -> dict[str, Any]:
    """One whole `retrain` run: wall time, the DVC stages it ran (with seconds) and skipped."""
    started = time.perf_counter()
    process = _start(home, api, work, params, stages)
    code = process.wait(timeout=3600)
    wall = time.perf_counter() - started
    result = _result(work, home)
    return {
        "exit": code,
        "wall_s": round(wall, 1),
        "ran": result.get("ran"),
        "skipped_up_to_date": result.get("up_to_date"),
        "stage_seconds": result.get("seconds"),
        "registered": {s: r["version"] for s, r in result.get("registered", {}).items()},
    }


def locked_stages(home: Path) -> list[str]:
    """The DVC stages recorded in the workspace's dvc.lock (finished at least once)."""
    lock = home / "pipeline" / "dvc.lock"
    if not lock.is_file():
        return []
    return list((yaml.safe_load(lock.read_text()) or {}).get("stages", {}))


def folder_state(folder: Path) -> dict[str, Any]:
    """What a stage's output folder holds: files (relative), a stage.json, checkpoints."""
    if not folder.exists():
        return {"exists": False}
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {
        "exists": True,
        "inode": folder.stat().st_ino,
        "has_stage_json": (folder / "stage.json").is_file(),
        "has_checkpoints": (folder / "checkpoints").exists(),
        "files": len(files),
        "sample": files[:8],
    }


def home_processes(home: Path) -> list[dict[str, Any]]:
    """Live processes whose environment has CASEPILOT_HOME=`home` (a killed run's leftovers)."""
    marker = f"CASEPILOT_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if marker in environ and state[0] != "Z":
            found.append({"pid": int(entry), "pgid": int(state[2]), "cmd": cmd[:160]})
    return found


def run_killed(
    home: Path, api: str, work: Path, params: Path, stages: str, kill_at: str, limit_s: float
) -> dict[str, Any]:
    """Start the flow; SIGKILL its process group once `train_<kill_at>` has a checkpoint."""
    out = home / "models" / "trained" / kill_at
    started = time.perf_counter()
    process = _start(home, api, work, params, stages)
    log = work / f"flow-{home.name}.log"
    running = f"Running stage 'train_{kill_at}'"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the flow ended ({process.returncode}) before the kill; see {log}")
        if time.perf_counter() - started > limit_s:
            os.killpg(process.pid, signal.SIGKILL)
            raise TimeoutError(f"train_{kill_at} did not checkpoint in {limit_s:g} s; see {log}")
        checkpoints = list((out / "checkpoints").glob("checkpoint-*"))
        if checkpoints and running in log.read_text(errors="replace"):
            break
        time.sleep(0.05)
    finished = locked_stages(home)
    before = folder_state(out)
    os.killpg(process.pid, signal.SIGKILL)
    killed_at = time.perf_counter() - started
    process.wait(30)
    time.sleep(2)
    left = home_processes(home)
    # a leftover finishes (or fails) on its own; wait for it, bounded, so the rerun is not racing it
    deadline = time.monotonic() + 600
    while home_processes(home) and time.monotonic() < deadline:
        time.sleep(1)
    still = home_processes(home)
    for group in {p["pgid"] for p in still}:  # ours: started by this run
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    return {
        "killed_after_s": round(killed_at, 1),
        "finished_before_kill": finished,
        "output_folder_at_kill": before,
        "processes_left_2s_after_kill": left,
        "leftovers_gone_within_s": (
            None if still else round(time.perf_counter() - started - killed_at, 1)
        ),
        "stages_in_lock_after_leftovers": locked_stages(home),
        "output_folder_before_rerun": folder_state(out),
    }


def flow_run_states(api: str, work: Path) -> list[dict[str, str]]:
    """Every flow run the Prefect server knows: name, state (a killed run is never marked)."""
    code = (
        "import json; from prefect import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(json.dumps([{'name': r.name, 'state': r.state.name if r.state else None,"
        " 'start': str(r.start_time)} for r in c.read_flow_runs()]))"
    )
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(work / "prefect-client")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="trigger,topic", help="classifier stages to retrain")
    parser.add_argument("--kill-at", default="topic", help="kill while train_<this> runs")
    parser.add_argument("--kill-steps", type=int, default=200, help="max_steps of that stage")
    parser.add_argument("--keep", type=Path, help="keep the homes and logs in this folder")
    args = parser.parse_args()
    from tests.integration.test_lifecycle_retrain import write_tiny_params
    from tests.prefect_server import prefect_server

    stages = tuple(args.stages.split(","))
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.keep.resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="retrain-resume-")))
        params = write_tiny_params(work, stages, **{args.kill_at: {"max_steps": args.kill_steps}})
        api = stack.enter_context(prefect_server(work / "prefect-server"))
        scratch = run_flow(work / "home-scratch", api, work, params, args.stages)
        killed = run_killed(
            work / "home-killed", api, work, params, args.stages, args.kill_at, limit_s=3600
        )
        resumed = run_flow(work / "home-killed", api, work, params, args.stages)
        out = work / "home-killed" / "models" / "trained" / args.kill_at
        resumed["output_folder_after"] = folder_state(out)
        states = flow_run_states(api, work)
    saved = scratch["wall_s"] - resumed["wall_s"]
    results = {
        "stages": args.stages,
        "kill_at": f"train_{args.kill_at}",
        "kill_stage_max_steps": args.kill_steps,
        "scratch": scratch,
        "killed": killed,
        "resumed": resumed,
        "rerun_after_kill": [
            s for s in resumed["ran"] or [] if s in killed["finished_before_kill"]
        ],
        "time_saved_s": round(saved, 1),
        "time_saved_share": round(saved / scratch["wall_s"], 3),
        "prefect_flow_runs": states,
        "uptime_before": load_before,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    print(json.dumps(results, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
