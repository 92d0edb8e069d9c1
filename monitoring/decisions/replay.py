"""Per-stage promotion evidence by counterfactual replay of the logged shadow traffic.

The service shadows the *whole* challenger cascade: every stage with a challenger runs its
challenger at once, so the logged shadow outcome cannot say which stage helped or hurt. The
monitor therefore judges each challenger stage S on evidence that isolates it: the messages of
the cases S's challenger shadowed (and the agent answered) are replayed through two cascades
that differ only in S — the champion cascade, and the champion cascade with S swapped to its
challenger — and each output is scored against the reply the agent actually sent, exactly as the
online match rate is (`promotion.suggestion_matches`, `monitor.match_threshold`).
Both arms are replayed (rather than pairing with the champion's logged output) because the log
keeps the redacted message but not the conversation context, and the champion may have moved
during the window: both arms then see identical inputs and models, so the paired one-sided
McNemar test (`decide_promotion`) measures S alone. "No stage regressing" is S's own replayed
match-rate delta, gated by `promote.max_stage_regression`.

This module is pure: it selects the cases, scores replayed texts and names the evidence; loading
models and running cascades is the caller's (flows/lifecycle/decide.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monitoring.decisions.promotion import (
    PromotionDecision,
    ShadowStats,
    decide_promotion,
    suggestion_matches,
)

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.config import PromoteConfig


def shadowed_by(shadow: Any, stage: str) -> str | None:
    """The version ref (`<model>/<version>`) of `stage` in one logged shadow suggestion."""
    if not isinstance(shadow, dict):
        return None
    versions = shadow.get("versions") or {}
    return versions.get(stage)


def stage_shadow_cases(frame: pd.DataFrame, stage: str, ref: str, limit: int) -> pd.DataFrame:
    """The cases `ref` (`stage`'s challenger) shadowed that have the agent's reply, newest `limit`.

    A case served more than once keeps its latest request; rows come back oldest first.
    """
    if frame.empty:
        return frame
    mask = frame["sent_reply"].notna() & frame["shadow"].notna()
    rows = frame[mask]
    rows = rows[rows["shadow"].map(lambda s: shadowed_by(s, stage) == ref)]
    rows = rows.drop_duplicates("case_id", keep="last")
    return rows.tail(limit).reset_index(drop=True)


def stage_decision(
    stage: str,
    case_ids: Sequence[str],
    sent_replies: Sequence[str],
    champion_texts: Sequence[str | None],
    challenger_texts: Sequence[str | None],
    threshold: float,
    gate: PromoteConfig,
) -> PromotionDecision:
    """The promotion decision for `stage` from the two replayed arms on the same cases.

    `threshold`: `monitor.match_threshold` (a suggestion matches the sent reply); `gate`: the
    `promote:` section.
    """
    champion = suggestion_matches(champion_texts, sent_replies, threshold)
    challenger = suggestion_matches(challenger_texts, sent_replies, threshold)
    champ, chall = _paired(case_ids, champion, challenger)
    per_stage = {stage: (champ.match_rate, chall.match_rate)} if champ.matches else {}
    return decide_promotion(champ, chall, per_stage, gate)


def _paired(
    case_ids: Sequence[str], champion: Sequence[bool | None], challenger: Sequence[bool | None]
) -> tuple[ShadowStats, ShadowStats]:
    """Both arms' matches on the cases where both have a sent reply."""
    pairs = [
        (case, a, b)
        for case, a, b in zip(case_ids, champion, challenger, strict=True)
        if a is not None and b is not None
    ]
    return (
        ShadowStats("champion", {c: bool(a) for c, a, _ in pairs}),
        ShadowStats("challenger", {c: bool(b) for c, _, b in pairs}),
    )


def evidence_key(stage: str, ref: str, decision: PromotionDecision) -> str:
    """A short hash of what was decided on: the same evidence gives the same key (idempotence)."""
    blob = json.dumps(
        {"stage": stage, "ref": ref, "decision": decision.as_dict()}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def joint_shadow_cases(frame: pd.DataFrame, refs: dict[str, str], limit: int) -> pd.DataFrame:
    """The cases every one of `refs` (stage → challenger ref) shadowed at once, newest `limit`."""
    if frame.empty:
        return frame
    mask = frame["sent_reply"].notna() & frame["shadow"].notna()
    rows = frame[mask]
    together = rows["shadow"].map(
        lambda s: all(shadowed_by(s, stage) == ref for stage, ref in refs.items())
    )
    rows = rows[together].drop_duplicates("case_id", keep="last")
    return rows.tail(limit).reset_index(drop=True)


def joint_decision(
    stages: Sequence[str],
    case_ids: Sequence[str],
    sent_replies: Sequence[str],
    champion_texts: Sequence[str | None],
    joint_texts: Sequence[str | None],
    without_texts: dict[str, Sequence[str | None]],
    threshold: float,
    gate: PromoteConfig,
) -> tuple[list[str], PromotionDecision]:
    """Evidence for challengers that help only together (e.g. a new topic: the topic stage must
    name it *and* the retrieve index must hold its conversations, so neither wins alone).

    `joint_texts`: the champion cascade with every stage of `stages` swapped; `without_texts[S]`:
    the same with S left at its champion. The group is the stages whose leave-one-out costs
    matches (S contributes given the others); the decision is the joint arm against the champion
    (one-sided McNemar as for one stage), each member's leave-one-out delta checked against
    `promote.max_stage_regression`. A group of fewer than two stages is no group: [].
    `threshold` and `gate` as for `stage_decision`.
    """
    joint = suggestion_matches(joint_texts, sent_replies, threshold)
    rates = {
        stage: _rate(suggestion_matches(texts, sent_replies, threshold), joint)
        for stage, texts in without_texts.items()
    }
    joint_rate = _rate(joint, joint)
    group = [s for s in stages if rates[s] < joint_rate]
    champion = suggestion_matches(champion_texts, sent_replies, threshold)
    champ, chall = _paired(case_ids, champion, joint)
    per_stage = {s: (rates[s], joint_rate) for s in stages}
    decision = decide_promotion(champ, chall, per_stage, gate)
    return (group if len(group) >= 2 else []), decision


def _rate(flags: Sequence[bool | None], reference: Sequence[bool | None]) -> float:
    """Match rate over the cases where both arms have a sent reply."""
    kept = [
        bool(f) for f, r in zip(flags, reference, strict=True) if f is not None and r is not None
    ]
    return sum(kept) / len(kept) if kept else 0.0
