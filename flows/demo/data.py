"""Demo data steps: write the synthetic world, deliver days' labeled batches, sample traffic.

The world is written once under `<demo state>/data/world`; a day's labeled batch is delivered to
the intake folder only when the demo needs it (labels arrive after the traffic they describe),
and the `retrain` flow's intake validates, quarantines or redacts it as it would any batch.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.config import Params
from pipelines.data.contract import LabeledCase, read_jsonl

if TYPE_CHECKING:
    from pipelines.data.synth import WorldSummary


def world_dir(params: Params) -> Path:
    """Where the outside world keeps the whole synthetic world: `data.synth.days_root` (the demo
    sets it outside CASEPILOT_HOME), else `CASEPILOT_HOME/data/world`."""
    root = params.data.synth.days_root
    return params.home.data / root if root else params.home.data / "world"


def synthesize_world(params: Params, console: Console) -> WorldSummary:
    """Generate and write the synthetic world with a progress bar; returns its summary."""
    from pipelines.data.synth import generate_world, write_world

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
    summary = write_world(world, world_dir(params))
    # beside the accepted data, where intake (taxonomy) and retraining (help docs) look
    shutil.copyfile(world_dir(params) / "taxonomy.json", params.home.data / "taxonomy.json")
    shutil.copyfile(world_dir(params) / "docs.jsonl", params.home.data / "docs.jsonl")
    return summary


def day_file(params: Params, day: int) -> Path:
    return world_dir(params) / "batches" / f"day-{day:03d}.jsonl"


def deliver_days(params: Params, days: Sequence[int]) -> list[str]:
    """Copy these days' labeled batches into the intake folder; returns the file names."""
    incoming = params.home.data / params.data.source.path
    incoming.mkdir(parents=True, exist_ok=True)
    names = []
    for day in days:
        source = day_file(params, day)
        shutil.copyfile(source, incoming / source.name)
        names.append(source.name)
    return names


def traffic_sample(params: Params, day: int, size: int) -> list[LabeledCase]:
    """A stable sample of a day's cases in arrival order: the messages agents will see."""
    cases = read_jsonl(day_file(params, day), LabeledCase)
    if len(cases) > size:
        keep = set(random.Random(f"demo-traffic-{day}").sample(range(len(cases)), size))
        cases = [case for i, case in enumerate(cases) if i in keep]
    return cases


def truth(params: Params, days: Sequence[int]) -> dict[str, LabeledCase]:
    """The synthetic world's labeled cases of these days by case id: what reviewers know."""
    return {c.case_id: c for day in days for c in read_jsonl(day_file(params, day), LabeledCase)}
