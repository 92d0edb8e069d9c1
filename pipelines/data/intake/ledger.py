"""The ledger of seen batches: one row per batch id with its state, in SQLite via SQLAlchemy.

States: `staged` (pulled, raw copy written), `accepted`, `quarantined`, `released` (accepted
after a fix), `expired` (quarantined, never released, purged after
`data.quarantine_retention_days`). A state is recorded only after the output it names exists,
so a crash between the two leaves an output the next run reconciles (see
`pipelines.data.intake.run.reconcile`). A batch id is the content hash of its rows, so a purged
batch
is still recognised (and not pulled again) when its source file is seen again.

The audit table records every deletion of raw data: when, which batch, what was deleted, its
sha256, row count and why. It never holds raw text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

BatchState = Literal["staged", "accepted", "quarantined", "released", "expired"]

_metadata = sa.MetaData()
_batches = sa.Table(
    "intake_batches",
    _metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("origin", sa.String(512), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("failed", sa.Text, nullable=False, default="[]"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
_audit = sa.Table(
    "intake_audit",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("batch_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("what", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class AuditLine:
    """One deletion of raw data: no text, only what identifies and counts it."""

    at: datetime
    batch_id: str
    action: str  # raw_deleted, quarantine_copy_deleted, quarantine_purged
    what: str  # the deleted path, relative to the data folder
    sha256: str
    rows: int
    reason: str


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows about one batch."""

    batch_id: str
    origin: str
    state: BatchState
    rows: int
    failed: tuple[str, ...]
    updated_at: datetime


class Ledger:
    """Read and record batch states; `url` is a SQLAlchemy URL (by default SQLite in the home)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        _metadata.create_all(self.engine)

    @classmethod
    def at(cls, path: Path) -> Ledger:
        """The SQLite ledger at `path` (its folder is created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}")

    def get(self, batch_id: str) -> LedgerEntry | None:
        """The entry of `batch_id`, or None when the batch was never seen."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(_batches).where(_batches.c.batch_id == batch_id)
            ).first()
        return _entry(row) if row else None

    def entries(self, state: BatchState | None = None) -> list[LedgerEntry]:
        """All entries (optionally only those in `state`), oldest first."""
        query = sa.select(_batches).order_by(_batches.c.updated_at, _batches.c.batch_id)
        if state:
            query = query.where(_batches.c.state == state)
        with self.engine.connect() as connection:
            return [_entry(row) for row in connection.execute(query)]

    def record(
        self,
        batch_id: str,
        *,
        origin: str,
        state: BatchState,
        rows: int,
        failed: tuple[str, ...] = (),
    ) -> None:
        """Insert or update the entry of `batch_id` (call only once its output exists)."""
        values = {
            "origin": origin,
            "state": state,
            "rows": rows,
            "failed": json.dumps(list(failed)),
            "updated_at": datetime.now(UTC),
        }
        with self.engine.begin() as connection:
            updated = connection.execute(
                sa.update(_batches).where(_batches.c.batch_id == batch_id).values(**values)
            ).rowcount
            if not updated:
                connection.execute(sa.insert(_batches).values(batch_id=batch_id, **values))

    def audit(self, line: AuditLine) -> None:
        """Append one audit line."""
        with self.engine.begin() as connection:
            connection.execute(sa.insert(_audit).values(**line.__dict__))

    def audit_lines(self) -> list[AuditLine]:
        """Every audit line, oldest first."""
        query = sa.select(*(c for c in _audit.c if c.name != "id")).order_by(_audit.c.id)
        with self.engine.connect() as connection:
            return [AuditLine(**row._asdict()) for row in connection.execute(query)]

    def close(self) -> None:
        self.engine.dispose()


def _entry(row: sa.Row) -> LedgerEntry:
    updated_at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return LedgerEntry(
        batch_id=row.batch_id,
        origin=row.origin,
        state=row.state,
        rows=row.rows,
        failed=tuple(json.loads(row.failed)),
        updated_at=updated_at,
    )
