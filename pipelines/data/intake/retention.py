"""Retention of raw (unredacted) batches: staged copies and quarantine folders are deleted on time.

Raw rows hold the PII that redaction removes from the accepted data, so they are kept only as
long as something needs them:

- a staged batch (`staging/<id>.jsonl`) is deleted `data.raw_retention_days` after it was
  accepted or released (0: at once), and at once when it was quarantined (the quarantine
  folder holds the copy a person edits and releases);
- a quarantine folder is purged `data.quarantine_retention_days` after it was quarantined, and
  the batch becomes `expired` in the ledger.

Every deletion appends an audit line to the ledger (batch id = content hash, sha256 of the
deleted file, row count, the reason) and a log line; raw text is never written anywhere else.
The ledger still knows each batch id, so a deleted batch is never pulled or accepted again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.config import DataConfig
from pipelines.data.intake.ledger import AuditLine, Ledger, LedgerEntry
from pipelines.data.intake.store import IntakePaths, read_meta

log = logging.getLogger("casepilot.intake")
DONE_STATES = ("accepted", "released")


def purge_raw(
    cfg: DataConfig, paths: IntakePaths, ledger: Ledger, *, now: datetime | None = None
) -> list[AuditLine]:
    """Delete every raw staged batch and quarantine folder past its retention; returns the audit."""
    now = now or datetime.now(UTC)
    lines = [*_purge_staging(cfg, paths, ledger, now), *_purge_quarantine(cfg, paths, ledger, now)]
    for line in lines:
        ledger.audit(line)
        log.info("retention: %s %s (%s): %s", line.action, line.batch_id, line.what, line.reason)
    return lines


def audit_release(paths: IntakePaths, ledger: Ledger, folder: Path) -> AuditLine:
    """Delete a released batch's quarantine folder (its redacted copy is accepted) and audit it."""
    line = _delete(
        paths,
        folder,
        ledger.get(folder.name),
        "quarantine_released",
        "released: passed validation after a fix; the redacted copy is accepted",
        datetime.now(UTC),
    )
    ledger.audit(line)
    log.info("retention: %s %s (%s)", line.action, line.batch_id, line.what)
    return line


def _purge_staging(
    cfg: DataConfig, paths: IntakePaths, ledger: Ledger, now: datetime
) -> list[AuditLine]:
    lines = []
    keep = timedelta(days=cfg.raw_retention_days)
    for path in sorted(paths.staging.glob("*.jsonl")) if paths.staging.is_dir() else []:
        entry = ledger.get(path.stem)
        reason = _staged_reason(entry, paths, keep, now)
        if reason:
            lines.append(_delete(paths, path, entry, "raw_deleted", reason, now))
    return lines


def _staged_reason(
    entry: LedgerEntry | None, paths: IntakePaths, keep: timedelta, now: datetime
) -> str | None:
    """Why a staged file may go now, or None while it is still needed."""
    if entry is None or entry.state == "staged":
        return None  # not routed yet
    if entry.state in DONE_STATES and now - entry.updated_at >= keep:
        return f"{entry.state}; data.raw_retention_days={keep.total_seconds() / 86400:g} passed"
    if entry.state == "quarantined" and (paths.quarantine / entry.batch_id).is_dir():
        return "quarantined; the quarantine folder holds the copy to fix and release"
    if entry.state == "expired":
        return "expired in quarantine"
    return None


def _purge_quarantine(
    cfg: DataConfig, paths: IntakePaths, ledger: Ledger, now: datetime
) -> list[AuditLine]:
    lines = []
    keep = timedelta(days=cfg.quarantine_retention_days)
    for folder in sorted(paths.quarantine.iterdir()) if paths.quarantine.is_dir() else []:
        meta = read_meta(folder)
        since = _parse_time(meta.get("quarantined_at"))
        entry = ledger.get(folder.name)
        if since is None or now - since < keep or (entry and entry.state != "quarantined"):
            continue
        reason = (
            f"not released within data.quarantine_retention_days="
            f"{keep.total_seconds() / 86400:g}; failed: {', '.join(meta.get('failed', []))}"
        )
        lines.append(_delete(paths, folder, entry, "quarantine_purged", reason, now))
        ledger.record(
            folder.name,
            origin=entry.origin if entry else meta.get("origin", "quarantine"),
            state="expired",
            rows=int(meta.get("rows", 0)),
            failed=tuple(meta.get("failed", ())),
        )
    return lines


def _delete(
    paths: IntakePaths,
    target: Path,
    entry: LedgerEntry | None,
    action: str,
    reason: str,
    now: datetime,
) -> AuditLine:
    """Delete a raw file or folder; return its audit line (hash of the raw batch, no text)."""
    raw = target / "batch.jsonl" if target.is_dir() else target
    body = raw.read_bytes() if raw.is_file() else b""
    rows = sum(1 for line in body.splitlines() if line.strip())
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    return AuditLine(
        at=now,
        batch_id=target.name.removesuffix(".jsonl"),
        action=action,
        what=os.path.relpath(target, paths.data),
        sha256=hashlib.sha256(body).hexdigest(),
        rows=entry.rows if entry else rows,
        reason=reason,
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
