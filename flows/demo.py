"""`casepilot demo`: the lifecycle on the embedded synthetic world, as far as it is built.

Today: synthesize the support world → deliver its daily batches to the intake folder → intake
(Great Expectations validation, quarantine, PII redaction) → a summary. Later issues add
training, registry, the shadow service and the monitors as further steps of the same list.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.config import Params


def run_demo(params: Params, console: Console) -> None:
    """Run every built step of the lifecycle on the synthetic world and print a summary."""
    started = time.perf_counter()
    home = params.home.ensure()
    console.rule("[bold]casepilot demo[/bold] — the lifecycle on the synthetic world")
    console.print(f"state folder (CASEPILOT_HOME): {home.root}")

    world_dir = home.data / "world"
    summary = synthesize_world(params, world_dir, console)
    delivered = deliver_batches(world_dir, home.data / params.data.source.path, home.data)
    console.print(f"delivered {delivered} daily batches to {home.data / params.data.source.path}")
    report = intake(params, console)

    table = Table(title="demo summary", show_lines=False)
    table.add_column("step")
    table.add_column("result")
    table.add_row(
        "synthetic world", f"{summary.cases:,} cases, {summary.topics} topics, {world_dir}"
    )
    states = Counter(outcome.state for outcome in report.outcomes)
    table.add_row(
        "intake", f"{len(report.pulled)} new batches pulled ({dict(states) or 'none new'})"
    )
    for outcome in report.outcomes:
        if outcome.state == "quarantined":
            table.add_row(f"  quarantined {outcome.origin}", ", ".join(outcome.failed))
    table.add_row("wall time", f"{time.perf_counter() - started:.0f} s")
    console.print(table)
    console.print("Next: `casepilot data quarantine list` shows why a batch was held back.")


def synthesize_world(params: Params, out: Path, console: Console):
    """Generate and write the synthetic world with a progress bar; returns its summary."""
    from pipelines.synth import generate_world, write_world

    cfg = params.data.synth
    columns = (
        TextColumn("synthesize world"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("days", total=cfg.days)
        world = generate_world(cfg, on_day=lambda _day: progress.advance(task))
    return write_world(world, out)


def deliver_batches(world_dir: Path, incoming: Path, data_dir: Path) -> int:
    """Copy the world's daily batches into the intake folder and its taxonomy beside the data."""
    incoming.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(world_dir / "taxonomy.json", data_dir / "taxonomy.json")
    batches = sorted((world_dir / "batches").glob("day-*.jsonl"))
    for batch in batches:
        shutil.copyfile(batch, incoming / batch.name)
    return len(batches)


def intake(params: Params, console: Console):
    """Pull, validate and route every new batch, with a spinner while it works."""
    from pipelines.intake.run import run_intake

    with console.status("intake: validating batches with Great Expectations, redacting PII …"):
        return run_intake(params)
