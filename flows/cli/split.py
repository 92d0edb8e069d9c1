"""`casepilot data split`: the fixed train/validation files every training stage reads.

A dvc stage of its own, so the split is decided once (`data.validation_share`, `data.split_seed`)
and every stage trains and evaluates on the same cases: changing the split reruns the stages,
changing one stage's params reruns only that stage.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def split(
    accepted: Path = typer.Option(
        ..., "--accepted", help="the accepted dataset folder (`casepilot data intake` output)"
    ),
    train: Path = typer.Option(..., "--train", help="training cases JSONL to write"),
    val: Path = typer.Option(..., "--val", help="validation cases JSONL to write"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Split the accepted cases into train and validation JSONL (seeded, stratified, stable)."""
    from flows.cli.main import params_or_exit
    from pipelines.data.contract import write_jsonl
    from pipelines.data.dataset import split_cases
    from pipelines.data.intake import load_accepted

    params = params_or_exit(params_file)
    cases = load_accepted(params, accepted_dir=accepted)
    parts = split_cases(cases, params.data.validation_share, params.data.split_seed)
    if not parts.train or not parts.val:
        console.print(
            f"[red]{accepted}: {len(cases)} cases give an empty train or validation side; "
            "accept more batches or change data.validation_share[/red]"
        )
        raise typer.Exit(2)
    for path, part in ((train, parts.train), (val, parts.val)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(part, path)
    table = Table(title=f"split of {accepted} (seed {params.data.split_seed})")
    for column in ("side", "cases", "answerable", "topics", "file"):
        table.add_column(column)
    for name, part, path in (("train", parts.train, train), ("val", parts.val, val)):
        answerable = Counter(case.answerable for case in part)[True]
        topics = len({case.topic for case in part if case.topic})
        table.add_row(name, str(len(part)), str(answerable), str(topics), str(path))
    console.print(table)
