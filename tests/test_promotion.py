"""Promotion on shadow traffic, rollback after promotion, and the match-rate metric."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitoring.promotion import (
    ShadowStats,
    decide_promotion,
    match_rate,
    mcnemar_exact_greater,
    shadow_stats_from_window,
    should_roll_back,
    suggestion_matches,
)
from pipelines.config import PromoteConfig

CFG = PromoteConfig(min_cases=100, significance=0.05, max_stage_regression=0.02)


def paired(both: int, champion_only: int, challenger_only: int, neither: int):
    """Champion and challenger stats on the same cases with the given 2x2 table."""
    champ, chall = {}, {}
    cells = [(True, True)] * both + [(True, False)] * champion_only
    cells += [(False, True)] * challenger_only + [(False, False)] * neither
    for i, (a, b) in enumerate(cells):
        champ[f"c{i}"], chall[f"c{i}"] = a, b
    return ShadowStats("champion", champ), ShadowStats("challenger", chall)


def test_significant_win_promotes() -> None:
    champion, challenger = paired(both=120, champion_only=5, challenger_only=25, neither=50)
    decision = decide_promotion(champion, challenger, {"topic": (0.90, 0.91)}, CFG)
    assert decision.promote, decision.reasons
    assert decision.cases == 200
    assert (decision.challenger_only, decision.champion_only) == (25, 5)
    assert decision.challenger_match_rate == pytest.approx(145 / 200)
    assert decision.champion_match_rate == pytest.approx(125 / 200)
    assert decision.p_value < 0.001
    assert decision.stage_deltas == {"topic": pytest.approx(0.01)}
    assert decision.as_dict()["stage_delta.topic"] == pytest.approx(0.01)


def test_better_but_not_significant_is_refused() -> None:
    champion, challenger = paired(both=120, champion_only=10, challenger_only=14, neither=56)
    decision = decide_promotion(champion, challenger, {}, CFG)
    assert decision.challenger_match_rate > decision.champion_match_rate
    assert not decision.promote
    assert any("not significant" in reason for reason in decision.reasons)


def test_not_enough_cases_is_refused_even_when_significant() -> None:
    champion, challenger = paired(both=10, champion_only=0, challenger_only=30, neither=10)
    decision = decide_promotion(champion, challenger, {}, CFG)
    assert decision.p_value < 0.05
    assert not decision.promote
    assert any("only 50 paired shadow cases, need 100" in r for r in decision.reasons)


def test_only_the_same_cases_are_compared() -> None:
    champion, challenger = paired(both=100, champion_only=0, challenger_only=40, neither=60)
    # cases only the champion saw (and missed) must not count for the challenger
    champion = ShadowStats("champion", {**champion.matches, **{f"x{i}": False for i in range(500)}})
    decision = decide_promotion(champion, challenger, {}, CFG)
    assert decision.cases == 200
    assert decision.champion_match_rate == pytest.approx(0.5)


@pytest.mark.parametrize(("before", "after", "blocks"), [(0.90, 0.87, True), (0.90, 0.88, False)])
def test_stage_regression_blocks(before: float, after: float, blocks: bool) -> None:
    champion, challenger = paired(both=120, champion_only=5, challenger_only=25, neither=50)
    decision = decide_promotion(champion, challenger, {"trigger": (before, after)}, CFG)
    assert decision.promote is not blocks  # exactly the allowed 0.02 drop does not block
    assert any("stage trigger regresses" in r for r in decision.reasons) is blocks


def test_ties_do_not_promote() -> None:
    champion, challenger = paired(both=150, champion_only=20, challenger_only=20, neither=10)
    decision = decide_promotion(champion, challenger, {}, CFG)
    assert not decision.promote
    assert decision.p_value > 0.5
    identical, same = paired(both=150, champion_only=0, challenger_only=0, neither=50)
    tied = decide_promotion(identical, same, {}, CFG)
    assert not tied.promote and tied.p_value == 1.0


def test_no_overlap_is_refused_not_an_error() -> None:
    decision = decide_promotion(
        ShadowStats("a", {"x": True}), ShadowStats("b", {"y": True}), {}, CFG
    )
    assert not decision.promote and decision.cases == 0
    assert math.isnan(decision.champion_match_rate)


def test_mcnemar_exact_matches_a_known_value() -> None:
    # one-sided binomial: P(X >= 8 | n=10, p=0.5) = 56/1024
    assert mcnemar_exact_greater(8, 2) == pytest.approx(56 / 1024)


def test_match_rate_uses_fuzzy_token_sets() -> None:
    sent = ["You can pause payouts under Settings > Payouts.", "Refunds take 5 days.", "Hi", None]
    suggestions = [
        "you can PAUSE payouts under settings, payouts",
        "Cards ship in a week.",
        None,
        "x",
    ]
    assert suggestion_matches(suggestions, sent, 0.8) == [True, False, False, None]
    assert match_rate(suggestions, sent, 0.8) == pytest.approx(1 / 3)  # no-reply case excluded
    assert math.isnan(match_rate([], [], 0.8))
    with pytest.raises(ValueError, match="one per case"):
        match_rate(["a"], [], 0.8)


def test_shadow_stats_from_a_log_window() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "a"],
            "created_at": [t0 + timedelta(minutes=i) for i in range(5)],
            "champion_text": ["old", "Refunds take 5 days", None, "x", "Pause under Settings"],
            "shadow_text": ["old", "Refunds take 5 days", "Card ships soon", None, None],
            "shadow": [{}, {}, {}, None, {}],
            "sent_reply": [
                "Pause under Settings",
                "Refunds take 5 days",
                "Card ships soon",
                "x",
                None,
            ],
        }
    )
    frame.loc[4, "sent_reply"] = "Pause under Settings"
    champion, challenger = shadow_stats_from_window(frame, 0.8)
    assert champion.matches == {"b": True, "c": False, "a": True}  # d had no shadow
    assert challenger.matches == {"b": True, "c": True, "a": False}


def test_rollback_on_a_drop_after_enough_cases() -> None:
    cfg = PromoteConfig(rollback_drop=0.05, rollback_min_cases=50)
    before = ShadowStats("v1", {f"b{i}": i < 80 for i in range(100)})  # 0.80
    worse = ShadowStats("v2", {f"a{i}": i < 36 for i in range(60)})  # 0.60
    decision = should_roll_back(before, worse, cfg)
    assert decision.roll_back and "fell from 0.800 to 0.600" in decision.reason
    assert decision.p_value < 0.05
    fine = ShadowStats("v2", {f"a{i}": i < 47 for i in range(60)})  # 0.783
    assert not should_roll_back(before, fine, cfg).roll_back
    early = ShadowStats("v2", {f"a{i}": False for i in range(10)})
    too_early = should_roll_back(before, early, cfg)
    assert not too_early.roll_back and "need 50" in too_early.reason
