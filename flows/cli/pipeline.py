"""`casepilot pipeline workspace|repro`: dvc.yaml for the current CASEPILOT_HOME."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

pipeline_app = typer.Typer(
    help="dvc.yaml in the DVC workspace of CASEPILOT_HOME (pipelines/repro/workspace.py).",
    no_args_is_help=True,
)
console = Console()
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file the stages read")


def _workspace(params_file: Path):
    from flows.cli.main import params_or_exit
    from pipelines.repro.workspace import dvc_workspace

    params = params_or_exit(params_file)
    try:
        return dvc_workspace(params_file, params.home)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None


@pipeline_app.command("workspace")
def workspace(params_file: Path = PARAMS) -> None:
    """Print (creating on first use) the folder where `dvc repro` runs for this home."""
    print(_workspace(params_file).root)


@pipeline_app.command("repro")
def repro(
    stages: list[str] = typer.Argument(None, help="trigger, topic, retrieve, answer, tone"),
    params_file: Path = PARAMS,
) -> None:
    """Run the `retrain` flow's DVC stages here, without Prefect (same commands, same outputs)."""
    from pipelines.repro.run import check_stages, plan, run_stage

    ws = _workspace(params_file)
    try:
        selected = check_stages(stages)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    for stage in plan(ws, selected):
        done = run_stage(ws, stage, print)
        console.print(f"{stage}: {'ran' if done.ran else 'up to date'}")
