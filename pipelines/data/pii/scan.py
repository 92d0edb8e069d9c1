"""Scan a CASEPILOT_HOME for PII left on disk: every text-like file, SQLite text, Parquet strings.

What is read, and how:

- SQLite databases (by header: the prediction log, mlflow.db, the intake ledger, Prefect's
  database, Qdrant's local storage): every TEXT value, and every BLOB's printable strings
  (Qdrant local mode keeps payloads as pickled blobs), per `table.column`;
- Parquet files: every string, per column;
- other files: UTF-8 text as is; binary files by their printable strings (like `strings`);
  base64 blobs inside text (Prefect's persisted results) are decoded and scanned too.

Folders named `quarantine` are skipped (raw data a person still has to decide on, kept under
`data.quarantine_retention_days`), and so are model weights (tensors hold no text) and files
larger than `max_bytes`; skipped files are listed in the report, never silently ignored.
Findings are counts per file, part and kind — the scan itself never prints or stores a value.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.pii.detectors import PlantedIndex, PlantedValue, detect

SKIP_DIRS = ("quarantine",)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx", ".gguf", ".ckpt", ".npy", ".npz")
MAX_BYTES = 256 * 1024 * 1024
CHUNK_CHARS = 1 << 20
_PRINTABLE = re.compile(rb"[\x20-\x7e\t]{6,}|(?:[\xc2-\xf4][\x80-\xbf]{1,3}|[\x20-\x7e]){6,}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{64,}={0,2}")


@dataclass(frozen=True)
class Finding:
    """PII in one file (and part of it: `table.column` in SQLite, a column in Parquet)."""

    path: str  # relative to the scanned root
    part: str
    kind: str  # card, iban, email, phone (detected) or the planted value's kind
    planted: bool  # an exact value the synthetic world planted, or a generic detection
    count: int


@dataclass(frozen=True)
class ScanReport:
    """What a scan read, what it found, and what it skipped and why."""

    root: Path
    files: int
    planted_known: int
    findings: tuple[Finding, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def planted_found(self) -> int:
        """Planted values found (a value found in two files counts twice)."""
        return sum(f.count for f in self.findings if f.planted)

    @property
    def detected(self) -> int:
        """Generic detections (cards, IBANs, e-mails, phones) found."""
        return sum(f.count for f in self.findings if not f.planted)

    @property
    def clean(self) -> bool:
        return not self.findings


def scan_home(
    root: Path,
    *,
    planted: Iterable[PlantedValue] = (),
    skip_dirs: Iterable[str] = SKIP_DIRS,
    max_bytes: int = MAX_BYTES,
) -> ScanReport:
    """Scan every file under `root` except `skip_dirs` folders; see the module docstring."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the CASEPILOT_HOME to scan (--home)")
    index = PlantedIndex(planted)
    findings: list[Finding] = []
    skipped: list[tuple[str, str]] = []
    files = 0
    for path in _walk(root, frozenset(skip_dirs)):
        relative = str(path.relative_to(root))
        reason = _skip_reason(path, max_bytes)
        if reason:
            skipped.append((relative, reason))
            continue
        files += 1
        try:
            for part, text in _texts(path):
                findings.extend(_findings(relative, part, text, index))
        except (OSError, sqlite3.Error, ValueError) as err:
            skipped.append((relative, f"unreadable: {type(err).__name__}: {err}"))
    return ScanReport(root, files, len(index), tuple(_merge(findings)), tuple(skipped))


def _walk(root: Path, skip_dirs: frozenset[str]) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _skip_reason(path: Path, max_bytes: int) -> str | None:
    if path.suffix in WEIGHT_SUFFIXES:
        return "model weights (tensors, no text)"
    size = path.stat().st_size
    if size > max_bytes:
        return f"{size} bytes, larger than max_bytes={max_bytes}"
    return None


def _texts(path: Path) -> Iterator[tuple[str, str]]:
    """(part, text) chunks of one file."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"SQLite format 3\x00"):
        yield from _sqlite_texts(path)
    elif head.startswith(b"PAR1"):
        yield from _parquet_texts(path)
    else:
        yield from _file_texts(path)


def _file_texts(path: Path) -> Iterator[tuple[str, str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        yield "", _strings(data)
        return
    yield "", text
    for blob in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            continue
        yield "base64", _strings(decoded)


def _strings(data: bytes) -> str:
    """The printable runs of binary data (ASCII or UTF-8), one per line."""
    return "\n".join(m.group().decode("utf-8", "ignore") for m in _PRINTABLE.finditer(data))


def _sqlite_texts(path: Path) -> Iterator[tuple[str, str]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from sqlite_master
            columns = [description[0] for description in cursor.description]
            while rows := cursor.fetchmany(2000):
                for i, column in enumerate(columns):
                    values = [_cell_text(row[i]) for row in rows]
                    text = "\n".join(value for value in values if value)
                    if text:
                        yield f"{table}.{column}", text
    finally:
        connection.close()


def _cell_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return _strings(value)
    return ""


def _parquet_texts(path: Path) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=2000):
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            text = "\n".join(_strings_in(column.to_pylist()))
            if text:
                yield name, text


def _strings_in(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _strings_in(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _strings_in(inner)


def _findings(path: str, part: str, text: str, index: PlantedIndex) -> Iterator[Finding]:
    for start in range(0, len(text), CHUNK_CHARS):
        # chunks overlap a little so a value on a chunk boundary is still seen whole
        chunk = text[max(0, start - 64) : start + CHUNK_CHARS]
        for kind, count in detect(chunk).items():
            yield Finding(path, part, kind, False, count)
        for value in index.find(chunk):
            yield Finding(path, part, value.kind, True, 1)


def _merge(findings: list[Finding]) -> list[Finding]:
    counts: Counter[tuple[str, str, str, bool]] = Counter()
    for f in findings:
        counts[(f.path, f.part, f.kind, f.planted)] += f.count
    return [Finding(*key, count) for key, count in sorted(counts.items())]
