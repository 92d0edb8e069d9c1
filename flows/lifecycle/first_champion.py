"""Stages with no champion yet: a first-champion request on their offline evidence.

There is nothing to shadow against, so the challenger (it passed its offline gates) is proposed
as the first champion with its offline metrics as evidence, and the reviewer decides. The first
champion cascade moves whole: every stage is requested `together` with the others, and none is
requested while some stage of the cascade has neither a champion nor a challenger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows.lifecycle.record import record_decision
from pipelines.registry.store import (
    CHALLENGER,
    CHAMPION,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.config import Params


def first_champions(
    params: Params, stages: list[str], link: str | None
) -> dict[str, dict[str, Any]]:
    """Stages with no champion yet: their challenger (it passed its offline gates) is requested
    as the first champion — there is no champion to compare with on shadow traffic, so the
    evidence is the offline metrics, and the reviewer decides. {} when every stage has one."""
    from pipelines.registry.register import resolve_stage

    client = registry_client(params)
    first = [
        s
        for s in stages
        if CHAMPION not in aliases_of(client, registered_model_name(params.register, s))
    ]
    missing = stages_without_candidate(params, client, stages) if first else {}
    if missing:  # a first champion cascade that could not serve: request none of it yet
        why = "; ".join(f"{stage}: {reason}" for stage, reason in missing.items())
        return {
            stage: {"name": registered_model_name(params.register, stage), "version": None,
                    "cases": 0, "status": "waiting",
                    "reason": f"the first champion cascade needs every stage; none yet for {why}"}
            for stage in first
        }  # fmt: skip
    outcomes: dict[str, dict[str, Any]] = {}
    resolved = {stage: resolve_stage(params, stage, CHALLENGER) for stage in first}
    for stage, challenger in resolved.items():
        tags = client.get_model_version(challenger.name, challenger.version).tags or {}
        base = {"name": challenger.name, "version": challenger.version, "cases": 0}
        together = {s: r.version for s, r in resolved.items() if s != stage}
        decision = offline_decision(stage, tags)
        outcomes[stage] = {
            **base,
            **record_decision(params, stage, challenger, decision, link, together),
        }
    return outcomes


def offline_decision(stage: str, tags: dict[str, str]) -> PromotionDecision:
    """Promote, on the offline metrics tagged on the version (`metric.*`)."""
    from monitoring.decisions.promotion import PromotionDecision

    metrics = {k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")}
    offline = ", ".join(f"{k} {float(v):.3f}" for k, v in sorted(metrics.items()))
    return PromotionDecision(
        True, (f"first champion of {stage}: no champion to compare with on shadow traffic; "
               f"it passed its offline gates ({offline or 'no metrics'})",),
        0, 0.0, 0.0, 0, 0, 1.0,
    )  # fmt: skip


def stages_without_candidate(params: Params, client: Any, stages: list[str]) -> dict[str, str]:
    """Stages of the cascade with neither a champion nor a challenger, with the reason (e.g. the
    newest version's failed offline gate): the service cannot load a cascade without them."""
    from pipelines.data.contract import STAGES
    from pipelines.registry.store import GATE_REASONS

    missing: dict[str, str] = {}
    for stage in STAGES:
        name = registered_model_name(params.register, stage)
        if stage in stages or CHAMPION in aliases_of(client, name):
            continue
        versions = client.search_model_versions(f"name = '{name}'")
        newest = max(versions, key=lambda v: int(v.version), default=None)
        if newest is None:
            missing[stage] = f"{name} has no registered version"
        else:
            gate = (newest.tags or {}).get(GATE_REASONS) or "no challenger alias"
            missing[stage] = f"{name} v{newest.version} failed its offline gate ({gate})"
    return missing
