"""Where intake keeps things, written atomically: staging, accepted, quarantine, reports.

Layout under CASEPILOT_HOME/data: `staging/<id>.jsonl` (raw pulled batches), `accepted/<id>.parquet`
(redacted, the DVC-tracked dataset), `quarantine/<id>/` (raw batch + report + failed names),
`validation/<id>/` (summary.json + report.html), `ledger.db`. Every file is written to a temp
path on the same filesystem and moved into place with `os.replace`, so a reader (or a rerun
after a crash) sees a whole file or none. Raw data (staging, quarantine and the temp folder it
passes through) is private to the owner: files 0600, folders 0700, set before the move.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Params
from pipelines.data.contract import LabeledCase, read_parquet, write_parquet
from pipelines.data.intake.sources import canonical_row


@dataclass(frozen=True)
class IntakePaths:
    """The intake folders: defaults from `for_params`; the CLI may override staging and accepted."""

    data: Path
    staging: Path
    accepted: Path

    @classmethod
    def for_params(
        cls, params: Params, *, staging: Path | None = None, accepted: Path | None = None
    ) -> IntakePaths:
        data = params.home.data
        return cls(data, staging or data / "staging", accepted or data / "accepted")

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    @property
    def validation(self) -> Path:
        return self.data / "validation"

    @property
    def ledger(self) -> Path:
        return self.data / "ledger.db"

    @property
    def tmp(self) -> Path:
        return self.data / ".tmp"

    def staged_file(self, batch_id: str) -> Path:
        return self.staging / f"{batch_id}.jsonl"

    def accepted_file(self, batch_id: str) -> Path:
        return self.accepted / f"{batch_id}.parquet"


PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def holds_raw(paths: IntakePaths, target: Path) -> bool:
    """Whether `target` is raw (unredacted) data: under staging, quarantine or the temp folder."""
    return any(target.is_relative_to(folder) for folder in (paths.staging, paths.quarantine))


def make_private(path: Path) -> None:
    """Owner-only permissions on `path` and, for a folder, everything in it."""
    if path.is_dir():
        path.chmod(PRIVATE_DIR)
        for inner in path.rglob("*"):
            inner.chmod(PRIVATE_DIR if inner.is_dir() else PRIVATE_FILE)
    else:
        path.chmod(PRIVATE_FILE)


def private_dir(folder: Path) -> Path:
    """Create `folder` (and parents) and make `folder` itself 0700."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(PRIVATE_DIR)
    return folder


def atomic_write(paths: IntakePaths, target: Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` then move tmp onto `target` in one step; returns `target`."""
    private_dir(paths.tmp)
    raw = holds_raw(paths, target)
    if raw:
        for folder in (paths.staging, paths.quarantine):
            if target.is_relative_to(folder):
                private_dir(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.tmp / f"{uuid.uuid4().hex}{target.suffix}"
    try:
        write(tmp)
        if raw:
            make_private(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return target


def atomic_text(paths: IntakePaths, target: Path, text: str) -> Path:
    """Write `text` to `target` atomically."""
    return atomic_write(paths, target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_rows(paths: IntakePaths, target: Path, rows: list[dict[str, Any]]) -> Path:
    """Write raw rows as JSONL (one canonical row per line), atomically."""
    body = "".join(canonical_row(row) + "\n" for row in rows)
    return atomic_text(paths, target, body)


def write_accepted(paths: IntakePaths, batch_id: str, cases: list[LabeledCase]) -> Path:
    """Write an accepted (already redacted) batch as `accepted/<id>.parquet`, atomically."""
    return atomic_write(paths, paths.accepted_file(batch_id), lambda tmp: write_parquet(cases, tmp))


def write_quarantine(
    paths: IntakePaths, batch_id: str, rows: list[dict[str, Any]], files: dict[str, str]
) -> Path:
    """Write `quarantine/<id>/` (batch.jsonl + report files) as one atomic directory move."""
    target = paths.quarantine / batch_id

    def build(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "batch.jsonl").write_text(
            "".join(canonical_row(r) + "\n" for r in rows), encoding="utf-8"
        )
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")

    if target.exists():  # a failed release: refresh the reports, keep the (edited) batch file
        for name, text in files.items():
            atomic_text(paths, target / name, text)
        return target
    return atomic_write(paths, target, build)


def clear_tmp(paths: IntakePaths) -> None:
    """Remove temp files a killed run left behind (they were never moved into place)."""
    if paths.tmp.exists():
        shutil.rmtree(paths.tmp)


def load_accepted(params: Params, accepted_dir: Path | None = None) -> list[LabeledCase]:
    """Every accepted case, batch files in name order; quarantined data is never read."""
    folder = accepted_dir or IntakePaths.for_params(params).accepted
    if not folder.is_dir():
        return []
    return [
        case
        for path in sorted(folder.glob("*.parquet"))
        for case in read_parquet(path, LabeledCase)
    ]


def read_meta(folder: Path) -> dict[str, Any]:
    """The `meta.json` of a quarantine folder (empty when missing)."""
    meta = folder / "meta.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


@dataclass(frozen=True)
class QuarantinedBatch:
    """A batch held in quarantine: id, source, the expectations it failed, and when."""

    batch_id: str
    origin: str
    rows: int
    failed: list[str]
    quarantined_at: str
    folder: Path


def list_quarantine(params: Params, paths: IntakePaths | None = None) -> list[QuarantinedBatch]:
    """Every batch in quarantine, oldest first."""
    paths = paths or IntakePaths.for_params(params)
    held = []
    for folder in sorted(paths.quarantine.iterdir()) if paths.quarantine.is_dir() else []:
        meta = read_meta(folder)
        if meta:
            held.append(
                QuarantinedBatch(
                    batch_id=folder.name,
                    origin=meta.get("origin", "?"),
                    rows=int(meta.get("rows", 0)),
                    failed=list(meta.get("failed", [])),
                    quarantined_at=meta.get("quarantined_at", ""),
                    folder=folder,
                )
            )
    return sorted(held, key=lambda batch: batch.quarantined_at)
