"""`casepilot data intake` and `casepilot data quarantine list|release`: thin intake commands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from pipelines.config import Params, SourceConfig

quarantine_app = typer.Typer(
    help="Batches that failed validation: list, release.", no_args_is_help=True
)
console = Console()
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")


def _params(path: Path) -> Params:
    from flows.cli.main import params_or_exit  # flows.cli.main imports this module's registration

    return params_or_exit(path)


def _id_column(header: str) -> Column:
    """A column that never truncates: ids and file names are what people copy from the table."""
    return Column(header, no_wrap=True, overflow="fold", min_width=16)


def _source(params: Params, source: str | None) -> SourceConfig:
    """The configured source, or a folder / SQLAlchemy URL given on the command line."""
    cfg = params.data.source
    if source is None:
        return cfg
    if "://" in source:
        if not cfg.query:
            console.print("[red]--source is a SQL URL but data.source.query is not set[/red]")
            raise typer.Exit(2)
        return SourceConfig(kind="sql", url=source, query=cfg.query, batch_column=cfg.batch_column)
    return cfg.model_copy(update={"kind": "folder", "path": str(Path(source).resolve())})


def intake(
    source: str | None = typer.Option(
        None, "--source", help="a batch folder or a SQLAlchemy URL (default: data.source)"
    ),
    staging: Path | None = typer.Option(None, "--staging", help="where pulled batches are staged"),
    accepted: Path | None = typer.Option(None, "--accepted", help="the accepted dataset folder"),
    pull_only: bool = typer.Option(False, "--pull-only", help="only stage new batches"),
    validate_only: bool = typer.Option(False, "--validate-only", help="only route staged batches"),
    params_file: Path = PARAMS,
) -> None:
    """Pull every unseen batch, validate it, accept it (PII redacted) or quarantine it."""
    from pipelines.data.intake import IntakePaths, process_staged, pull

    params = _params(params_file)
    paths = IntakePaths.for_params(params, staging=staging, accepted=accepted)
    pulled, unreadable = [], []
    if not validate_only:
        pulled, unreadable = pull(params, source=_source(params, source), paths=paths)
    outcomes = [] if pull_only else process_staged(params, paths=paths)
    table = Table(_id_column("batch"), _id_column("source"), "rows", "state", "failed expectations")
    for outcome in outcomes:
        colour = "green" if outcome.state == "accepted" else "red"
        table.add_row(
            outcome.batch_id,
            outcome.origin,
            str(outcome.rows),
            f"[{colour}]{outcome.state}[/{colour}]",
            "\n".join(outcome.failed),
        )
    console.print(f"pulled {len(pulled)} new batch(es); routed {len(outcomes)}")
    if outcomes:
        console.print(table)
    for name in unreadable:
        console.print(f"[red]unreadable batch file skipped: {name} (see the alert log)[/red]")


@quarantine_app.command("list")
def quarantine_list(params_file: Path = PARAMS) -> None:
    """Show the batches held in quarantine and the expectations they failed."""
    from pipelines.data.intake import list_quarantine

    held = list_quarantine(_params(params_file))
    table = Table(
        _id_column("id"), _id_column("source file"), "rows", "failed expectations", "when"
    )
    for batch in held:
        table.add_row(
            batch.batch_id,
            batch.origin,
            str(batch.rows),
            "\n".join(batch.failed),
            batch.quarantined_at,
        )
    console.print(table if held else "quarantine is empty")


@quarantine_app.command("release")
def quarantine_release(
    batch_id: str = typer.Argument(..., help="id from `casepilot data quarantine list`"),
    params_file: Path = PARAMS,
) -> None:
    """Re-validate a quarantined batch (edit its batch.jsonl first); accept it only if it passes."""
    from pipelines.data.intake import IntakeError, release

    try:
        outcome = release(batch_id, _params(params_file))
    except IntakeError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    if outcome.state != "released":
        console.print(f"[red]batch {batch_id} still fails: {', '.join(outcome.failed)}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]batch {batch_id} passed and was accepted ({outcome.rows} cases)[/green]")
