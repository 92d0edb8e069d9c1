"""Shadow runs: the challenger scores the champion's input off the request path, bounded and timed.

The shadow yields to the champion. On 2 cores a challenger doing the champion's work again at
the same time would take the champion's CPU and its turns at the GIL, so the dispatcher holds
each shadow batch until no champion request has been in flight for `quiet_s` (`InFlight`), and
runs it on its own model thread (optionally at a lower OS priority, `nice`). Under sustained
load jobs wait in a bounded queue; once it is full new jobs are *shed*: their record is still
written, with the reason and outcome `shed`, so the shadow comparison says how many cases it
covers. Queued jobs run when the service goes idle, which is where a real copilot's shadow
cases come from.

`ShadowRunner.submit` never blocks and never raises. A run that crashes or times out is reported
through `on_done` with its reason and counted, never raised. A run that hangs keeps its thread,
so the runner moves on with a fresh one; past `max_hung` stuck threads it pauses shadowing (jobs
still complete, with the reason) until they return.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bentos.inflight import InFlight
from bentos.model_thread import ModelThread, lower_priority
from pipelines.data.contract import Suggestion, Turn

log = logging.getLogger(__name__)

Outcome = Literal["ok", "skipped", "error", "timeout", "shed", "paused", "stopped"]
FAILURES: tuple[Outcome, ...] = ("error", "timeout", "paused")  # shed is by design, not a fault


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


@dataclass
class _Counters:
    submitted: int = 0
    done: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


_STOP = object()


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
        in_flight: InFlight | None = None,
        quiet_s: float = 0.0,
        nice: int = 0,
    ) -> None:
        self._run_batch, self._on_done = run_batch, on_done
        self._initializer = initializer  # runs first on each model thread
        self.timeout_s, self.max_batch, self.max_hung = timeout_s, max_batch, max_hung
        self._in_flight, self.quiet_s = in_flight, quiet_s  # None: never wait for the champion
        self.queue_size, self.nice = queue_size, nice
        self._yielding = False  # the dispatcher is holding a batch back for the champion
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._state = threading.Condition()
        self._counters = _Counters()
        self._closed = False
        self._hung: list[concurrent.futures.Future] = []
        self._executor = self._new_executor()
        # Shed jobs are recorded (redacted, logged) here, off the request path (an event loop).
        self._recorder = ModelThread(name="shadow-record", nice=nice)
        self._thread = threading.Thread(target=self._dispatch, name="shadow-dispatch", daemon=True)
        self._thread.start()

    def _new_executor(self) -> ModelThread:
        return ModelThread(self._initializer, nice=self.nice)

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without waiting; False when it was shed (queue full) or the runner closed."""
        with self._state:
            self._counters.submitted += 1
            closed = self._closed
        if closed:
            self._finish([job], "stopped", error="shadow skipped: service stopping")
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            error = (
                f"shadow shed: the champion was busy and {self.queue_size} shadow jobs "
                "were already waiting (serve.shadow_queue_size)"
            )
            with self._state:  # before close() stops the recorder, or else not at all
                if not self._closed:
                    self._recorder.submit(
                        functools.partial(self._finish, [job], "shed", error=error)
                    )
                    return False
            self._finish([job], "shed", error=error)
            return False
        return True

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has reached `on_done`; False on timeout."""
        with self._state:
            target = self._counters.submitted
            return self._state.wait_for(lambda: self._counters.done >= target, timeout=timeout)

    def stats(self) -> dict[str, int]:
        """Counts of jobs submitted, done, queued, per outcome; hung threads; 1 while yielding."""
        with self._state:
            hung = sum(not f.done() for f in self._hung)
            return {
                "submitted": self._counters.submitted,
                "done": self._counters.done,
                "queued": self._queue.qsize(),
                "yielding": int(self._yielding),
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
        with contextlib.suppress(concurrent.futures.TimeoutError):  # shed records still queued
            self._recorder.submit(lambda: None).result(timeout)
        self._recorder.shutdown()

    # ------------------------------------------------------------ dispatcher thread

    def _dispatch(self) -> None:
        lower_priority(self.nice)  # it also records (redacts, logs) shadow results
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
        if self._in_flight is not None:  # yield: start only once the champion has been idle
            self._yielding = True
            self._in_flight.wait_quiet(self.quiet_s, cancelled=lambda: self._closed)
            self._yielding = False
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
