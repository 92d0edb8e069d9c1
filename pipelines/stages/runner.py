"""Train or evaluate any stage by name, and log the run: what the CLI and DVC stages call.

Every step goes through the stage's `Stage` implementation (`pipelines.stages.registry`), so
these functions hold no per-stage branches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.stages.base import Evaluation, StageInputs
from pipelines.stages.registry import get_stage

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.data.contract import LabeledCase


@dataclass(frozen=True)
class TrainedStage:
    """A trained stage folder and its validation report (None on a non-main distributed rank)."""

    stage: str
    model_dir: Path
    report: Evaluation | None


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed (torchrun) launch."""
    return os.environ.get("RANK", "0") == "0"


def train_stage(
    stage: str,
    cfg: Any,
    train_cases: Sequence[LabeledCase],
    val_cases: Sequence[LabeledCase],
    out_dir: Path,
    inputs: StageInputs,
    *,
    figures: bool = False,
) -> TrainedStage:
    """Train `stage` with its params section `cfg` into `out_dir`, then report on validation."""
    impl = get_stage(stage)
    started = time.perf_counter()
    model_dir = Path(impl.train(cfg, train_cases, val_cases, Path(out_dir), inputs))
    seconds = time.perf_counter() - started
    if not is_main_process():
        return TrainedStage(stage, model_dir, None)
    report = impl.train_report(model_dir, train_cases, val_cases, inputs, figures=figures)
    report.metrics["wall_seconds"] = seconds
    return TrainedStage(stage, model_dir, report)


def evaluate_stage(
    stage: str,
    model_dir: Path,
    cases: Sequence[LabeledCase],
    inputs: StageInputs,
    *,
    figures: bool = False,
) -> Evaluation:
    """Load the stage folder `model_dir` and evaluate it on `cases`."""
    impl = get_stage(stage)
    model = impl.load(Path(model_dir), location=inputs.location)
    return impl.evaluate(model, cases, inputs, figures=figures)


def log_training(params: Params, trained: TrainedStage, logged_params: dict[str, Any]) -> str:
    """Log a training run to MLflow experiment `casepilot-<stage>`; returns the run id."""
    import mlflow

    from pipelines.registry.tracking import log_evaluation, mlflow_run

    report, stage = trained.report, trained.stage
    assert report is not None, "log from the main process only"
    with mlflow_run(params, f"casepilot-{stage}", f"train-{stage}") as run:
        metrics = {f"val_{k}": v for k, v in report.metrics.items()} | report.logged
        log_evaluation(metrics, report.figures or None, logged_params)
        mlflow.log_artifact(str(trained.model_dir / "stage.json"))
        mlflow.set_tags(
            {"casepilot.stage": stage, "casepilot.model_dir": str(trained.model_dir)} | report.tags
        )
        return run.info.run_id
