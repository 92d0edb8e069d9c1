"""Run dvc.yaml one stage at a time, so a scheduler can show, retry and log each stage.

`plan` lists the DVC stages to reproduce, in dependency order; `run_stage` reproduces one with
`dvc repro --single-item` in the workspace, so DVC alone decides whether it is up to date
(then it says "didn't change, skipping" and nothing runs). The whole list is what `dvc repro`
runs by hand: same commands, same outputs, same `dvc.lock`, same MLflow runs and registrations.
`registration` reads what a `register_<stage>` stage recorded. No Prefect here
(flows/lifecycle/loop.py
wraps each stage in a task).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.data.contract import STAGES
from pipelines.repro.guard import RUNNER_ENV, runner_token
from pipelines.repro.workspace import DvcWorkspace

DVC = str(Path(sys.executable).parent / "dvc")
RAN = "Running stage"
SKIPPED = "didn't change, skipping"


@dataclass(frozen=True)
class StageRun:
    """One `dvc repro --single-item`: whether the stage ran (else DVC found it up to date)."""

    stage: str
    ran: bool
    output: str
    seconds: float


def model_stage_of(dvc_stage: str) -> str | None:
    """The cascade stage a DVC stage belongs to (`train_topic` → 'topic'), None if shared."""
    suffix = dvc_stage.rsplit("_", 1)[-1]
    return suffix if "_" in dvc_stage and suffix in STAGES else None


def check_stages(stages: list[str] | None) -> list[str]:
    """The cascade stages to retrain, in cascade order; unknown names fail with the known ones."""
    if not stages:
        return list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    return [stage for stage in STAGES if stage in stages]


def plan(workspace: DvcWorkspace, stages: Sequence[str] = STAGES) -> list[str]:
    """The DVC stages to reproduce for `stages`, dependencies first.

    Every `*_<stage>` DVC stage of a selected cascade stage, and every shared stage (synth,
    intake, ..., evaluate_cascade) whose own upstream holds no unselected cascade stage.
    """
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(workspace.root)) as repo:
        graph = repo.index.graph  # edges: stage → the stages it depends on
        names = {node: node.name for node in graph.nodes}
        # dependencies first; among ready stages, cascade order (trigger's chain first)
        rank = {n: STAGES.index(model_stage_of(names[n]) or "tone") for n in graph.nodes}
        ready_first = nx.lexicographical_topological_sort(graph.reverse(), key=rank.__getitem__)
        order = [names[node] for node in ready_first]
        upstream = {names[n]: {names[d] for d in nx.descendants(graph, n)} for n in graph.nodes}

    def wanted(name: str) -> bool:
        owner = model_stage_of(name)
        return owner in stages if owner else True

    return [name for name in order if wanted(name) and all(map(wanted, upstream[name]))]


def run_stage(
    workspace: DvcWorkspace, stage: str, log: Callable[[str], None], timeout_s: float = 6 * 3600
) -> StageRun:
    """`dvc repro --single-item <stage>` in the workspace, each output line passed to `log`.

    Raises RuntimeError with the output's tail when DVC or the stage's command fails.
    """
    # its own process group, stopped as a whole below; its `casepilot` command stops that group
    # if this process is killed (pipelines/repro/guard.py)
    env = {**workspace.env(), RUNNER_ENV: runner_token()}
    process = subprocess.Popen(
        [DVC, "repro", "--single-item", stage], cwd=workspace.root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    started = time.perf_counter()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            log(lines[-1])
        code = process.wait(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):  # DVC and whatever its stage left running
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    output = "\n".join(lines)
    if code != 0:
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"DVC stage {stage!r} failed (exit {code}) in {workspace.root}:\n{tail}")
    return StageRun(stage, RAN in output, output, time.perf_counter() - started)


def record_path(workspace: DvcWorkspace, stage: str) -> Path:
    """The record `register_<stage>` writes (a dvc.yaml output)."""
    return workspace.home / "registered" / f"{stage}.json"


def registration(workspace: DvcWorkspace, stage: str) -> dict[str, Any]:
    """What `register_<stage>` registered: `{"version", "challenger", "gate_reasons", "name",
    "model_dir", "quantization", "data_version"}` from its record."""
    record = json.loads(record_path(workspace, stage).read_text(encoding="utf-8"))
    lineage = record.get("lineage", {})
    return {
        "version": str(record["version"]),
        "challenger": bool(record["gate"]["passed"]),
        "gate_reasons": list(record["gate"]["reasons"]),
        "name": record["name"],
        "model_dir": record.get("model_dir") or str(workspace.home / "models" / "cascade" / stage),
        "quantization": lineage.get("casepilot.quantization", "none"),
        "data_version": lineage.get("casepilot.data_version", "unknown"),
    }
