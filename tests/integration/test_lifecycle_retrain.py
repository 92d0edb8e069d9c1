"""The Prefect `retrain` flow executes dvc.yaml: one task per DVC stage, DVC decides what runs.

On Prefect's test harness, a tiny synthetic world and a tiny BERT trigger (real DVC, real
MLflow SQLite store): the flow reproduces the trigger's DVC stages in the home's workspace and
registers a version whose `casepilot.data_version` is DVC's hash of the accepted data in that
workspace's dvc.lock (and dvc.lock is logged on the registration run); a hand-run `dvc repro`
in another home on the same data registers the same data version; a second flow run finds
every stage up to date (`Skipped`) except intake, which always looks for new batches; a changed
`trigger:` section that turns DeepSpeed ZeRO-2 on retrains (under torchrun, DeepSpeed's CPU
accelerator) and registers the trigger only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import SynthConfig
from pipelines.data.synth import generate_world
from pipelines.home import Home
from pipelines.registry.lineage import dvc_data_version
from pipelines.repro.workspace import dvc_workspace

TRIGGER_STAGES = [
    "synth", "intake", "validate", "split",
    "train_trigger", "quantize_trigger", "evaluate_trigger", "register_trigger",
]  # fmt: skip


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


def write_tiny_params(
    folder: Path, stages: tuple[str, ...] = ("trigger",), **sections: dict[str, Any]
) -> Path:
    """`folder/params.yaml`: a two-day world (the synth stage), no reference checks, and a tiny
    BERT (built in `folder/base`) for each classifier stage in `stages`; `sections` override
    (e.g. `topic={"max_steps": 200}`). benchmarks/retrain_resume.py runs the flow on it too."""
    from pipelines.stages.encoder.classifier import build_tiny_encoder

    world = generate_world(SynthConfig(cases_per_day=40), seed=7, days=2)
    words = " ".join(case.message for day in world.days for case in day.cases).split()
    base = build_tiny_encoder(folder / "base", words, hidden=16, layers=1)
    tiny = {"base_model": str(base), "max_steps": 2, "batch_size": 8, "torch_threads": 1}
    params: dict[str, Any] = {
        "data": {
            "source": {"path": "world/batches"},
            "synth": {"days": 2, "cases_per_day": 60, "drift_from_day": None},
            "validation": {"min_reference_cases": 1_000_000},  # no reference, no MiniLM
            "validation_share": 0.2,
        },
        **{stage: dict(tiny) for stage in stages},
        "quantize": {"method": "int8_dynamic", "latency_rounds": 1, "latency_batch": 8},
    }
    for section, values in sections.items():
        params[section] = {**params.get(section, {}), **values}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    """A two-day world (the synth stage), no reference checks, a tiny BERT trigger."""
    return write_tiny_params(tmp_path)


def _task_states(flow_run_id: Any, expected: set[str]) -> dict[str, str]:
    """Task run name → final state name; Prefect records them a moment after the flow returns."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            states = {run.name: run.state for run in runs if run.state}
            done = expected <= set(states) and all(s.is_final() for s in states.values())
            if done or time.monotonic() > deadline:
                return {name: state.name for name, state in states.items()}
            time.sleep(0.2)


def _mlflow_version(home: Path, name: str, version: str) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    found = client.get_model_version(name, version)
    return found, client


@pytest.mark.slow  # ~20 stage processes (each imports torch) plus a Prefect test server
@pytest.mark.timeout(2400)
def test_retrain_runs_dvc_stages_and_registers_dvcs_data_version(
    harness: None, tiny_params: Path, home: Home, tmp_path: Path
) -> None:
    from flows.lifecycle.loop import retrain

    first = retrain(str(tiny_params), ["trigger"], return_state=True)
    assert first.is_completed(), first.message
    result = first.result()
    assert result["ran"] == TRIGGER_STAGES and result["up_to_date"] == []
    lock = home.root / "pipeline" / "dvc.lock"
    data_version = dvc_data_version(lock)
    assert data_version and data_version.endswith(".dir") and result["data_version"] == data_version
    trigger = result["registered"]["trigger"]
    assert set(result["registered"]) == {"trigger"} and trigger["version"] == "1"
    assert trigger["quantization"] in ("int8_dynamic", "none")  # the gate chose one of them
    assert Path(trigger["model_dir"]) == home.root / "models" / "cascade" / "trigger"
    version, client = _mlflow_version(home.root, trigger["name"], "1")
    assert version.tags["casepilot.data_version"] == data_version
    assert version.tags["casepilot.git_commit"] != "unknown"
    logged = [a.path for a in client.list_artifacts(version.run_id, "lineage")]
    assert logged == ["lineage/dvc.lock"]
    states = _task_states(first.state_details.flow_run_id, set(TRIGGER_STAGES))
    assert {states[s] for s in TRIGGER_STAGES} == {"Completed"}, states

    # A hand-run `dvc repro` in another home's workspace, on the same data: same data version.
    other = dvc_workspace(tiny_params, Home(tmp_path / "other-home"))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "repro", "register_trigger"], cwd=other.root,
        env=other.env(), capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    record = json.loads((other.home / "registered" / "trigger.json").read_text())
    assert record["lineage"]["casepilot.data_version"] == other.data_version() == data_version

    # Again: DVC finds everything up to date; nothing new is registered.
    again = retrain(str(tiny_params), ["trigger"], return_state=True).result()
    assert again["registered"] == {} and again["ran"] == ["intake"]
    assert again["up_to_date"] == [s for s in TRIGGER_STAGES if s != "intake"]
    # A changed `trigger:` section, DeepSpeed ZeRO-2 on (a path inside the workspace, as on a
    # GPU box): the DVC stage relaunches `casepilot train` under torchrun (DeepSpeed's CPU
    # accelerator here), and the flow registers version 2 on the same data.
    raw = yaml.safe_load(tiny_params.read_text())
    raw["trigger"].update(learning_rate=1e-4, deepspeed="configs/deepspeed/zero2.json")
    tiny_params.write_text(yaml.safe_dump(raw))
    changed = retrain(str(tiny_params), ["trigger"], return_state=True)
    outcome = changed.result()
    assert outcome["ran"] == ["intake", *TRIGGER_STAGES[4:]]
    assert outcome["registered"]["trigger"]["version"] == "2"
    assert outcome["registered"]["trigger"]["data_version"] == data_version
    states = _task_states(changed.state_details.flow_run_id, set(TRIGGER_STAGES))
    assert states["split"] == "Skipped" and states["train_trigger"] == "Completed", states
    trained = json.loads((home.root / "models" / "trained" / "trigger" / "stage.json").read_text())
    assert trained["config"]["deepspeed"] == "configs/deepspeed/zero2.json", trained["config"]
    assert trained["metrics"]["train_steps"] == 2
    version, _ = _mlflow_version(home.root, trigger["name"], "2")
    assert version.tags["casepilot.data_version"] == data_version
