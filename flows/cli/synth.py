"""`casepilot data synth`: write the deterministic synthetic support world of Paylane."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pipelines.data.synth import WorldSummary, generate_world, write_world
from pipelines.data.synth.world import resolve_config


def synth(
    out: Path = typer.Option(..., "--out", "-o", help="folder to write the world into"),
    seed: int | None = typer.Option(None, "--seed", help="default: data.synth.seed"),
    days: int | None = typer.Option(
        None, "--days", help="simulated days (default: data.synth.days)"
    ),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Generate the synthetic support world (same seed, same bytes) and print its summary.

    casepilot data synth --out data/synth --seed 7 --days 14
    """
    from flows.cli.main import console, params_or_exit  # flows.cli.main imports this module's group

    params = params_or_exit(params_file)
    try:
        cfg = resolve_config(params.data.synth, seed=seed, days=days)
    except ValidationError as err:
        console.print(f"[red]--seed/--days: {err}[/red]")
        raise typer.Exit(2) from None
    columns = (TextColumn("simulating days"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("days", total=cfg.days)
            world = generate_world(cfg, on_day=lambda _day: progress.advance(task))
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    root = params.data.synth.days_root
    days_root = params.home.data / root if root else None  # an absolute path stays as it is
    console.print(summary_table(write_world(world, out, days_root)))


def summary_table(summary: WorldSummary) -> Table:
    """One row per simulated day and a total row."""
    drift = f", drift from day {summary.drift_day}" if summary.drift_day else ", no drift"
    about = f"seed {summary.seed}, {summary.topics} topics{drift}"
    table = Table(title=f"synthetic world: {summary.out} ({about})")
    headers = (
        "day",
        "cases",
        "answerable",
        "no answer",
        "follow-ups",
        "flipped",
        "PII",
        "new topic",
    )
    for header in headers:
        table.add_column(header, justify="right")
    fields = (
        "cases",
        "answerable",
        "not_answerable",
        "followups",
        "flipped",
        "pii_cases",
        "drift_topic_cases",
    )
    for counts in summary.per_day:
        table.add_row(str(counts.day), *(f"{getattr(counts, f):,}" for f in fields))
    totals = (f"{sum(getattr(c, f) for c in summary.per_day):,}" for f in fields)
    table.add_row("total", *totals, style="bold")
    return table
