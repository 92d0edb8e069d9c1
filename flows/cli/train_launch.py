"""What every `casepilot train <stage>` shares: its params section, the DeepSpeed relaunch under
torchrun, the train/validation split, and the report of `pipelines.stages.runner.train_stage`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    """A stage's numeric metrics as a two-column Rich table."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            table.add_row(key, f"{value:.4f}")
    return table


def relaunch_if_deepspeed(
    stage: str,
    cfg: Any,
    launcher: str,
    params: Any,
    *,
    cases: Path,
    out: Path,
    params_file: Path,
    val: Path | None,
    mlflow: bool,
    extra: Sequence[str] = (),
    console: Console,
) -> None:
    """Raise `typer.Exit(torchrun's code)` after re-running under torchrun when DeepSpeed is on.

    Returns (doing nothing) when DeepSpeed is off, when `--launcher none` was given, or when this
    process already runs under a distributed launcher.
    """
    from pipelines.stages.training import relaunch_under_torchrun, under_distributed_launcher

    if not getattr(cfg, "deepspeed", None) or launcher == "none" or under_distributed_launcher():
        return
    argv = ["train", stage, "--cases", str(cases), "--out", str(out)]
    argv += ["--params", str(params_file), "--deepspeed", cfg.deepspeed, "--launcher", "none"]
    argv += (["--val", str(val)] if val else []) + list(extra)
    argv += [] if mlflow else ["--no-mlflow"]
    console.print(f"[cyan]DeepSpeed {cfg.deepspeed}: relaunching under torchrun[/cyan]")
    raise typer.Exit(relaunch_under_torchrun(argv, params.home))


def stage_config(params: Any, stage: str, deepspeed: str | None = None) -> Any:
    """The params section of `stage`, with `--deepspeed` applied when given."""
    cfg = getattr(params, stage)
    return cfg.model_copy(update={"deepspeed": deepspeed}) if deepspeed else cfg


def split_or_val(params: Any, cases: list, val: list | None) -> tuple[list, list]:
    """(train, validation): `val` when given, else a seeded split of `cases` (params.data)."""
    from pipelines.data.dataset import split_cases

    if val is not None:
        return cases, val
    split = split_cases(cases, params.data.validation_share, params.data.split_seed)
    return split.train, split.val


def train_and_report(
    stage: str, params: Any, cfg: Any, cases: tuple[list, list], out: Path, inputs: Any, *,
    mlflow: bool, console: Console, table: Callable[[str, dict[str, Any]], Any],
) -> None:  # fmt: skip
    """Train `stage` on (train, validation) `cases`, print its report, log it to MLflow."""
    from pipelines.stages.runner import log_training, train_stage

    train_cases, val_cases = cases
    console.print(f"{stage}: {len(train_cases)} training and {len(val_cases)} validation cases")
    trained = train_stage(stage, cfg, train_cases, val_cases, out, inputs, figures=mlflow)
    if trained.report is None:  # a non-zero distributed rank: rank 0 reports
        return
    console.print(table(trained.report.title, trained.report.metrics))
    if mlflow:
        run_id = log_training(params, trained, cfg.model_dump())
        console.print(f"MLflow run {run_id} in experiment casepilot-{stage}")
    console.print(f"[green]{stage} saved to {trained.model_dir}[/green]")
