"""Challengers that win only together: the joint replay and the group's promotion requests.

A stage that lost alone is judged together with every other challenger on fresh evidence
(monitoring/decisions/replay.joint_decision); when the group wins, its members that lost alone
are requested `together` — promote moves none of them before every member is approved.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from monitoring.decisions.replay import joint_decision, joint_shadow_cases
from monitoring.review.promotion import reviewed_decision

if TYPE_CHECKING:
    from flows.lifecycle.evidence import Pending, Replay
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.config import Params
    from pipelines.registry.resolve import ResolvedStage

GroupDecisions = dict[str, tuple["PromotionDecision", dict[str, str] | None]]


def joint_evidence(
    params: Params, pending: dict[str, Pending], window: Any, replay: Replay
) -> GroupDecisions:
    """Stages that lost alone, judged together with every other challenger on fresh evidence
    (monitoring/decisions/replay.joint_decision) — winners and already requested ones included,
    so a new topic's stage is judged with the retrieve challenger that holds its conversations
    even when that one wins alone.

    Leave-one-out shrinks the set to the stages that contribute, replaying again while it
    shrinks (at most once per stage). When the joint arm wins, each group member that lost
    alone gets the group's decision and `together` (the other members' versions); a member
    that won alone keeps its own request (it needs nobody). When it does not, each loser's
    rejection gets the joint reason. {} when no stage lost alone on fresh evidence, or no other
    challenger to judge it with.
    """
    lost = {s: p for s, p in pending.items() if not p.decision.promote and not p.requested}
    swapped = {s: p.challenger for s, p in pending.items()}
    if not lost or len(swapped) < 2:
        return {}
    refs = {s: f"{r.name}/{r.version}" for s, r in swapped.items()}
    rows = joint_shadow_cases(window, refs, params.promote.replay_max_cases)
    if len(rows) < params.promote.min_cases:
        return {}
    group, decision, swapped = _contributing_group(params, rows, swapped, replay)
    if not group or not decision.promote or not set(group) & set(lost):
        names = ", ".join(f"{s} v{swapped[s].version}" for s in swapped)
        why = (
            "; ".join(decision.reasons)
            if group
            else "fewer than two of them add matches given the others: no group to request"
        )
        note = f"together with the other challengers ({names}): {why}"
        return {
            s: (dataclasses.replace(p.decision, reasons=(*p.decision.reasons, note)), None)
            for s, p in lost.items()
        }
    return group_requests(params, lost, swapped, group, decision)


def _contributing_group(
    params: Params, rows: Any, swapped: dict[str, ResolvedStage], replay: Replay
) -> tuple[list[str], PromotionDecision, dict[str, ResolvedStage]]:
    """Leave-one-out until the set stops shrinking: the group, its decision, the last set."""
    messages, cases = rows["message"].tolist(), rows["case_id"].tolist()
    replies = rows["sent_reply"].tolist()
    while True:
        without = {
            s: replay.texts({k: v for k, v in swapped.items() if k != s}, messages) for s in swapped
        }
        group, decision = joint_decision(
            list(swapped), cases, replies, replay.champion_texts(messages),
            replay.texts(swapped, messages), without, params.monitor.match_threshold,
            params.promote,
        )  # fmt: skip
        if not group or len(group) == len(swapped):
            return group, decision, swapped
        swapped = {s: swapped[s] for s in group}


def group_requests(
    params: Params,
    lost: dict[str, Pending],
    swapped: dict[str, ResolvedStage],
    group: list[str],
    decision: PromotionDecision,
) -> GroupDecisions:
    """The winning group's decision for each member that lost alone, `together` with the rest;
    one member's reviewed veto holds back every member that needs the group."""
    names = ", ".join(f"{s} v{swapped[s].version}" for s in group)
    out: GroupDecisions = {}
    for stage in (s for s in group if s in lost):
        alone = "; ".join(lost[stage].decision.reasons)
        reasons = (f"requested together with {names}: the cascade wins only with all of them "
                   f"swapped (alone: {alone})", *decision.reasons)  # fmt: skip
        item = lost[stage].challenger
        own = reviewed_decision(
            params, stage, item.name, item.version, dataclasses.replace(decision, reasons=reasons)
        )
        together = {s: swapped[s].version for s in group if s != stage}
        out[stage] = (own, together)
    vetoed = [s for s, (d, _) in out.items() if not d.promote]
    if vetoed:  # the members that need the group move with it: one's reviewed veto holds all
        why = f"held back with {', '.join(vetoed)} (reviewed veto)"
        out = {s: (dataclasses.replace(d, promote=False, reasons=(*d.reasons, why)), None)
               for s, (d, _) in out.items()}  # fmt: skip
    return out
