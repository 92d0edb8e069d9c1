"""Drift monitor: the synthetic world drifts from day 8 (new topic, shifted vocabulary)."""

from __future__ import annotations

import pandas as pd
import pytest

from monitoring.drift import (
    EMBEDDING,
    SignalDrift,
    _decide,
    compute_drift,
    drift_frame_from_cases,
    drift_frame_from_window,
)
from pipelines.config import MonitorConfig, SynthConfig
from pipelines.data.synth import generate_world

CFG = MonitorConfig()


@pytest.fixture(scope="module")
def world_cases():
    world = generate_world(SynthConfig(cases_per_day=120, drift_from_day=8), seed=7, days=12)
    return {batch.day: list(batch.cases) for batch in world.days}


def cases_of(world_cases, days) -> list:
    return [case for day in days for case in world_cases[day]]


@pytest.mark.slow
def test_drifted_days_breach_with_named_signals(world_cases) -> None:
    reference = drift_frame_from_cases(cases_of(world_cases, range(1, 6)))
    current = drift_frame_from_cases(cases_of(world_cases, range(9, 13)))
    result = compute_drift(reference, current, CFG, tracked={"match_rate": 0.7})
    assert result.breach, result.signals
    assert result.signals[EMBEDDING].drifted  # the new topic and vocabulary move the meaning
    assert result.signals["topic"].drifted  # a topic the reference never saw
    text = " ".join(result.reasons)
    assert "embedding drift" in text and "topic drifted" in text
    assert set(result.signals) == {
        EMBEDDING,
        "text_length",
        "word_count",
        "non_letter_share",
        "topic",
        "answerable",
    }
    assert result.reference_rows == 600 and result.current_rows == 480
    # the snapshot carries the tracked values and the embedding score for the dashboard
    assert result.tracked["match_rate"] == 0.7
    assert result.tracked["embedding_drift_auc"] == pytest.approx(result.signals[EMBEDDING].score)
    assert result.snapshot.dict()["metrics"]


@pytest.mark.slow
def test_days_before_drift_do_not_breach(world_cases) -> None:
    reference = drift_frame_from_cases(cases_of(world_cases, range(1, 3)))
    current = drift_frame_from_cases(cases_of(world_cases, range(3, 6)))
    result = compute_drift(reference, current, CFG)
    assert not result.breach, result.reasons
    assert not result.signals[EMBEDDING].drifted
    assert result.drifted_share < CFG.drift_share


def test_window_frame_uses_calibrated_trigger_share() -> None:
    window = pd.DataFrame(
        {
            "message": ["a", "b", "c"],
            "topic": ["refund", None, "card"],
            "scores": [{"trigger": 0.9, "topic": 0.8}, {"trigger": 0.3}, {"trigger": 0.6}],
        }
    )
    frame = drift_frame_from_window(window)
    assert frame["answerable"].tolist() == ["yes", "no", "yes"]
    assert frame["trigger_score"].tolist() == [0.9, 0.3, 0.6]
    assert frame["topic_confidence"].iloc[0] == 0.8 and frame["topic_confidence"].isna().sum() == 2


def _signal(drifted: bool, method: str = "ks") -> SignalDrift:
    return SignalDrift(0.01 if drifted else 0.5, 0.05, drifted, method)


def test_decide_breaches_on_embedding_alone_or_on_share() -> None:
    quiet = {"text_length": _signal(False), "topic": _signal(False, "TVD")}
    embedding_only = {EMBEDDING: SignalDrift(0.7, 0.55, True, "model"), **quiet}
    result = _decide(embedding_only, CFG, 10, 10, None, {})
    assert result.breach and result.drifted_share == 0.0
    assert result.reasons[0].startswith("embedding drift")

    half = {
        EMBEDDING: SignalDrift(0.5, 0.55, False, "model"),
        "text_length": _signal(True),
        "topic": _signal(False, "TVD"),
    }
    result = _decide(half, CFG, 10, 10, None, {})
    assert result.breach and result.drifted == ["text_length"]
    assert any("share 0.50 >= 0.5" in r for r in result.reasons)

    stricter = MonitorConfig(drift_share=0.75)
    assert not _decide(half, stricter, 10, 10, None, {}).breach


def test_empty_frame_is_refused() -> None:
    frame = drift_frame_from_cases([])
    with pytest.raises(ValueError, match="no messages"):
        compute_drift(frame, frame, CFG)
