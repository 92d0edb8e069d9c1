"""Promotion on shadow traffic, rollback after promotion, and the match-rate metric."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitoring.decisions.promotion import (
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


# ---------------------------------------------------------------- before/after a promotion

REPLY = "You can pause your plan under Settings, then Billing."
WRONG = "Our courier ships replacement cards within five days."


def log_served(url: str, served: list[tuple[str, datetime, dict[str, str], str | None]]) -> None:
    """Write served requests (case id, time, stage versions, suggestion) to the prediction log
    at `url`, each with the agent's sent reply `REPLY` as feedback."""
    from monitoring.log.store import PredictionLog
    from pipelines.data.contract import Feedback, PredictionRecord, Suggestion

    records = [
        PredictionRecord(
            request_id=f"r-{case}-{at.timestamp()}",
            case_id=case,
            created_at=at,
            message="how do I pause my plan?",
            champion=Suggestion(
                text=text,
                abstain_reason=None if text else "topic: below threshold",
                versions=versions,
                latency_ms=4.0,
            ),
            latency_ms=4.0,
        )
        for case, at, versions, text in served
    ]
    log = PredictionLog.from_url(url)
    try:
        log.write(records)
        log.write_feedback([Feedback(case_id=c, sent_reply=REPLY, used_suggestion=True)
                            for c in dict.fromkeys(case for case, *_ in served)])  # fmt: skip
    finally:
        log.close()


def test_rollback_stats_split_the_log_at_the_promotion_by_version(tmp_path) -> None:
    from monitoring.log.store import PredictionLog
    from monitoring.online import rollback_stats

    promoted = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    at = lambda minutes: promoted + timedelta(minutes=minutes)  # noqa: E731
    served = (
        [(f"b{i}", at(-60 + i), {"topic": "1"}, REPLY if i % 5 else WRONG) for i in range(30)]
        + [("old-other", at(-5), {"topic": "7"}, REPLY)]  # another version: not v1's
        + [("no-version", at(-4), {}, WRONG)]  # no versions logged: placed by time
        + [(f"a{i}", at(1 + i), {"topic": "2"}, REPLY if i % 2 else None) for i in range(20)]
        + [("not-reloaded", at(2), {"topic": "1"}, REPLY)]  # old champion after: left out
        + [("b0", at(3), {"topic": "2"}, WRONG)]  # served on both sides: counts on both
    )
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log_served(url, served)
    log = PredictionLog.from_url(url)
    window = log.window()
    log.close()

    before, after = rollback_stats(
        window, "topic", version="2", previous="1", promoted_at=promoted, match_threshold=0.8
    )
    assert set(before.matches) == {f"b{i}" for i in range(30)} | {"no-version"}
    assert before.match_rate == pytest.approx(24 / 31)  # b0,b5,…,b25 and no-version missed
    assert set(after.matches) == {f"a{i}" for i in range(20)} | {"b0"}
    assert after.match_rate == pytest.approx(10 / 21)  # abstentions and b0 missed
    assert (before.version, after.version) == ("1", "2")

    around = {"version": "2", "previous": "1", "promoted_at": promoted, "match_threshold": 0.8}
    latest, _ = rollback_stats(window, "topic", **around, before_cases=5)
    assert set(latest.matches) == {"b26", "b27", "b28", "b29", "no-version"}
    other, _ = rollback_stats(window, "trigger", **around)
    assert other.cases == 32  # no trigger versions logged: every case before, by time
