"""The prediction log: every served request and the agent's feedback, through SQLAlchemy.

SQLite (WAL mode, busy timeout) by default, PostgreSQL by URL. `PredictionLog` writes and reads;
`monitoring.log.writer.BufferedPredictionWriter` batches the service's writes on a
background thread without losing a record under concurrency or on a graceful shutdown.

The service writes a request's row when the champion answers, with `shadow_status='pending'`
(`write(records, shadow_pending=True)`), and fills the shadow in later (`update_shadows`). Rows
still pending when a service starts are marked lost with the reason (`mark_pending_lost`). A
missing shadow is SQL NULL (not the JSON text 'null').
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from monitoring.log.tables import (
    SHADOW_LOST_ON_RESTART,
    SHADOW_PENDING,
    JsonColumn,
    ShadowUpdate,
    add_missing_columns,
    feedback,
    metadata,
    prediction_row,
    predictions,
    shadow_columns,
)
from pipelines.data.contract import Feedback, PredictionRecord

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Errors worth waiting out (server down, database locked); others mean a record is bad.
TRANSIENT_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, ConnectionError)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the monitor read while the service writes; the busy timeout rides out short locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class PredictionLog:
    """Reads and writes the prediction log at one SQLAlchemy URL (optionally in one schema)."""

    def __init__(self, engine: sa.Engine, schema: str | None = None) -> None:
        self.schema = schema
        # schema_translate_map puts the tables into `schema` without redefining them.
        self.engine = (
            engine.execution_options(schema_translate_map={None: schema}) if schema else engine
        )

    @classmethod
    def from_url(cls, url: str, *, schema: str | None = None) -> PredictionLog:
        """Open the log at `url`, creating its tables (and a SQLite file's folder) as needed."""
        parsed = sa.make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            in_memory = parsed.database in (None, "", ":memory:")
            if not in_memory:
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "check_same_thread": False,
            }
            if in_memory:
                kwargs["poolclass"] = sa.pool.StaticPool
        elif schema is not None and parsed.get_backend_name() != "postgresql":
            raise ValueError(f"schema={schema!r} is supported on PostgreSQL only, not {url!r}")
        engine = sa.create_engine(url, pool_pre_ping=True, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        prediction_log = cls(engine, schema=schema)
        prediction_log.create_tables()
        return prediction_log

    def create_tables(self) -> None:
        """Create the schema (if one was given) and the tables that do not exist yet."""
        try:
            with self.engine.begin() as conn:
                if self.schema:
                    conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                metadata.create_all(conn)
                add_missing_columns(conn, self.schema)
        except sa.exc.DBAPIError:
            # several service workers may start at once: fine if another one created them
            with self.engine.connect() as conn:
                existing = set(sa.inspect(conn).get_table_names(schema=self.schema))
            if not set(metadata.tables) <= existing:
                raise

    def _insert(self, table: sa.Table) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(table)
        if dialect == "postgresql":
            return postgresql.insert(table)
        return sa.insert(table)

    def write(self, records: Sequence[PredictionRecord], *, shadow_pending: bool = False) -> int:
        """Insert records in one transaction; returns how many were new (seen request_ids skip).

        `shadow_pending`: the shadow has not run yet (`shadow_status='pending'`); its result
        comes later through `update_shadows`.
        """
        if not records:
            return 0
        statement = self._insert(predictions)
        if hasattr(statement, "on_conflict_do_nothing"):
            # Idempotent, so a batch retried after an ambiguous failure never duplicates rows.
            statement = statement.on_conflict_do_nothing(index_elements=["request_id"])
        rows = [prediction_row(r, pending=shadow_pending) for r in records]
        with self.engine.begin() as conn:
            if self.engine.dialect.insert_executemany_returning:
                # executemany rowcount is unreliable across drivers; count the ids inserted
                return len(conn.execute(statement.returning(predictions.c.id), rows).all())
            return max(conn.execute(statement, rows).rowcount, 0)

    def update_shadows(self, updates: Sequence[ShadowUpdate]) -> int:
        """Add the shadow's results to logged rows in one transaction; returns rows changed."""
        if not updates:
            return 0
        statement = (
            sa.update(predictions)
            .where(predictions.c.request_id == sa.bindparam("rid"))
            .values(
                shadow=sa.bindparam("shadow", type_=JsonColumn),
                shadow_text=sa.bindparam("shadow_text"),
                shadow_stopped_at=sa.bindparam("shadow_stopped_at"),
                shadow_error=sa.bindparam("shadow_error"),
                shadow_status=sa.bindparam("shadow_status"),
            )
        )
        rows = [
            {
                "rid": u.request_id,
                **shadow_columns(u.suggestion),
                "shadow_error": u.error,
                "shadow_status": u.status,
            }
            for u in updates
        ]
        with self.engine.begin() as conn:
            result = conn.execute(statement, rows)
        return max(result.rowcount, 0)

    def mark_pending_lost(self, reason: str = SHADOW_LOST_ON_RESTART) -> int:
        """Rows whose shadow never finished (a crash) become `lost` with `reason`; the count."""
        statement = (
            sa.update(predictions)
            .where(predictions.c.shadow_status == SHADOW_PENDING)
            .values(shadow_status="lost", shadow_error=reason)
        )
        with self.engine.begin() as conn:
            return max(conn.execute(statement).rowcount, 0)

    def has_case(self, case_id: str) -> bool:
        """True when a prediction for `case_id` is in the log."""
        query = sa.select(predictions.c.id).where(predictions.c.case_id == case_id).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def feedback_for(self, case_id: str) -> list[dict[str, Any]]:
        """The feedback rows stored for `case_id`, oldest first."""
        query = (
            sa.select(feedback.c.sent_reply, feedback.c.used_suggestion)
            .where(feedback.c.case_id == case_id)
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def write_feedback(self, items: Feedback | Sequence[Feedback]) -> int:
        """Insert the agent's feedback (created_at defaults to now); returns the count written."""
        items = [items] if isinstance(items, Feedback) else list(items)
        if not items:
            return 0
        now = datetime.now(UTC)
        rows = [
            {
                "case_id": item.case_id,
                "sent_reply": item.sent_reply,
                "used_suggestion": item.used_suggestion,
                "created_at": item.created_at or now,
            }
            for item in items
        ]
        with self.engine.begin() as conn:
            conn.execute(sa.insert(feedback), rows)
        return len(rows)

    def window(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Return predictions in [since, until) with each case's latest feedback, oldest first.

        `limit` keeps the most recent rows. Feedback columns (`sent_reply`, `used_suggestion`,
        `feedback_at`) are null where the agent has not answered yet.
        """
        import pandas as pd

        latest = (
            sa.select(sa.func.max(feedback.c.id).label("id"))
            .group_by(feedback.c.case_id)
            .subquery("latest_feedback")
        )
        fb = sa.select(feedback).join(latest, feedback.c.id == latest.c.id).subquery("fb")
        columns = [c for c in predictions.c if c.name != "id"]
        query = (
            sa.select(
                *columns,
                fb.c.sent_reply,
                fb.c.used_suggestion,
                fb.c.created_at.label("feedback_at"),
            )
            .select_from(predictions.outerjoin(fb, fb.c.case_id == predictions.c.case_id))
            .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
        )
        if since is not None:
            query = query.where(predictions.c.created_at >= since)
        if until is not None:
            query = query.where(predictions.c.created_at < until)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            frame = pd.DataFrame(result.mappings().all(), columns=list(result.keys()))
        frame = frame.iloc[::-1].reset_index(drop=True)
        for column in ("created_at", "feedback_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def count(self) -> int:
        """Number of predictions in the log."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
