"""The `casepilot` command: thin Typer commands over `pipelines/`, `monitoring/` and the flows."""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads sleep instead of spinning while they wait. On a shared box
# spinning burnt ~4x the CPU per training step (benchmarks/RESULTS.md, Banking77); override to
# ACTIVE on a dedicated machine if you measure it faster there.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import typer
from rich.console import Console

from flows.cli.approve import approve
from flows.cli.cascade import predict
from flows.cli.data import data_app
from flows.cli.pii import pii_app
from flows.cli.pipeline import pipeline_app
from flows.cli.quantize import quantize
from flows.cli.registry import mlflow_server_app, promote, register, rollback
from flows.cli.scenarios import scenarios_app
from flows.cli.schedule import schedule
from flows.cli.serve import serve
from flows.cli.train import evaluate_app, train_app
from flows.platform.up import down, up
from pipelines.config import ConfigError, Params, load_params
from pipelines.quiet import configure_output

app = typer.Typer(
    help="casepilot: keep a support-reply copilot trained, safe and improving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(pii_app, name="pii")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
app.command("predict")(predict)
app.command("register")(register)
app.command("approve")(approve)
app.command("promote")(promote)
app.command("quantize")(quantize)
app.command("rollback")(rollback)
app.command("serve")(serve)
app.command("schedule")(schedule)
app.command("up")(up)
app.command("down")(down)
app.add_typer(mlflow_server_app, name="mlflow-server")
app.add_typer(scenarios_app, name="scenarios")
console = Console()


@app.callback()
def main_options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="show libraries' warnings, load reports and progress bars"
    ),
) -> None:
    """casepilot: keep a support-reply copilot trained, safe and improving."""
    # before any command imports torch, transformers, MLflow or Prefect; children inherit it
    configure_output(verbose or None)


def params_or_exit(path: Path) -> Params:
    """Load params.yaml, or print what is wrong with it and exit 2."""
    try:
        params = load_params(path)
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    params.home.apply()
    return params


@app.command("params")
def show_params(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Validate params.yaml and print the resolved configuration and endpoints."""
    params = params_or_exit(params_file)
    console.print_json(params.model_dump_json())
    console.print(f"CASEPILOT_HOME      {params.home.root}")
    console.print(f"MLflow tracking     {params.mlflow_tracking_uri}")
    console.print(f"Qdrant              {params.qdrant_location}")
    console.print(f"prediction log      {params.prediction_log_url}")
    console.print(f"Prefect API         {params.schedule.prefect_api_url or 'ephemeral'}")


@app.command()
def demo(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
    overlay: list[Path] = typer.Option(
        [], "--overlay", help="demo profile overlay(s) on params (default: configs/demo.yaml)"
    ),
) -> None:
    """Run the whole lifecycle demo on the synthetic world (state: $CASEPILOT_HOME/demo)."""
    from flows.demo.main import run_demo
    from flows.demo.params import DEMO_OVERLAY

    params_or_exit(params_file)  # a broken params.yaml fails here, with the key and the fix
    try:
        summary = run_demo(params_file, console, overlays=tuple(overlay) or (DEMO_OVERLAY,))
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    if any(step.status == "failed" for step in summary.steps):
        raise typer.Exit(1)


def main() -> None:
    from pipelines.repro.guard import exit_with_runner

    exit_with_runner()  # a DVC stage of a killed retrain stops with it
    app()


if __name__ == "__main__":
    main()
