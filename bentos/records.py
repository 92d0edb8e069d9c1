"""What the service may write about a request: redacted text, case ids without PII, feedback.

`case_id` comes from the caller and can carry PII (an email as the ticket id). It is stored as
given when redaction finds nothing in it (the usual ticket ids, so joins with other systems
work), else as `pii-sha256:<first 24 hex digits of its SHA-256>`: the same id always maps to the
same key, so `/feedback` finds its suggestion, but the PII is not on disk. The hash is unsalted,
so a guessable id (a known email) can be confirmed by hashing it; it hides, it does not encrypt.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipelines.data.contract import PredictionRecord

if TYPE_CHECKING:
    from bentos.shadow import ShadowJob
    from monitoring.log.store import PredictionLog

log = logging.getLogger("casepilot.service")
REDACTION_FAILED = "<REDACTION_FAILED>"


def redacted(text: str) -> str:
    """The text with PII replaced; a placeholder if redaction fails (raw text is never logged)."""
    from pipelines.data.redact import redact_text

    try:
        return redact_text(text).text
    except Exception as err:  # noqa: BLE001 - never log unredacted text
        log.error("redaction failed (%s); storing a placeholder", type(err).__name__)
        return REDACTION_FAILED


@functools.lru_cache(maxsize=4096)
def stored_case_id(case_id: str) -> str:
    """`case_id` as stored: unchanged when it holds no PII, else a stable SHA-256 key."""
    if redacted(case_id) == case_id:
        return case_id
    return "pii-sha256:" + hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:24]


def store_feedback(
    log: PredictionLog, lock: threading.Lock, case_id: str, reply: str, used: bool
) -> tuple[int, bool, str | None]:
    """(HTTP status, stored, error) for one feedback, checked and inserted under `lock`.

    404: no suggestion was logged for the case; 409: the case already has different feedback;
    the same feedback again is a retry (200, not stored twice).
    """
    from pipelines.data.contract import Feedback

    key, text = stored_case_id(case_id), redacted(reply)
    with lock:
        if not log.has_case(key):
            return 404, False, "unknown case_id: no suggestion was logged for it"
        earlier = log.feedback_for(key)
        if earlier:
            if earlier[-1] == {"sent_reply": text, "used_suggestion": used}:
                return 200, False, None
            return 409, False, "this case already has different feedback"
        item = Feedback(
            case_id=key, sent_reply=text, used_suggestion=used, created_at=datetime.now(UTC)
        )
        return 200, log.write_feedback(item) == 1, None


def champion_record(job: ShadowJob) -> PredictionRecord:
    """The request's prediction-log row as the champion answered it (message redacted)."""
    return PredictionRecord(
        request_id=job.request_id,
        case_id=stored_case_id(job.case_id),
        created_at=job.created_at,
        message=redacted(job.message),
        champion=job.champion,
        latency_ms=job.latency_ms,
    )
