"""DeepSpeed relaunch shared by `casepilot train <stage>`: re-run the command under torchrun."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console


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

    if not cfg.deepspeed or launcher == "none" or under_distributed_launcher():
        return
    argv = ["train", stage, "--cases", str(cases), "--out", str(out)]
    argv += ["--params", str(params_file), "--deepspeed", cfg.deepspeed, "--launcher", "none"]
    argv += (["--val", str(val)] if val else []) + list(extra)
    argv += [] if mlflow else ["--no-mlflow"]
    console.print(f"[cyan]DeepSpeed {cfg.deepspeed}: relaunching under torchrun[/cyan]")
    raise typer.Exit(relaunch_under_torchrun(argv, params.home))
