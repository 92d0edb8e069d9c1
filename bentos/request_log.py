"""The service's prediction-log wiring: each request's row before its answer, the shadow's later.

`commit` writes the champion's row (redacted) and waits for its transaction, bounded by
`serve.log_commit_timeout_s`: on time the answer says `logged: true`; late, the answer goes out
with `logged: false` and the row stays queued. `record_shadow` adds the shadow's outcome to that
row. Concurrent requests share one transaction (group commit in `BufferedPredictionWriter`).
At start-up, rows a killed service left with a pending shadow are marked `lost`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import anyio

from bentos.api import metrics
from bentos.records import champion_record, store_feedback
from bentos.shadow import FAILURES, ShadowJob, ShadowResult

log = logging.getLogger("casepilot.service")


class RequestLog:
    """The prediction log and its buffered writer, as the service's routes use them."""

    def __init__(self, url: str) -> None:
        from monitoring.log.store import PredictionLog
        from monitoring.log.writer import BufferedPredictionWriter

        self.log = PredictionLog.from_url(url)
        self._mark_lost_shadows()
        # group commit: concurrent requests wait for one transaction (flush_interval_s caps it)
        self.writer = BufferedPredictionWriter(
            self.log, max_batch=64, flush_interval_s=0.005, shadow_pending=True
        )
        self._feedback_lock = threading.Lock()  # check-then-insert of one case at a time

    def _mark_lost_shadows(self) -> None:
        """Rows a killed service left with a pending shadow say why it never came."""
        try:
            lost = self.log.mark_pending_lost()
        except Exception as err:  # noqa: BLE001 - the log may be down; serving goes on
            log.warning("could not mark pending shadows lost: %s", type(err).__name__)
            return
        if lost:
            log.warning("%d logged requests lost their shadow run (service restarted)", lost)

    async def commit(self, job: ShadowJob, timeout: float) -> bool:
        """Write the champion's row (redacted) and wait for its commit; False if it timed out."""
        from monitoring.log.writer import WriterFull

        def submit() -> Any:
            return self.writer.submit(champion_record(job), timeout=timeout)

        try:
            committed = await anyio.to_thread.run_sync(submit)
            # shield: giving up waiting must not cancel the write itself
            return bool(
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(committed)), timeout)
            )
        except (WriterFull, TimeoutError) as err:
            reason = "queue_full" if isinstance(err, WriterFull) else "commit_timeout"
            metrics()["unlogged"].labels(reason=reason).inc()
            log.warning(
                "answering request %s before its log row committed (%s)", job.request_id, reason
            )
            return False

    def record_shadow(self, result: ShadowResult) -> None:
        """Add the shadow's outcome to the request's row (written when the champion answered)."""
        from monitoring.log.store import ShadowUpdate

        job = result.job
        metrics()["shadow"].labels(outcome=result.outcome).inc()
        if result.outcome in FAILURES:
            metrics()["shadow_failures"].labels(kind=result.outcome).inc()
            log.warning(
                "shadow %s for request %s: %s", result.outcome, job.request_id, result.error
            )
        self.writer.submit(
            ShadowUpdate(job.request_id, result.outcome, result.suggestion, result.error)
        )

    async def store_feedback(
        self, case_id: str, sent_reply: str, used_suggestion: bool
    ) -> tuple[int, bool, str | None]:
        """(HTTP status, stored, error) for one feedback (bentos/records.py says which)."""
        return await anyio.to_thread.run_sync(
            store_feedback, self.log, self._feedback_lock, case_id, sent_reply, used_suggestion
        )

    def counts(self) -> dict[str, int]:
        """The writer's counters: records submitted, written, rejected; failed flushes."""
        stats = self.writer.stats()
        return {
            "submitted": stats.submitted,
            "written": stats.written,
            "failed_flushes": stats.failed_flushes,
            "rejected": stats.rejected,
        }

    def flush(self, timeout: float) -> bool:
        """Wait until every record so far is written; False if `timeout` ran out first."""
        return self.writer.flush(timeout)

    def written(self) -> int:
        """How many records the writer has committed."""
        return self.writer.stats().written

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued (bounded by `timeout`), then release the log's connections."""
        self.writer.close(timeout)
        self.log.close()
