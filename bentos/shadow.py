"""Shadow runs: the challenger scores the champion's input off the request path, bounded and timed.

`ShadowRunner.submit` never blocks and never raises: a full queue drops the shadow run (the
record is still written, with the reason). One dispatcher thread takes up to `max_batch` queued
jobs at a time and runs them on a low-priority model thread with a timeout; a run that crashes
or times out is reported through `on_done` with its reason and counted, never raised. A run that
hangs keeps its thread, so the runner moves on with a fresh one; past `max_hung` stuck threads
it pauses shadowing (jobs still complete, with the reason) until they return.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pipelines.contract import Suggestion, Turn

log = logging.getLogger(__name__)

Outcome = Literal["ok", "skipped", "error", "timeout", "dropped", "paused", "stopped"]
FAILURES: tuple[Outcome, ...] = ("error", "timeout", "dropped", "paused")
SHADOW_NICE = 10  # the challenger yields the CPU to the champion on a busy box


@dataclass(frozen=True)
class ShadowJob:
    """One served request, waiting for its shadow run before it is logged."""

    request_id: str
    case_id: str
    message: str
    context: tuple[Turn, ...]
    champion: Suggestion
    latency_ms: float
    created_at: datetime


@dataclass(frozen=True)
class ShadowResult:
    """A job's shadow outcome: the challenger's suggestion, or why there is none."""

    job: ShadowJob
    outcome: Outcome
    suggestion: Suggestion | None = None
    error: str | None = None


# run_batch returns one suggestion per job, or None where no challenger differs from the champion.
RunBatch = Callable[[Sequence[ShadowJob]], Sequence[Suggestion | None]]


def _lower_priority() -> None:
    """Renice the calling thread (Linux: per thread); harmless where unsupported."""
    with contextlib.suppress(AttributeError, OSError):  # platform dependent
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICE)


@dataclass
class _Counters:
    submitted: int = 0
    done: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


_STOP = object()


class _ModelThread:
    """One low-priority daemon thread running submitted calls in order.

    Daemon, unlike a ThreadPoolExecutor's workers, so a challenger stuck for good cannot keep
    the service from exiting.
    """

    def __init__(self, initializer: Callable[[], None] | None = None) -> None:
        self._initializer = initializer
        self._calls: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._work, name="shadow-model", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        self._calls.put(_STOP)

    def _work(self) -> None:
        _lower_priority()
        if self._initializer is not None:
            self._initializer()
        while (call := self._calls.get()) is not _STOP:
            future, fn, args = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the waiting dispatcher
                future.set_exception(err)


class ShadowRunner:
    """Runs the challenger beside the champion; each submitted job reaches `on_done` once."""

    def __init__(
        self,
        run_batch: RunBatch,
        on_done: Callable[[ShadowResult], None],
        *,
        timeout_s: float,
        queue_size: int,
        max_batch: int = 8,
        max_hung: int = 2,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self._run_batch, self._on_done = run_batch, on_done
        self._initializer = initializer  # runs first on each model thread
        self.timeout_s, self.max_batch, self.max_hung = timeout_s, max_batch, max_hung
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._state = threading.Condition()
        self._counters = _Counters()
        self._closed = False
        self._hung: list[concurrent.futures.Future] = []
        self._executor = self._new_executor()
        self._thread = threading.Thread(target=self._dispatch, name="shadow-dispatch", daemon=True)
        self._thread.start()

    def _new_executor(self) -> _ModelThread:
        return _ModelThread(self._initializer)

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without waiting; False when it was dropped (queue full or runner closed)."""
        with self._state:
            self._counters.submitted += 1
            closed = self._closed
        if closed:
            self._finish([job], "stopped", error="shadow skipped: service stopping")
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._finish([job], "dropped", error="shadow dropped: queue full")
            return False
        return True

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has reached `on_done`; False on timeout."""
        with self._state:
            target = self._counters.submitted
            return self._state.wait_for(lambda: self._counters.done >= target, timeout=timeout)

    def stats(self) -> dict[str, int]:
        """Counts of jobs submitted, done, per outcome, and model threads still hung."""
        with self._state:
            hung = sum(not f.done() for f in self._hung)
            return {
                "submitted": self._counters.submitted,
                "done": self._counters.done,
                "hung": hung,
                **self._counters.outcomes,
            }

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting jobs; queued ones are finished as 'stopped' (logged, not run)."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._executor.shutdown()

    # ------------------------------------------------------------ dispatcher thread

    def _dispatch(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                if self._closed:
                    self._finish(batch, "stopped", error="shadow skipped: service stopping")
                else:
                    self._run(batch)
            if stop:
                break
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                rest.append(item)
        self._finish(rest, "stopped", error="shadow skipped: service stopping")

    def _next_batch(self) -> tuple[list[ShadowJob], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[ShadowJob]) -> None:
        self._hung = [f for f in self._hung if not f.done()]
        if len(self._hung) >= self.max_hung:
            self._finish(
                batch,
                "paused",
                error=f"shadow paused: {len(self._hung)} challenger runs still hung",
            )
            return
        future = self._executor.submit(self._run_batch, batch)
        try:
            suggestions = list(future.result(timeout=self.timeout_s))
        except concurrent.futures.TimeoutError:
            # The stuck thread cannot be killed: leave it, and run later batches on a new one.
            self._hung.append(future)
            self._executor.shutdown()
            self._executor = self._new_executor()
            self._finish(batch, "timeout", error=f"shadow timed out after {self.timeout_s:g} s")
            return
        except Exception as err:  # noqa: BLE001 - a shadow failure must never escape
            log.warning("shadow run of %d jobs failed: %s", len(batch), err, exc_info=True)
            self._finish(batch, "error", error=f"{type(err).__name__}: {err}"[:500])
            return
        if len(suggestions) != len(batch):
            self._finish(
                batch,
                "error",
                error=f"challenger returned {len(suggestions)} "
                f"suggestions for {len(batch)} messages",
            )
            return
        for job, suggestion in zip(batch, suggestions, strict=True):
            self._deliver(ShadowResult(job, "ok" if suggestion else "skipped", suggestion))

    def _finish(self, jobs: Sequence[ShadowJob], outcome: Outcome, *, error: str) -> None:
        for job in jobs:
            self._deliver(ShadowResult(job, outcome, None, error))

    def _deliver(self, result: ShadowResult) -> None:
        try:
            self._on_done(result)
        except Exception:  # noqa: BLE001 - logging trouble must not stop the dispatcher
            log.exception("shadow on_done failed for request %s", result.job.request_id)
        with self._state:
            self._counters.done += 1
            outcomes = self._counters.outcomes
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            self._state.notify_all()
