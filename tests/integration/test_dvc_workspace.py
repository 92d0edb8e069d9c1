"""The DVC workspace of a home, and the DVC stages the `retrain` flow reproduces (real DVC)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.home import Home
from pipelines.repro.run import check_stages, model_stage_of, plan
from pipelines.repro.workspace import DVCIGNORE, dvc_workspace
from tests.conftest import REPO

SHARED = ["synth", "intake", "validate", "split"]
PER_STAGE = ("train", "quantize", "evaluate", "register")


def test_a_home_outside_the_clone_gets_a_no_scm_workspace_of_links(
    home: Home, tmp_path: Path
) -> None:
    params = tmp_path / "merged-params.yaml"
    params.write_text("trigger: {max_steps: 3}\n")  # sparse: the workspace fills in the rest
    ws = dvc_workspace(params, home)
    assert ws.root == home.root / "pipeline"
    assert (ws.root / "dvc.yaml").resolve() == REPO / "dvc.yaml"
    assert (ws.root / "pipelines").resolve() == REPO / "pipelines"
    assert (ws.root / "configs" / "deepspeed" / "zero2.json").is_file()  # <stage>.deepspeed paths
    written = yaml.safe_load((ws.root / "params.yaml").read_text())
    assert written["trigger"]["max_steps"] == 3 and written["data"]["pii"]["min_score"] == 0.35
    assert (ws.root / ".casepilot").resolve() == home.root
    assert (ws.root / ".dvcignore").read_text() == DVCIGNORE
    assert "no_scm = True" in (ws.root / ".dvc" / "config").read_text()
    other = tmp_path / "other-params.yaml"
    other.write_text("trigger: {max_steps: 5}\n")
    again = yaml.safe_load((dvc_workspace(other, home).root / "params.yaml").read_text())
    assert again["trigger"]["max_steps"] == 5
    env = ws.env({"PATH": "/usr/bin"})
    assert env["CASEPILOT_HOME"] == str(home.root)
    assert env["PATH"].startswith(str(Path(sys.executable).parent))
    # DVC itself sees the pipeline there (and does not loop through .casepilot → home)
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"],
        cwd=ws.root, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    assert "train_retrieve" in listed and "register_tone" in listed


def test_the_default_home_runs_in_the_clone_with_its_params_only(tmp_path: Path) -> None:
    default = Home((REPO / ".casepilot").resolve())
    ws = dvc_workspace(REPO / "params.yaml", default)
    assert ws.root == REPO and ws.lock == REPO / "dvc.lock"
    other = tmp_path / "params.yaml"
    other.write_text("{}\n")
    with pytest.raises(ValueError, match="set CASEPILOT_HOME"):
        dvc_workspace(other, default)


def test_bad_inputs_name_the_problem(home: Home, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="params file not found"):
        dvc_workspace(tmp_path / "missing.yaml", home)
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    (home.root / "pipeline").mkdir()
    (home.root / "pipeline" / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(FileExistsError, match="not a link"):
        dvc_workspace(params, home)
    with pytest.raises(ValueError, match="unknown stage"):
        check_stages(["topik"])


def test_the_plan_is_the_selected_stages_dependencies_first(home: Home, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    ws = dvc_workspace(params, home)
    one = plan(ws, ["topic"])
    assert one == SHARED + [f"{step}_topic" for step in PER_STAGE]
    everything = plan(ws, check_stages(None))
    assert everything[:4] == SHARED and len(everything) == 4 + 5 * 4 + 1
    assert everything[4:8] == [f"{step}_trigger" for step in PER_STAGE]  # cascade order
    assert everything.index("evaluate_cascade") > max(
        everything.index(f"quantize_{s}") for s in ("trigger", "topic", "retrieve", "answer")
    )
    for stage in ("trigger", "retrieve", "tone"):
        steps = [everything.index(f"{step}_{stage}") for step in PER_STAGE]
        assert steps == sorted(steps)
    assert model_stage_of("train_retrieve") == "retrieve" and model_stage_of("split") is None
    assert model_stage_of("evaluate_cascade") is None


def test_cli_prints_the_workspace_and_refuses_unknown_stages(home: Home, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli.main import app

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    shown = CliRunner().invoke(app, ["pipeline", "workspace", "--params", str(params)])
    assert shown.exit_code == 0 and shown.stdout.strip() == str(home.root / "pipeline")
    bad = CliRunner().invoke(app, ["pipeline", "repro", "topik", "--params", str(params)])
    assert bad.exit_code == 2 and "unknown stage" in bad.output
    missing = CliRunner().invoke(app, ["pipeline", "workspace", "--params", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "params file not found" in " ".join(missing.output.split())


def _group_alive(pgid: int) -> bool:
    """True while any live (not zombie) process is in process group `pgid`."""
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_stage_group_stops_once_the_retrain_running_it_is_killed(tmp_path: Path) -> None:
    """run_stage's DVC stage lives in a group of its own; SIGKILL of the retrain must end it."""
    import os
    import time

    from pipelines.repro.guard import RUNNER_ENV, exit_with_runner, runner_token

    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    stage_code = (
        "import subprocess, time\n"
        "from pipelines.repro.guard import exit_with_runner\n"
        "assert exit_with_runner(poll_s=0.1)\n"
        "subprocess.Popen(['sleep', '120'])  # what a stage command starts goes too\n"
        "print('training', flush=True)\n"
        "time.sleep(120)\n"
    )
    stage = subprocess.Popen(
        [sys.executable, "-c", stage_code], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, RUNNER_ENV: runner_token(runner.pid)}, start_new_session=True,
    )  # fmt: skip
    try:
        assert stage.stdout is not None and stage.stdout.readline().strip() == "training"
        time.sleep(0.5)
        assert stage.poll() is None  # the runner lives: the stage goes on
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 20
        while _group_alive(stage.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(stage.pid)
        assert stage.wait(5) == -9
    finally:
        for process in (runner, stage):
            process.kill()
            process.wait()
    # a hand-run `dvc repro` (no runner named), a runner in our own group, a stale runner
    assert not exit_with_runner({})
    assert not exit_with_runner({RUNNER_ENV: runner_token()})
    assert not exit_with_runner({RUNNER_ENV: f"{runner.pid}:{runner_token(os.getpid())[-6:]}"})
