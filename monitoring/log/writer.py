"""`BufferedPredictionWriter`: batches the service's prediction-log writes on a background thread.

No record is lost under concurrency or on a graceful shutdown: a full queue makes `submit` wait,
transient write failures are retried with backoff (tenacity), `close()` flushes and joins.

What it guarantees: `submit` returns a future that is resolved (True) only once the batch holding
the record is *committed* to the database, so a caller that waits for it before answering has a
durable record (group commit: concurrent requests share one transaction). Records are inserted
with `shadow_pending` as given at construction; `submit_shadow` adds the shadow's result to an
already-submitted row later (same queue, so it never lands before its row). A record still only
queued when the process is killed (not shut down) is lost, and its future was never resolved.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from monitoring.log.store import TRANSIENT_ERRORS, PredictionLog, ShadowUpdate
from pipelines.data.contract import PredictionRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterStats:
    """Counters of a `BufferedPredictionWriter`."""

    submitted: int
    written: int
    batches: int
    full_waits: int
    failed_flushes: int
    rejected: int  # records the database refused as invalid (logged in full, not retried)


_STOP = object()


class _Item(NamedTuple):
    """One queued write (a new row or a shadow update) and the future its submitter may await."""

    value: PredictionRecord | ShadowUpdate
    done: concurrent.futures.Future


def _resolve(future: concurrent.futures.Future, committed: bool) -> None:
    """Tell a waiting submitter; one that gave up (cancelled its future) is not told."""
    if future.set_running_or_notify_cancel():
        future.set_result(committed)


class WriterFull(RuntimeError):
    """The writer's queue stayed full past the submit timeout (the log is down or slow)."""


class BufferedPredictionWriter:
    """Batches `PredictionRecord`s onto a background thread that writes them to a `PredictionLog`.

    A full queue makes `submit` wait (counted in `full_waits`) rather than drop; a write that
    fails transiently is retried with backoff and the batch kept until it lands; a record the
    database refuses as invalid is logged in full and counted in `rejected`, so it cannot block
    the others. `close()` flushes and joins; the service must call it on shutdown.
    """

    def __init__(
        self,
        log: PredictionLog,
        max_batch: int = 64,
        flush_interval_s: float = 0.5,
        *,
        queue_size: int = 10_000,
        write_attempts: int = 5,
        shadow_pending: bool = False,
    ) -> None:
        if max_batch < 1 or flush_interval_s <= 0 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be >= 1 and flush_interval_s > 0")
        self.log = log
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self._write_attempts = write_attempts
        self.shadow_pending = shadow_pending
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._state = threading.Condition()
        self._closed = False
        self._inflight = 0
        self._submitted = self._written = self._batches = 0
        self._full_waits = self._failed_flushes = self._rejected = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def submit(
        self, record: PredictionRecord | ShadowUpdate, timeout: float | None = None
    ) -> concurrent.futures.Future:
        """Queue one record (or shadow update); the future resolves True once it is committed.

        Waits while the queue is full: forever by default, else `WriterFull` after `timeout`
        seconds (the record is then not queued). Raises RuntimeError once the writer is closed.
        """
        item = _Item(record, concurrent.futures.Future())
        with self._state:
            if self._closed:
                raise RuntimeError("BufferedPredictionWriter is closed; create a new one to write")
            self._inflight += 1
            self._submitted += 1
        try:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                with self._state:
                    self._full_waits += 1
                    self._state.notify_all()
                try:
                    self._queue.put(item, timeout=timeout)
                except queue.Full:
                    with self._state:
                        self._submitted -= 1
                    raise WriterFull(
                        f"prediction log writer queue full for {timeout:g} s (log down or slow)"
                    ) from None
        finally:
            with self._state:
                self._inflight -= 1
                self._state.notify_all()
        return item.done

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted so far is written; False if `timeout` ran out first."""
        with self._state:
            target = self._submitted
            done = lambda: self._written + self._rejected >= target  # noqa: E731
            return self._state.wait_for(done, timeout=timeout)

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        with self._state:
            return WriterStats(
                self._submitted,
                self._written,
                self._batches,
                self._full_waits,
                self._failed_flushes,
                self._rejected,
            )

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting records, write everything queued, and join the background thread."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            # submitters already past the closed check must land before the stop marker
            self._state.wait_for(lambda: self._inflight == 0)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"prediction log writer still flushing after {timeout}s")

    def __enter__(self) -> BufferedPredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_batch(self) -> tuple[list[_Item], bool]:
        """Collect up to max_batch records, waiting at most flush_interval_s after the first."""
        batch: list[_Item] = []
        first = self._queue.get()
        if first is _STOP:
            return batch, True
        batch.append(first)
        deadline = time.monotonic() + self.flush_interval_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if batch:
                self._write_until_done(batch)
        # After the stop marker only records submitted before close() remain; none can follow.
        rest = []
        while True:
            try:
                rest.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for start in range(0, len(rest), self.max_batch):
            self._write_until_done(rest[start : start + self.max_batch])

    def _write(self, batch: list[_Item]) -> None:
        """Insert the batch's new rows, then apply its shadow updates (rows first, always)."""
        records = [i.value for i in batch if isinstance(i.value, PredictionRecord)]
        updates = [i.value for i in batch if isinstance(i.value, ShadowUpdate)]
        self.log.write(records, shadow_pending=self.shadow_pending)
        self.log.update_shadows(updates)

    def _write_until_done(self, batch: list[_Item]) -> None:
        """Write a batch: transient errors retry until the log is back; bad records are rejected."""
        retrying = Retrying(
            stop=stop_after_attempt(self._write_attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            reraise=True,
        )
        while True:
            try:
                retrying(self._write, batch)
            except TRANSIENT_ERRORS as err:  # the log is down: keep the batch; queue pushes back
                # one line, the driver's reason only: SQLAlchemy's message would carry the rows
                reason = getattr(err, "orig", None) or type(err).__name__
                log.warning(
                    "prediction log write of %d records failed (%s); retrying", len(batch), reason
                )
                with self._state:
                    self._failed_flushes += 1
            except Exception as err:  # noqa: BLE001 - judged below, record by record
                problem = getattr(err, "orig", None) or type(err).__name__
                break
            else:
                for item in batch:
                    _resolve(item.done, True)
                self._count(written=len(batch))
                return
        # A permanent error (bad data): isolate the offending records so the rest still land.
        if len(batch) > 1:
            for record in batch:
                self._write_until_done([record])
            return
        rejected = batch[0].value
        log.error(  # one line, no row data (SQLAlchemy's message would carry it)
            "prediction log rejected record %s: %s", getattr(rejected, "request_id", "?"), problem
        )
        _resolve(batch[0].done, False)
        self._count(rejected=1)

    def _count(self, written: int = 0, rejected: int = 0) -> None:
        with self._state:
            self._written += written
            self._rejected += rejected
            self._batches += 1
            self._state.notify_all()
