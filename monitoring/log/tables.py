"""The prediction log's tables and row mapping (SQLAlchemy Core), shared by reader and writer.

`predictions` holds one row per served request: the champion's answer when it was served, the
shadow's filled in later (`shadow_status`: pending, then ok / skipped / error / timeout / shed /
paused / stopped, or lost when the service restarted first). `feedback` holds the agent's reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pipelines.data.contract import PredictionRecord, Suggestion


class UtcDateTime(sa.types.TypeDecorator):
    """A timestamp stored in UTC and read back timezone-aware, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL so scores and versions can be queried there; plain JSON text elsewhere.
# none_as_null: a missing value is SQL NULL, not the JSON text 'null'.
JsonColumn = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
SHADOW_PENDING = "pending"
SHADOW_LOST_ON_RESTART = "shadow_lost: service restarted before the shadow run finished"

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String, nullable=False, unique=True),
    sa.Column("case_id", sa.String, nullable=False, index=True),
    sa.Column("created_at", UtcDateTime, nullable=False, index=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("champion", JsonColumn, nullable=False),
    sa.Column("champion_text", sa.Text),
    sa.Column("stopped_at", sa.String),
    sa.Column("abstain_reason", sa.Text),
    sa.Column("topic", sa.String, index=True),
    sa.Column("scores", JsonColumn, nullable=False),
    sa.Column("versions", JsonColumn, nullable=False),
    sa.Column("shadow", JsonColumn),
    sa.Column("shadow_text", sa.Text),
    sa.Column("shadow_stopped_at", sa.String),
    sa.Column("shadow_error", sa.Text),
    sa.Column("latency_ms", sa.Float, nullable=False),
    # pending (champion logged, shadow not yet), ok, skipped, error, timeout, shed, paused,
    # stopped, lost; NULL on rows written before this column existed
    sa.Column("shadow_status", sa.String),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String, nullable=False, index=True),
    sa.Column("sent_reply", sa.Text, nullable=False),
    sa.Column("used_suggestion", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True)
class ShadowUpdate:
    """The shadow's result for a logged request: its suggestion, or why there is none."""

    request_id: str
    status: str
    suggestion: Suggestion | None = None
    error: str | None = None


def shadow_columns(shadow: Suggestion | None) -> dict[str, Any]:
    return {
        "shadow": shadow.model_dump(mode="json") if shadow else None,
        "shadow_text": shadow.text if shadow else None,
        "shadow_stopped_at": shadow.stopped_at if shadow else None,
    }


def prediction_row(record: PredictionRecord, *, pending: bool = False) -> dict[str, Any]:
    champion, shadow = record.champion, record.shadow
    if pending:
        status = SHADOW_PENDING
    else:
        status = "ok" if shadow else ("error" if record.shadow_error else None)
    return {
        "request_id": record.request_id,
        "case_id": record.case_id,
        "created_at": record.created_at,
        "message": record.message,
        "champion": champion.model_dump(mode="json"),
        "champion_text": champion.text,
        "stopped_at": champion.stopped_at,
        "abstain_reason": champion.abstain_reason,
        "topic": champion.topic,
        "scores": dict(champion.scores),
        "versions": dict(champion.versions),
        **shadow_columns(shadow),
        "shadow_error": record.shadow_error,
        "latency_ms": record.latency_ms,
        "shadow_status": status,
    }


def add_missing_columns(conn: sa.Connection, schema: str | None) -> None:
    """Add columns newer than an existing table (nullable ones only), so old logs keep working."""
    for table in metadata.sorted_tables:
        existing = {c["name"] for c in sa.inspect(conn).get_columns(table.name, schema=schema)}
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"prediction log table {table.name} lacks the required column {column.name}; "
                    "migrate it or point serve.prediction_log_url at a new database"
                )
            kind = column.type.compile(dialect=conn.dialect)
            name = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
            conn.execute(sa.text(f'ALTER TABLE {name} ADD COLUMN "{column.name}" {kind}'))
