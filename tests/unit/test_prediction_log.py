"""The prediction log: round trips on SQLite and PostgreSQL, and the buffered writer under load."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitoring.log.store import PredictionLog
from monitoring.log.writer import BufferedPredictionWriter
from pipelines.data.contract import Feedback, PredictionRecord, Suggestion
from tests.conftest import postgres_url

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(i: int, *, case_id: str | None = None, shadow: bool = True, at=None) -> PredictionRecord:
    champion = Suggestion(
        text=f"Reply {i}" if i % 4 else None,
        stopped_at=None if i % 4 else "trigger",
        abstain_reason=None if i % 4 else "not answerable",
        topic="payouts" if i % 4 else None,
        scores={"trigger": 0.9, "topic": 0.8},
        versions={"trigger": "3", "topic": "5"},
        latency_ms=12.5,
    )
    challenger = (
        Suggestion(text=f"Shadow {i}", topic="payouts", latency_ms=20.0) if shadow else None
    )
    return PredictionRecord(
        request_id=f"req-{i}",
        case_id=case_id or f"case-{i}",
        created_at=at or T0 + timedelta(minutes=i),
        message=f"message {i} <PHONE>",
        champion=champion,
        shadow=challenger,
        shadow_error=None if shadow else "TimeoutError: shadow took > 5 s",
        latency_ms=15.0 + i,
    )


def _pg_engine_url() -> str:
    url = postgres_url()
    for candidate in (url, url.replace("postgres@", "root@", 1)):
        engine = sa.create_engine(candidate)
        try:
            with engine.connect():
                return candidate
        except sa.exc.OperationalError:
            continue
        finally:
            engine.dispose()
    pytest.skip("PostgreSQL on 127.0.0.1:5432 refused both users 'postgres' and 'root'")


@contextmanager
def postgres_log() -> Iterator[PredictionLog]:
    """A log in a schema of its own on the PostgreSQL server, dropped afterwards."""
    url = _pg_engine_url()
    schema = f"casepilot_test_{uuid.uuid4().hex[:12]}"
    log = PredictionLog.from_url(url, schema=schema)
    try:
        yield log
    finally:
        log.close()
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def prediction_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionLog]:
    if request.param == "postgres":
        with postgres_log() as log:
            yield log
        return
    log = PredictionLog.from_url(f"sqlite:///{tmp_path / 'logs' / 'predictions.db'}")
    yield log
    log.close()


def test_round_trip_records_and_feedback(prediction_log: PredictionLog) -> None:
    records = [record(i) for i in range(1, 6)] + [record(6, shadow=False)]
    assert prediction_log.write(records) == 6
    assert prediction_log.write(records[:2]) == 0  # same request ids: idempotent, no duplicates
    prediction_log.write_feedback(
        Feedback(case_id="case-1", sent_reply="old", used_suggestion=False)
    )
    prediction_log.write_feedback(
        [
            Feedback(case_id="case-1", sent_reply="Reply 1!", used_suggestion=True),
            Feedback(case_id="case-2", sent_reply="Other", used_suggestion=False, created_at=T0),
        ]
    )

    frame = prediction_log.window()
    assert list(frame["request_id"]) == [f"req-{i}" for i in range(1, 7)]  # oldest first
    first = frame.iloc[0]
    assert first["champion_text"] == "Reply 1"
    assert first["topic"] == "payouts"
    assert first["scores"] == {"trigger": 0.9, "topic": 0.8}
    assert first["versions"] == {"trigger": "3", "topic": "5"}
    assert first["shadow_text"] == "Shadow 1"
    assert first["shadow"]["text"] == "Shadow 1"
    assert first["sent_reply"] == "Reply 1!"  # the latest feedback for the case wins
    assert bool(first["used_suggestion"]) is True
    assert first["created_at"] == T0 + timedelta(minutes=1)
    assert str(frame["created_at"].dt.tz) == "UTC"
    abstained = frame.iloc[3]  # i=4: abstains at the trigger
    assert abstained["champion_text"] is None and abstained["stopped_at"] == "trigger"
    assert (
        PredictionRecord.model_validate(
            {
                "request_id": "x",
                "case_id": "case-4",
                "created_at": T0,
                "message": "m",
                "champion": abstained["champion"],
                "latency_ms": 1.0,
            }
        ).champion
        == records[3].champion
    )
    last = frame.iloc[-1]
    assert last["shadow"] is None and last["shadow_error"].startswith("TimeoutError")
    assert frame["sent_reply"].isna().sum() == 4


def test_window_since_until_limit(prediction_log: PredictionLog) -> None:
    prediction_log.write([record(i) for i in range(10)])
    since, until = T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)
    frame = prediction_log.window(since=since, until=until)
    assert list(frame["request_id"]) == ["req-3", "req-4", "req-5", "req-6"]
    assert list(prediction_log.window(limit=3)["request_id"]) == ["req-7", "req-8", "req-9"]
    naive = datetime(2026, 3, 1, 12, 8)  # naive means UTC, as in the contract
    assert list(prediction_log.window(since=naive)["request_id"]) == ["req-8", "req-9"]
    assert prediction_log.window(since=T0 + timedelta(days=1)).empty


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    log = PredictionLog.from_url(f"sqlite:///{tmp_path / 'p.db'}")
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    log.close()


def test_buffered_writer_loses_nothing_under_concurrency(prediction_log: PredictionLog) -> None:
    writer = BufferedPredictionWriter(
        prediction_log, max_batch=32, flush_interval_s=0.05, queue_size=64
    )
    start = threading.Barrier(8)

    def produce(thread: int) -> None:
        start.wait()
        for i in range(200):
            writer.submit(record(thread * 1000 + i, case_id=f"t{thread}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()

    frame = prediction_log.window()
    assert prediction_log.count() == 1600
    assert frame["request_id"].is_unique and len(frame) == 1600
    stats = writer.stats()
    assert stats.submitted == stats.written == 1600
    assert stats.batches < 1600  # it did batch
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(record(99_999))


class GatedLog(PredictionLog):
    """A real log whose writes wait for a gate, and whose first write fails once."""

    def __init__(self, inner: PredictionLog, fail_first: bool = False) -> None:
        super().__init__(inner.engine)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.fail_first = fail_first

    def write(self, records, **kw):
        self.entered.set()
        self.gate.wait()
        if self.fail_first:
            self.fail_first = False
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        return super().write(records, **kw)


def test_full_queue_waits_and_counts_instead_of_dropping(tmp_path: Path) -> None:
    log = GatedLog(PredictionLog.from_url(f"sqlite:///{tmp_path / 'p.db'}"))
    writer = BufferedPredictionWriter(log, max_batch=1, flush_interval_s=0.01, queue_size=2)
    writer.submit(record(0))
    assert log.entered.wait(5)  # the worker holds record 0 inside a blocked write
    writer.submit(record(1))
    writer.submit(record(2))  # the queue is now full
    blocked = threading.Thread(target=writer.submit, args=(record(3),))
    blocked.start()
    with writer._state:
        assert writer._state.wait_for(lambda: writer._full_waits == 1, timeout=5)
    assert blocked.is_alive()
    log.gate.set()
    blocked.join(5)
    assert writer.flush(timeout=10)
    writer.close()
    assert log.count() == 4 and writer.stats().full_waits == 1


def test_failed_write_is_retried_not_lost(tmp_path: Path) -> None:
    log = GatedLog(PredictionLog.from_url(f"sqlite:///{tmp_path / 'p.db'}"), fail_first=True)
    log.gate.set()
    with BufferedPredictionWriter(log, max_batch=10, flush_interval_s=0.01) as writer:
        for i in range(5):
            writer.submit(record(i))
    assert log.count() == 5
    assert not log.fail_first  # the failure really happened
    assert writer.stats().written == 5


class PoisonLog(PredictionLog):
    """A real log that refuses, as invalid data, any batch holding a 'POISON' message."""

    def __init__(self, inner: PredictionLog) -> None:
        super().__init__(inner.engine)

    def write(self, records, **kw):
        if any("POISON" in r.message for r in records):
            raise sa.exc.DataError("INSERT", {}, Exception("invalid byte sequence"))
        return super().write(records, **kw)


def test_an_invalid_record_is_rejected_without_blocking_the_rest(tmp_path: Path) -> None:
    log = PoisonLog(PredictionLog.from_url(f"sqlite:///{tmp_path / 'p.db'}"))
    bad = record(2).model_copy(update={"message": "POISON"})
    with BufferedPredictionWriter(log, max_batch=10, flush_interval_s=0.01) as writer:
        for rec in (record(0), record(1), bad, record(3)):
            writer.submit(rec)
        assert writer.flush(timeout=10)
    assert sorted(log.window()["request_id"]) == ["req-0", "req-1", "req-3"]
    assert writer.stats().rejected == 1 and writer.stats().written == 3


@pytest.mark.postgres
def test_postgres_refuses_nul_bytes_and_the_writer_carries_on() -> None:
    with postgres_log() as log:
        bad = record(1).model_copy(update={"message": "nul \x00 byte"})
        with BufferedPredictionWriter(log, max_batch=10, flush_interval_s=0.01) as writer:
            for rec in (record(0), bad, record(2)):
                writer.submit(rec)
        assert sorted(log.window()["request_id"]) == ["req-0", "req-2"]
        assert writer.stats().rejected == 1
