"""Online metrics from a real SQLite prediction log with hand-checked answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from monitoring.log.store import PredictionLog
from monitoring.online import online_metrics
from pipelines.data.contract import Feedback, PredictionRecord, Suggestion

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def suggestion(text=None, stopped_at=None, label=None, **scores) -> Suggestion:
    return Suggestion(
        text=text,
        stopped_at=stopped_at,
        abstain_reason=None if text else f"{stopped_at}: below threshold",
        topic=label,
        scores=scores,
        latency_ms=3.0,
    )


# case -> (champion, shadow, feedback (sent_reply, used) or None)
CASES = {
    "c1": (
        suggestion("Your refund was sent today.", label="refund", trigger=0.95, topic=0.9),
        suggestion("Your refund was sent today.", label="refund", trigger=0.9, topic=0.9),
        ("Your refund was sent today.", True),
    ),
    "c2": (
        suggestion("Reset your password from settings.", label="login", trigger=0.9, topic=0.8),
        suggestion("Please call our hotline.", label="login", trigger=0.9, topic=0.8),
        ("Reset your password from settings page.", False),
    ),
    "c3": (suggestion(stopped_at="trigger", trigger=0.2), None, ("Thanks!", False)),
    "c4": (
        suggestion(stopped_at="topic", label="card", trigger=0.9, topic=0.4),
        suggestion("Card replacement takes 5 days.", label="card", trigger=0.9, topic=0.7),
        ("Card replacement takes 5 days.", False),
    ),
    "c5": (suggestion("Fees are listed online.", label="fees", trigger=0.8, topic=0.7), None, None),
    "c6": (suggestion(stopped_at="retrieve", label="fees", trigger=0.7, topic=0.6), None, None),
}


def write_log(url: str, cases=CASES, start: datetime = T0) -> PredictionLog:
    """Write `cases` as PredictionRecords + Feedback into the log at `url`."""
    log = PredictionLog.from_url(url)
    records, feedback = [], []
    for i, (case_id, (champion, shadow, fb)) in enumerate(cases.items()):
        records.append(
            PredictionRecord(
                request_id=f"r-{case_id}",
                case_id=case_id,
                created_at=start + timedelta(minutes=i),
                message=f"message of {case_id}",
                champion=champion,
                shadow=shadow,
                latency_ms=5.0,
            )
        )
        if fb:
            feedback.append(Feedback(case_id=case_id, sent_reply=fb[0], used_suggestion=fb[1]))
    log.write(records)
    log.write_feedback(feedback)
    return log


@pytest.fixture
def window(tmp_path: Path) -> pd.DataFrame:
    log = write_log(f"sqlite:///{tmp_path / 'predictions.db'}")
    try:
        return log.window()
    finally:
        log.close()


def test_online_metrics_known_answers(window: pd.DataFrame) -> None:
    m = online_metrics(window, match_threshold=0.8)
    assert m.requests == 6
    assert m.cases_with_feedback == 4
    assert m.match_rate == pytest.approx(2 / 4)  # c1, c2 match; c3, c4 abstained
    assert m.paired_cases == 3  # c1, c2, c4 have feedback and a shadow suggestion
    assert m.champion_match_rate_paired == pytest.approx(2 / 3)
    assert m.shadow_match_rate == pytest.approx(2 / 3)  # c1, c4
    assert m.acceptance == pytest.approx(1 / 2)  # shown with feedback: c1 used, c2 not
    assert m.coverage == pytest.approx(3 / 6)
    assert m.abstain_rate == pytest.approx(
        {"trigger": 1 / 6, "topic": 1 / 6, "retrieve": 1 / 6, "answer": 0.0, "tone": 0.0}
    )
    # average confidence: max(p, 1-p) of p(answerable); mean top-topic probability
    assert m.estimated_accuracy["trigger"] == pytest.approx(
        (0.95 + 0.9 + 0.8 + 0.9 + 0.8 + 0.7) / 6
    )
    assert m.estimated_accuracy["topic"] == pytest.approx((0.9 + 0.8 + 0.4 + 0.7 + 0.6) / 5)


def test_as_values_flat_names(window: pd.DataFrame) -> None:
    values = online_metrics(window, match_threshold=0.8).as_values()
    assert values["abstain_trigger"] == pytest.approx(1 / 6)
    assert values["est_acc_topic"] == pytest.approx(0.68)
    assert {"match_rate", "shadow_match_rate", "acceptance", "coverage"} <= set(values)


def test_no_feedback_no_shadow_gives_nan(tmp_path: Path) -> None:
    cases = {k: (v[0], None, None) for k, v in CASES.items()}
    log = write_log(f"sqlite:///{tmp_path / 'p.db'}", cases)
    m = online_metrics(log.window(), match_threshold=0.8)
    log.close()
    assert math.isnan(m.match_rate) and math.isnan(m.acceptance)
    assert m.paired_cases == 0 and math.isnan(m.shadow_match_rate)
    assert m.coverage == pytest.approx(0.5)


def test_stricter_threshold_lowers_match_rate(window: pd.DataFrame) -> None:
    # c2's suggestion is a subset of the sent reply: token-set ratio 100, still matches at 1.0;
    # the paired shadow "call our hotline" never matches c2
    loose = online_metrics(window, match_threshold=0.5)
    assert loose.match_rate >= online_metrics(window, match_threshold=1.0).match_rate
