"""Reviewed correctness in the promotion decision: the match rate is a proxy, people are not.

The `monitor` flow decides each challenger stage on replayed shadow traffic by match rate
(`monitoring.decisions.replay.stage_decision`). This module adds what reviewers found on the
latest reviewed day (`monitoring.review.run.reviewed_evidence`: champion and challenger on the
same reviewed items, the paired difference with its 95% interval): a challenger that wins on
match rate but is significantly worse on reviewed correctness is not requested - the decision
is turned into a rejection whose reason carries the reviewed figures. The figures are also
tagged on the version (`casepilot.evidence.reviewed_*`), requested or not, so a reviewer reads
them in the MLflow UI beside the match-rate evidence. No Prefect here (flows call it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from monitoring.review.run import reviewed_evidence, reviewed_veto

if TYPE_CHECKING:
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.config import Params

TAG_PREFIX = "casepilot.evidence.reviewed_"


def reviewed_tags(evidence: dict[str, Any] | None) -> dict[str, str]:
    """The reviewed figures as version tags (`casepilot.evidence.reviewed_*`); {} without any.

    `reviewed_<role>` with `_low` / `_high` for champion, challenger and their difference
    (challenger - champion), plus the metric, the day, the paired item count and the verdict.
    """
    if not evidence:
        return {}
    tags = {
        f"{TAG_PREFIX}metric": str(evidence["metric"]),
        f"{TAG_PREFIX}day": str(evidence["day"]),
        f"{TAG_PREFIX}cases": str(evidence["cases"]),
        f"{TAG_PREFIX}loses": str(bool(evidence["loses"])).lower(),
    }
    for role in ("champion", "challenger", "difference"):
        est = evidence[role]
        fmt = "{:+.4f}" if role == "difference" else "{:.4f}"
        for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high")):
            tags[f"{TAG_PREFIX}{role}{suffix}"] = fmt.format(float(est[key]))
    return tags


def with_reviewed_evidence(
    params: Params, stage: str, decision: PromotionDecision
) -> tuple[PromotionDecision, dict[str, str]]:
    """The decision after the reviewed evidence of `stage`, and the tags to set on the version.

    A decision to promote becomes a rejection when `reviewed_veto` refuses it (its reason is
    the last one); a rejection on match rate also gets the reviewed reason when it applies.
    Without reviewed days (no review queue yet) the decision is returned unchanged, no tags.
    """
    evidence = reviewed_evidence(params, stage)
    veto = reviewed_veto(evidence)
    if veto is not None:
        decision = replace(decision, promote=False, reasons=(*decision.reasons, veto))
    return decision, reviewed_tags(evidence)


def reviewed_decision(
    params: Params, stage: str, name: str, version: str, decision: PromotionDecision
) -> PromotionDecision:
    """`with_reviewed_evidence`, with the reviewed figures tagged on the challenger version
    `name`/`version` in the registry; the decision to record (`flows.lifecycle.decide`)."""
    from pipelines.registry.audit import set_version_tags
    from pipelines.registry.store import registry_client

    decision, tags = with_reviewed_evidence(params, stage, decision)
    if tags:
        set_version_tags(registry_client(params), name, version, tags)
    return decision
