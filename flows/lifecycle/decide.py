"""The `monitor` flow's promotion step: per-stage evidence → a request and a notification, or a
rejection.

For every stage with a `challenger` that shadowed at least `promote.min_cases` answered cases
(`monitoring.decisions.replay.stage_shadow_cases`), the logged messages are replayed through the
champion cascade and through the champion cascade with only that stage swapped to its
challenger (flows/lifecycle/evidence.py). Stages that lost alone are judged together with the
other challengers (flows/lifecycle/joint.py). Then either the decision supports promotion → a
request is recorded and the reviewers are notified, or it does not → the version is tagged
rejected with the reasons (flows/lifecycle/record.py). A stage with no champion yet gets a
first-champion request on its offline evidence (flows/lifecycle/first_champion.py).

Idempotent: a rerun on the same inputs replays nothing, records nothing and sends nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows.lifecycle.evidence import Pending, Replay, shadow_window, stage_evidence
from flows.lifecycle.first_champion import first_champions
from flows.lifecycle.joint import GroupDecisions, joint_evidence
from flows.lifecycle.record import DECISION_INPUTS, record_decision
from pipelines.registry.store import CHALLENGER, CHAMPION, registry_client

if TYPE_CHECKING:
    from pipelines.config import Params


def decide_challengers(params: Params, link: str | None = None) -> dict[str, dict[str, Any]]:
    """Decide every challenger stage; per stage `{"status", ...}`.

    `status`: `requested` (request recorded, reviewers notified: `notified`), `rejected`
    (reasons tagged), `waiting` (fewer than `promote.min_cases` shadowed cases), `unchanged`
    (same evidence as the last run, or already requested). `link` (e.g. the monitor's Evidently
    snapshot) goes into the notification. Stages that win only together are requested as one
    group (`together`), which promote moves only once every member is approved.
    """
    from flows.lifecycle.promote import stages_with_challenger
    from pipelines.registry.register import resolve_cascade_dirs, resolve_stage

    stages = stages_with_challenger(params)
    if not stages:
        return {}
    first = first_champions(params, stages, link)
    if first:  # no full champion cascade to replay against yet
        return first
    champion = resolve_cascade_dirs(params, CHAMPION)
    challengers = {s: resolve_stage(params, s, CHALLENGER) for s in stages}
    challengers = {s: c for s, c in challengers.items() if c.version != champion[s].version}
    if not challengers:
        return {}
    window = shadow_window(params, challengers)
    replay = Replay(champion)
    outcomes: dict[str, dict[str, Any]] = {}
    pending: dict[str, Pending] = {}
    for stage, challenger in challengers.items():
        got = stage_evidence(params, stage, challenger, window, replay)
        if isinstance(got, Pending):
            pending[stage] = got
        else:
            outcomes[stage] = got
    groups = joint_evidence(params, pending, window, replay)
    outcomes |= record_pending(params, pending, groups, link)
    return {stage: outcomes[stage] for stage in challengers}


def record_pending(
    params: Params, pending: dict[str, Pending], groups: GroupDecisions, link: str | None
) -> dict[str, dict[str, Any]]:
    """Record each fresh decision (the group's where one replaced it) and the inputs it used."""
    client = registry_client(params)
    outcomes: dict[str, dict[str, Any]] = {}
    for stage, item in pending.items():
        decision, together = groups.get(stage, (item.decision, None))
        outcome = record_decision(params, stage, item.challenger, decision, link, together)
        name, version = item.challenger.name, item.challenger.version
        client.set_model_version_tag(name, version, DECISION_INPUTS, item.inputs)
        outcomes[stage] = {**item.base, **outcome, **({"together": together} if together else {})}
    return outcomes
