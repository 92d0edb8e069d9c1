"""Intake: pull unseen batches, validate each, accept (redacted) or quarantine (with an alert).

Crash safety: every output is written atomically before the ledger records it, and each run
starts by reconciling outputs the ledger does not know yet. So a run killed at any point and run
again loses nothing and duplicates nothing: a batch is pulled again only if its staged copy
never landed, and routed again only if neither its accepted file nor its quarantine folder did.

Retention (`pipelines.data.intake.retention`): each run ends by deleting the raw staged copies and
quarantine folders whose time is up; the ledger keeps their ids, so they are never pulled again.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import Params, SourceConfig
from pipelines.data.contract import LabeledCase
from pipelines.data.intake.checks import Embed
from pipelines.data.intake.ledger import BatchState, Ledger
from pipelines.data.intake.retention import audit_release, purge_raw
from pipelines.data.intake.sources import BatchReadError, read_rows, source_batches
from pipelines.data.intake.store import (
    IntakePaths,
    clear_tmp,
    read_meta,
    write_accepted,
    write_quarantine,
    write_rows,
)
from pipelines.data.intake.suite import ValidationSummary
from pipelines.data.intake.validate import Judge, make_judge, validate_rows
from pipelines.notify.alerts import Alert, send_alert

log = logging.getLogger("casepilot.intake")


class IntakeError(RuntimeError):
    """Intake cannot do what was asked; the message says what to do instead."""


@dataclass(frozen=True)
class BatchOutcome:
    """Where one batch went and why."""

    batch_id: str
    origin: str
    state: BatchState  # accepted, quarantined or released
    rows: int
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IntakeReport:
    """One intake run: batches pulled, where each went, files that could not be read."""

    pulled: list[str]
    outcomes: list[BatchOutcome]
    unreadable: list[str]


def run_intake(
    params: Params,
    *,
    source: SourceConfig | None = None,
    paths: IntakePaths | None = None,
    embed: Callable[[], Embed] | None = None,
) -> IntakeReport:
    """Pull every unseen batch from the source, then validate and route every staged batch."""
    paths = paths or IntakePaths.for_params(params)
    pulled, unreadable = pull(params, source=source, paths=paths)
    return IntakeReport(pulled, process_staged(params, paths=paths, embed=embed), unreadable)


def pull(
    params: Params, *, source: SourceConfig | None = None, paths: IntakePaths | None = None
) -> tuple[list[str], list[str]]:
    """Stage every batch the ledger has not seen; returns (staged ids, unreadable files)."""
    paths = paths or IntakePaths.for_params(params)
    ledger = reconcile(paths)
    purge_raw(params.data, paths, ledger)
    unreadable: list[str] = []

    def skip(path: Path, err: BatchReadError) -> None:
        unreadable.append(path.name)
        send_alert(Alert(kind="batch_unreadable", source="intake", summary=str(err)), params)

    staged = []
    for batch in source_batches(source or params.data.source, paths.data, on_error=skip):
        if ledger.get(batch.batch_id):
            continue
        target = paths.staged_file(batch.batch_id)
        if not target.exists():
            write_rows(paths, target, batch.rows)
        ledger.record(batch.batch_id, origin=batch.origin, state="staged", rows=len(batch.rows))
        staged.append(batch.batch_id)
        log.info("pulled batch %s (%s, %d rows)", batch.batch_id, batch.origin, len(batch.rows))
    ledger.close()
    return staged, unreadable


def process_staged(
    params: Params, *, paths: IntakePaths | None = None, embed: Callable[[], Embed] | None = None
) -> list[BatchOutcome]:
    """Validate every staged batch not yet routed; accept or quarantine it."""
    paths = paths or IntakePaths.for_params(params)
    ledger = reconcile(paths)
    pending = ledger.entries("staged")
    outcomes = []
    judge = make_judge(params, paths, embed) if pending else None
    for entry in pending:
        staged = paths.staged_file(entry.batch_id)
        if not staged.is_file():
            log.warning("batch %s: staged file %s is gone; pull it again", entry.batch_id, staged)
            continue
        rows = read_rows(staged)
        summary, html = validate_rows(rows, judge, batch_id=entry.batch_id, origin=entry.origin)
        outcomes.append(_route(rows, summary, html, judge, ledger, state_if_passed="accepted"))
    purge_raw(params.data, paths, ledger)
    ledger.close()
    return outcomes


def release(
    batch_id: str,
    params: Params,
    *,
    paths: IntakePaths | None = None,
    embed: Callable[[], Embed] | None = None,
) -> BatchOutcome:
    """Re-validate a quarantined batch (its `batch.jsonl`, maybe edited); accept it if it passes."""
    paths = paths or IntakePaths.for_params(params)
    folder = paths.quarantine / batch_id
    if not (folder / "batch.jsonl").is_file():
        raise IntakeError(
            f"no quarantined batch {batch_id!r}; `casepilot data quarantine list` shows the ids"
        )
    ledger = reconcile(paths)
    judge = make_judge(params, paths, embed)
    rows = read_rows(folder / "batch.jsonl")
    origin = read_meta(folder).get("origin", "quarantine")
    summary, html = validate_rows(rows, judge, batch_id=batch_id, origin=origin)
    outcome = _route(rows, summary, html, judge, ledger, state_if_passed="released")
    if outcome.state == "released":
        audit_release(paths, ledger, folder)
    purge_raw(params.data, paths, ledger)
    ledger.close()
    return outcome


def _route(
    rows: list[dict[str, Any]],
    summary: ValidationSummary,
    html: str,
    judge: Judge,
    ledger: Ledger,
    *,
    state_if_passed: BatchState,
) -> BatchOutcome:
    """Accepted: redact and write Parquet. Failed: quarantine folder + alert. Then the ledger."""
    from pipelines.data.redact import redact_cases

    batch_id, origin = summary.batch_id, summary.origin
    if summary.passed:
        cases, stats = redact_cases(
            [LabeledCase.model_validate(r) for r in rows], judge.params.data.pii
        )
        write_accepted(judge.paths, batch_id, cases)
        ledger.record(batch_id, origin=origin, state=state_if_passed, rows=len(cases))
        judge.accept(cases)
        log.info("accepted batch %s: %d cases, PII redacted %s", batch_id, len(cases), stats.counts)
        return BatchOutcome(batch_id, origin, state_if_passed, len(cases))
    meta = {
        "batch_id": batch_id,
        "origin": origin,
        "rows": len(rows),
        "failed": summary.failed,
        "quarantined_at": summary.validated_at,
    }
    files = {
        "summary.json": summary.to_json(),
        "report.html": html,
        "meta.json": json.dumps(meta, indent=2),
    }
    write_quarantine(judge.paths, batch_id, rows, files)
    # Alert before the ledger write: a crash in between re-alerts rather than never alerting.
    send_alert(
        Alert(
            kind="batch_quarantined",
            source="intake",
            summary=f"batch {batch_id} ({origin}) quarantined: {', '.join(summary.failed)}",
            details={"batch_id": batch_id, "origin": origin, "failed": summary.failed},
        ),
        judge.params,
    )
    ledger.record(
        batch_id, origin=origin, state="quarantined", rows=len(rows), failed=tuple(summary.failed)
    )
    return BatchOutcome(batch_id, origin, "quarantined", len(rows), list(summary.failed))


def reconcile(paths: IntakePaths) -> Ledger:
    """Open the ledger and record every output a killed run wrote but did not record."""
    import pyarrow.parquet as pq

    clear_tmp(paths)
    ledger = Ledger.at(paths.ledger)
    for path in sorted(paths.staging.glob("*.jsonl")) if paths.staging.is_dir() else []:
        if not ledger.get(path.stem):
            rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            ledger.record(path.stem, origin=f"staging:{path.name}", state="staged", rows=rows)
    for path in sorted(paths.accepted.glob("*.parquet")) if paths.accepted.is_dir() else []:
        entry = ledger.get(path.stem)
        if entry is None or entry.state in ("staged", "quarantined"):
            state = "released" if entry and entry.state == "quarantined" else "accepted"
            origin = entry.origin if entry else f"accepted:{path.name}"
            ledger.record(
                path.stem, origin=origin, state=state, rows=pq.read_metadata(path).num_rows
            )
            log.info("reconciled batch %s as %s", path.stem, state)
    for folder in sorted(paths.quarantine.iterdir()) if paths.quarantine.is_dir() else []:
        if paths.accepted_file(folder.name).exists():
            shutil.rmtree(folder)  # a release that was killed after accepting the batch
            continue
        entry, meta = ledger.get(folder.name), read_meta(folder)
        if meta and (entry is None or entry.state == "staged"):
            ledger.record(
                folder.name,
                origin=meta.get("origin", "quarantine"),
                state="quarantined",
                rows=int(meta.get("rows", 0)),
                failed=tuple(meta.get("failed", ())),
            )
            log.info("reconciled batch %s as quarantined", folder.name)
    return ledger
