"""Batch sources: a folder of JSONL / CSV / Parquet files, or a SQL query; each batch hashed.

A batch is a list of raw rows (dicts), kept as they came: validation judges them, so nothing is
coerced into the contract here. Only the untyped formats get their obvious types back (CSV and
SQL have no booleans or lists: "true" / 1 → True, a JSON array string in `context` → list).
A batch's identity is the sha256 of its canonical serialisation (rows as sorted-key JSON,
sorted), so the same content is the same batch whatever its file name or row order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pipelines.config import SourceConfig

BATCH_SUFFIXES = (".jsonl", ".csv", ".parquet")
_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f"}


class BatchReadError(ValueError):
    """A batch file cannot be parsed at all; names the file, the line and the fix."""


OnError = Callable[[Path, BatchReadError], None]


@dataclass(frozen=True)
class RawBatch:
    """One pulled batch: its content id, where it came from, and its raw rows."""

    batch_id: str
    origin: str
    rows: list[dict[str, Any]]


def json_default(value: Any) -> Any:
    """JSON encoder fallback: timestamps as ISO 8601, anything else as its string."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def canonical_row(row: dict[str, Any]) -> str:
    """One row as compact sorted-key JSON (the unit of the batch hash and of staging files)."""
    return json.dumps(
        row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=json_default
    )


def batch_id_of(rows: list[dict[str, Any]]) -> str:
    """The content id of a batch: sha256 over its sorted canonical rows, 16 hex characters."""
    digest = hashlib.sha256("\n".join(sorted(canonical_row(row) for row in rows)).encode())
    return digest.hexdigest()[:16]


def make_batch(rows: list[dict[str, Any]], origin: str) -> RawBatch:
    """Wrap raw rows as a batch, JSON-normalised so a staged copy hashes the same."""
    rows = [json.loads(canonical_row(row)) for row in rows]
    return RawBatch(batch_id_of(rows), origin, rows)


def coerce_row(row: dict[str, Any]) -> dict[str, Any]:
    """Give untyped values their obvious types; leave anything ambiguous for validation to flag."""
    out = {key: _null_if_missing(value) for key, value in row.items()}
    answerable = out.get("answerable")
    if isinstance(answerable, str) and answerable.strip().lower() in _TRUE | _FALSE:
        out["answerable"] = answerable.strip().lower() in _TRUE
    elif isinstance(answerable, int) and not isinstance(answerable, bool) and answerable in (0, 1):
        out["answerable"] = bool(answerable)
    context = out.get("context")
    if isinstance(context, str):
        try:
            parsed = json.loads(context)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            out["context"] = parsed
    confidence = out.get("label_confidence")
    if isinstance(confidence, str):
        with contextlib.suppress(ValueError):  # not a number: validation flags it
            out["label_confidence"] = float(confidence)
    return out


def _null_if_missing(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value == "":
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays / scalars
        return value.tolist()
    return value


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read the raw rows of one batch file (`.jsonl`, `.csv` or `.parquet`)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BatchReadError(
                    f"{path}:{number}: not JSON ({err}); fix the line or remove the file"
                ) from err
            if not isinstance(row, dict):
                raise BatchReadError(f"{path}:{number}: expected a JSON object per line")
            rows.append(row)
        return rows
    if path.suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return [coerce_row(row) for row in frame.to_dict(orient="records")]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [coerce_row(row) for row in pq.read_table(path).to_pylist()]
    raise BatchReadError(
        f"{path}: unsupported batch format; use one of {', '.join(BATCH_SUFFIXES)}"
    )


def folder_batches(folder: Path, on_error: OnError | None = None) -> Iterator[RawBatch]:
    """Yield one batch per batch file in `folder` (sorted by name); a missing folder yields none.

    A file that cannot be parsed raises, or goes to `on_error` and is skipped (retried next run).
    """
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in BATCH_SUFFIXES and not path.name.startswith("."):
            try:
                rows = read_rows(path)
            except BatchReadError as err:
                if on_error is None:
                    raise
                on_error(path, err)
                continue
            yield make_batch(rows, origin=f"folder:{path.name}")


def sql_batches(url: str, query: str, batch_column: str) -> Iterator[RawBatch]:
    """Run `query` and yield one batch per distinct value of `batch_column` (in value order)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            result = connection.execute(sa.text(query))
            columns = list(result.keys())
            if batch_column not in columns:
                raise BatchReadError(
                    f"data.source.batch_column {batch_column!r} is not a column of the query "
                    f"result ({', '.join(columns)}); select it or set batch_column"
                )
            groups: dict[Any, list[dict[str, Any]]] = {}
            for record in result.mappings():
                row = dict(record)
                groups.setdefault(row.pop(batch_column), []).append(coerce_row(row))
    finally:
        engine.dispose()
    for key in sorted(groups, key=str):
        yield make_batch(groups[key], origin=f"sql:{key}")


def source_batches(
    cfg: SourceConfig, data_dir: Path, on_error: OnError | None = None
) -> Iterator[RawBatch]:
    """Yield every batch the configured source holds (seen or not; the ledger decides)."""
    if cfg.kind == "sql":
        assert cfg.url and cfg.query  # checked by SourceConfig
        yield from sql_batches(cfg.url, cfg.query, cfg.batch_column)
    else:
        yield from folder_batches(resolve_under(data_dir, cfg.path), on_error)


def resolve_under(base: Path, path: str) -> Path:
    """`path` as given when absolute, else relative to `base`."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
