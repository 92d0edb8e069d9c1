"""`casepilot data import`: a table with a column mapping, or a known public dataset, to JSONL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from pipelines.data.contract import write_jsonl, write_parquet
from pipelines.data.importers import (
    DATASETS,
    DEFAULT_CREATED_AT,
    DataImportError,
    ImportResult,
    import_dataset,
    import_table,
    load_mapping,
    summarize,
)

console = Console()


def import_data(
    path: Path | None = typer.Argument(
        None, metavar="PATH", help="table to import (.csv .tsv .jsonl .parquet); needs --mapping"
    ),
    mapping: Path | None = typer.Option(None, "--mapping", "-m", help="YAML column mapping"),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help=f"known dataset instead of PATH: {', '.join(DATASETS)}"
    ),
    source: Path | None = typer.Option(None, "--source", "-s", help="the --dataset's folder"),
    split: list[str] | None = typer.Option(
        None,
        "--split",
        metavar="SPLIT",
        help="a split of the --dataset (repeat for more; default: all)",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="PATH: a .jsonl (or .parquet) file; --dataset: a folder"
    ),
    created_at: str = typer.Option(
        DEFAULT_CREATED_AT.isoformat(), "--created-at", help="ISO time for rows without one"
    ),
) -> None:
    """Import labeled cases (and help docs) into contract JSONL and print a summary.

    casepilot data import tickets.csv --mapping tickets.yaml --out cases.jsonl

    casepilot data import --dataset clinc150 --source ../shared/data/clinc150
    --split val --split oos_val --out data/clinc150-eval
    """
    try:
        when = datetime.fromisoformat(created_at)
    except ValueError as err:
        _fail(f"--created-at {created_at!r}: {err}; use an ISO time such as 2026-01-01T00:00Z")
    try:
        if (path is None) == (dataset is None):
            raise DataImportError(
                "give either PATH with --mapping, or --dataset with --source (exactly one)"
            )
        if dataset is not None:
            if mapping is not None:
                raise DataImportError("--mapping goes with PATH; a --dataset has its own mapping")
            result, written = _import_known(dataset, source, split, out, when)
        elif source or split:
            raise DataImportError("--source and --split go with --dataset, not with PATH")
        else:
            result, written = _import_file(path, mapping, out, when)
    except DataImportError as err:
        _fail(str(err))
    _print_summary(result, written)


def _fail(message: str) -> NoReturn:
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _import_file(
    path: Path, mapping: Path | None, out: Path, when: datetime
) -> tuple[ImportResult, list[Path]]:
    if mapping is None:
        raise DataImportError(f"importing {path} needs --mapping MAPPING.yaml (see README)")
    cases = import_table(path, load_mapping(mapping), created_at=when)
    write = write_parquet if out.suffix.lower() in (".parquet", ".pq") else write_jsonl
    write(cases, out)
    return ImportResult(cases), [out]


def _import_known(
    name: str, source: Path | None, splits: list[str] | None, out: Path, when: datetime
) -> tuple[ImportResult, list[Path]]:
    if source is None:
        raise DataImportError(f"--dataset {name} needs --source, the folder holding its files")
    if out.suffix.lower() in (".jsonl", ".parquet"):
        raise DataImportError(f"--out {out} looks like a file; --dataset writes into a folder")
    result = import_dataset(name, source, splits=splits, created_at=when)
    written = []
    for filename, records in (("cases.jsonl", result.cases), ("docs.jsonl", result.docs)):
        if records:
            write_jsonl(records, out / filename)
            written.append(out / filename)
    return result, written


def _print_summary(result: ImportResult, written: list[Path]) -> None:
    summary = summarize(result)
    table = Table(title="import summary", show_header=False)
    table.add_row("cases", f"{summary.cases:,}")
    table.add_row("docs", f"{summary.docs:,}")
    table.add_row("topics", f"{len(summary.topics):,}")
    table.add_row("answerable", f"{summary.answerable:,}")
    table.add_row("not answerable", f"{summary.not_answerable_share:.1%}")
    if summary.unanswerable_kinds:
        kinds = ", ".join(f"{k} {n:,}" for k, n in summary.unanswerable_kinds.most_common())
        table.add_row("  by kind", kinds)
    if summary.topics:
        top = ", ".join(f"{t} {n:,}" for t, n in summary.topics.most_common(3))
        table.add_row("top topics", top)
    table.add_row("label source", ", ".join(sorted(summary.label_sources)) or "—")
    table.add_row("written", "\n".join(map(str, written)) or "nothing (no records)")
    console.print(table)
