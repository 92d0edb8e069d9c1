"""Quiet by default: libraries' warnings and load reports only with `--verbose` or in the log file.

The slow test runs a real `casepilot train topic` (a tiny BERT, two steps, MLflow on) as a
subprocess: importing torch, torchao, transformers, DeepSpeed and MLflow prints warnings and
load reports of theirs, which must stay off the console by default and come back with
`--verbose`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import TopicConfig
from pipelines.data.contract import write_jsonl
from pipelines.quiet import QUIET_ENV, VERBOSE_ENV, ConsoleRecords, quiet_environment
from tests.stages.classifier_kit import _tiny, _toy_cases, tiny_base  # noqa: F401

CASEPILOT = str(Path(sys.executable).with_name("casepilot"))
# what the libraries print on import and while training, on this CPU-only stack
NOISE = (
    "Failed to load",  # torchao's kernels built for other hardware
    "register_constant()",  # torch's pytree deprecation (W... torch/utils/_pytree.py)
    "Setting accelerator to CPU",  # DeepSpeed
    "Detected no triton",  # torchao
    "LOAD REPORT",  # transformers: "... newly initialized because missing from the checkpoint"
    "it/s]",  # a library's tqdm bar (transformers writing shards, MLflow artifacts)
    "Warning",
    "WARNING",
)


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "message", None, None)


def test_quiet_console_lets_by_only_the_projects_records_and_errors() -> None:
    quiet, verbose = ConsoleRecords(verbose=False), ConsoleRecords(verbose=True)
    assert not quiet.filter(_record("torchao", logging.WARNING))
    assert not quiet.filter(_record("py.warnings", logging.WARNING))
    assert quiet.filter(_record("mlflow.store", logging.ERROR))
    assert quiet.filter(_record("pipelines.data.intake.run", logging.WARNING))
    assert not quiet.filter(_record("pipelines.data.intake.run", logging.INFO))
    assert quiet.filter(_record("prefect.flow_runs", logging.INFO))  # a flow run's own log
    assert verbose.filter(_record("torchao", logging.WARNING))
    assert not verbose.filter(_record("httpx", logging.INFO))


def test_verbose_child_of_a_quiet_parent_gets_the_library_defaults_back() -> None:
    env = {"TORCH_LOGS": "+dynamo"}  # the user's own setting is kept either way
    quiet_environment(False, env)
    assert env["TORCH_LOGS"] == "+dynamo" and VERBOSE_ENV not in env
    assert env["TRANSFORMERS_VERBOSITY"] == QUIET_ENV["TRANSFORMERS_VERBOSITY"]
    quiet_environment(True, env)
    assert env == {"TORCH_LOGS": "+dynamo", VERBOSE_ENV: "1"}


def _train(args: list[str], work: Path, base: Path) -> tuple[str, Path]:
    """`casepilot [args] train topic` on the toy cases; its console output and its log file."""
    cases = work / "cases.jsonl"
    write_jsonl(_toy_cases(), cases)
    settings = _tiny(TopicConfig, base, max_steps=2).model_dump(exclude_defaults=True)
    (work / "params.yaml").write_text(yaml.safe_dump({"topic": settings}), encoding="utf-8")
    env = {**os.environ, "CASEPILOT_HOME": str(work / "home")}
    env.pop(VERBOSE_ENV, None)
    command = [CASEPILOT, *args, "train", "topic", "--cases", str(cases), "--val", str(cases)]
    command += ["--out", str(work / "model"), "--params", str(work / "params.yaml")]
    done = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "topic saved to" in output
    return output, work / "home" / "logs" / "casepilot.log"


@pytest.mark.slow
def test_training_prints_no_library_noise_unless_verbose(tiny_base: Path, tmp_path) -> None:  # noqa: F811
    (tmp_path / "quiet").mkdir()
    output, log_file = _train([], tmp_path / "quiet", tiny_base)
    assert [line for line in output.splitlines() if any(n in line for n in NOISE)] == []
    logged = log_file.read_text(encoding="utf-8")
    assert "WARNING torchao" in logged or "WARNING py.warnings" in logged, logged[-2000:]

    (tmp_path / "verbose").mkdir()
    output, _ = _train(["--verbose"], tmp_path / "verbose", tiny_base)
    assert [line for line in output.splitlines() if any(n in line for n in NOISE)] != []
