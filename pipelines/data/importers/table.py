"""The generic importer: a CSV / TSV / JSONL / Parquet table plus a `ColumnMapping` → LabeledCases.

Every error is a `DataImportError` that names the file (and row), the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipelines.data.contract import LabeledCase, Turn
from pipelines.data.importers.mapping import DEFAULT_CREATED_AT, ColumnMapping, DataImportError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet"}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def read_table(path: Path, file_format: str | None = None) -> pd.DataFrame:
    """Read a CSV / TSV / JSONL / Parquet file into a DataFrame; CSV cells stay strings."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataImportError(f"{path} not found; check the path")
    kind = file_format or FORMATS.get(path.suffix.lower())
    if kind not in set(FORMATS.values()):
        raise DataImportError(
            f"cannot tell the format of {path} (suffix {path.suffix!r}); use "
            f"{', '.join(FORMATS)} or pass the format explicitly (csv, tsv, jsonl, parquet)"
        )
    try:
        if kind in ("csv", "tsv"):
            sep = "," if kind == "csv" else "\t"
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[])
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataImportError(f"{path}: cannot read it as {kind} ({err}); fix the file") from err


def import_table(
    path: Path,
    mapping: ColumnMapping,
    *,
    created_at: datetime = DEFAULT_CREATED_AT,
    file_format: str | None = None,
) -> list[LabeledCase]:
    """Import one table file as LabeledCases according to `mapping`."""
    path = Path(path)
    frame = read_table(path, file_format)
    prefix = mapping.case_id_prefix or path.stem
    return cases_from_frame(
        frame, mapping, source=str(path), id_prefix=prefix, created_at=created_at
    )


def cases_from_frame(
    frame: pd.DataFrame,
    mapping: ColumnMapping,
    *,
    source: str,
    id_prefix: str,
    created_at: datetime = DEFAULT_CREATED_AT,
) -> list[LabeledCase]:
    """Turn the rows of a DataFrame into LabeledCases; `source` names the input in errors."""
    for field, column in mapping.columns().items():
        if column not in frame.columns:
            raise DataImportError(
                f"column '{column}' not found in {source}; columns are: "
                f"{', '.join(map(str, frame.columns))}; set mapping.{field}"
            )
    times = _created_at_column(frame, mapping, source)
    cases = []
    for row, record in enumerate(frame.to_dict("records"), start=1):
        where = f"{source} row {row}"
        message = clean_text(record[mapping.message_column])
        if message is None:
            if mapping.drop_empty_messages:
                continue
            raise DataImportError(
                f"{where}: message column '{mapping.message_column}' is empty; "
                "remove the row or set mapping.drop_empty_messages: true"
            )
        try:
            cases.append(
                LabeledCase(
                    case_id=_case_id(record, mapping, f"{id_prefix}-{row}", message, where),
                    created_at=times[row - 1] if times else created_at,
                    message=message,
                    context=_context(record, mapping.context_column, where),
                    agent_reply=_column_text(record, mapping.agent_reply_column),
                    label_source=mapping.label_source,
                    labeler=mapping.labeler,
                    **_labels(record, mapping, where),
                )
            )
        except ValidationError as err:
            raise DataImportError(f"{where}: not a valid LabeledCase: {err}") from err
    return cases


def _labels(record: dict[str, Any], mapping: ColumnMapping, where: str) -> dict[str, Any]:
    label = _column_text(record, mapping.topic_column)
    if label is not None and label in mapping.not_answerable_labels:
        return {"answerable": False, "topic": None, "unanswerable_kind": mapping.kind_of(label)}
    answerable = True
    if mapping.answerable_column:
        answerable = _flag(record[mapping.answerable_column], mapping.answerable_column, where)
    topic = mapping.topic_map.get(label, label) if label is not None else None
    return {"answerable": answerable, "topic": topic if answerable else None}


def _case_id(
    record: dict[str, Any], mapping: ColumnMapping, stem: str, message: str, where: str
) -> str:
    if mapping.case_id_column:
        given = clean_text(record[mapping.case_id_column])
        if given is None:
            raise DataImportError(
                f"{where}: case id column '{mapping.case_id_column}' is empty; fill it or "
                "drop mapping.case_id_column to get ids made from the content"
            )
        return given
    digest = hashlib.blake2b(message.encode("utf-8"), digest_size=5).hexdigest()
    return f"{stem}-{digest}"


def _created_at_column(frame: pd.DataFrame, mapping: ColumnMapping, source: str) -> list[datetime]:
    import pandas as pd

    column = mapping.created_at_column
    if not column:
        return []
    try:
        parsed = pd.to_datetime(frame[column], format=mapping.created_at_format, utc=True)
    except (ValueError, TypeError) as err:
        raise DataImportError(
            f"{source}: column '{column}' has a time that cannot be parsed ({err}); "
            "set mapping.created_at_format (strptime, e.g. '%a %b %d %H:%M:%S %z %Y')"
        ) from err
    missing = [row for row, value in enumerate(parsed, start=1) if pd.isna(value)]
    if missing:
        raise DataImportError(
            f"{source}: column '{column}' is empty in rows {missing[:5]}; fill those times "
            "or drop mapping.created_at_column to use the fixed created_at"
        )
    return [value.to_pydatetime() for value in parsed]


def _context(record: dict[str, Any], column: str | None, where: str) -> tuple[Turn, ...]:
    value = record[column] if column else None
    if _blank(value):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if hasattr(value, "tolist"):  # a numpy array from Parquet
        value = value.tolist()
    if not isinstance(value, list):
        raise DataImportError(
            f"{where}: context column '{column}' must hold a list of "
            '{"role": "customer"|"agent", "text": ...} turns (or that list as JSON)'
        )
    try:
        return tuple(Turn.model_validate(turn) for turn in value)
    except ValidationError as err:
        raise DataImportError(f"{where}: context column '{column}': {err}") from err


def _flag(value: Any, column: str, where: str) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise DataImportError(
        f"{where}: answerable column '{column}' holds {value!r}; use true/false, yes/no or 1/0"
    )


def _column_text(record: dict[str, Any], column: str | None) -> str | None:
    return clean_text(record[column]) if column else None


def clean_text(value: Any) -> str | None:
    """A cell as stripped text with \\n line ends, or None when it is empty or missing."""
    if _blank(value):
        return None
    text = str(value).replace("\r\n", "\n").strip()
    return text or None


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    return type(value).__name__ in ("NAType", "NaTType")
