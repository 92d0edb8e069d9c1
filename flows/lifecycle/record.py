"""The promotion decision on a challenger version, recorded once: request + notify, or reject.

A decision that supports promotion → `pipelines.registry.approval.request_promotion` records the
request and its per-stage evidence on the version, and the reviewers get one message with the
evidence and the MLflow link (monitoring/notify/channels.py: apprise, through the paging
channel); one that does not → the version is tagged `casepilot.challenger_rejected=true` with
the reasons.

Idempotent: the hash of the evidence is stored on the version (`casepilot.decision_key`); the
same evidence records nothing and sends nothing, and a version that already carries a request
is not asked again (a new request would clear a reviewer's approval), only re-notified if the
earlier message failed (`casepilot.notified_key`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from monitoring.decisions.replay import evidence_key
from pipelines.registry.approval import REQUESTED, request_promotion
from pipelines.registry.audit import now_iso, set_version_tags
from pipelines.registry.promote import PROMOTE_WITH
from pipelines.registry.store import registry_client

if TYPE_CHECKING:
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.config import Params
    from pipelines.registry.resolve import ResolvedStage

DECISION_KEY = "casepilot.decision_key"
NOTIFIED_KEY = "casepilot.notified_key"
REJECTED = "casepilot.challenger_rejected"
REJECTED_REASONS = "casepilot.rejected_reasons"
DECIDED_AT = "casepilot.decided_at"
DECISION_INPUTS = "casepilot.decision_inputs"  # hash of the cases and models decided on
DECIDED_BY = "casepilot.decided_by"  # the Prefect flow run (and deployment) that decided


def record_decision(
    params: Params,
    stage: str,
    challenger: ResolvedStage,
    decision: PromotionDecision,
    link: str | None = None,
    together: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Request + notify, or tag the rejection — unless this evidence was recorded already.

    `together` (stage → version) are the other members of a group requested as one: promote
    moves none of them before all are approved (`casepilot.promote_with`)."""
    client = registry_client(params)
    name, version = challenger.name, challenger.version
    tags = client.get_model_version(name, version).tags or {}
    key = evidence_key(stage, f"{name}/{version}", decision)
    summary = {"key": key, "evidence": decision.as_dict()}
    if tags.get(REQUESTED) == "true":
        return {**summary, **_renotify(params, client, stage, challenger, decision, tags, link)}
    if tags.get(DECISION_KEY) == key:
        return {**summary, "status": "unchanged", "reason": "same evidence as the last decision"}
    if not decision.promote:
        set_version_tags(client, name, version, {
            REJECTED: "true", REJECTED_REASONS: "; ".join(decision.reasons)[:4900],
            DECISION_KEY: key, DECIDED_AT: now_iso(), DECIDED_BY: decided_by()})  # fmt: skip
        return {**summary, "status": "rejected", "reason": "; ".join(decision.reasons)}
    # the group first: once the request is on the version a reviewer may approve it, and
    # promote must then already know what the version moves with
    client.set_model_version_tag(name, version, PROMOTE_WITH, json.dumps(together or {}))
    request = request_promotion(params, stage, decision, version=version)
    set_version_tags(client, name, version, {REJECTED: "false", DECISION_KEY: key,
                                             DECIDED_AT: request.requested_at,
                                             DECIDED_BY: decided_by()})  # fmt: skip
    sent = _notify(params, stage, name, version, request.link, link, decision, together)
    if sent.status == "sent":
        client.set_model_version_tag(name, version, NOTIFIED_KEY, key)
    return {**summary, "status": "requested", "link": request.link,
            "audit_run_id": request.audit_run_id, "notified": sent.status,
            "reason": sent.reason}  # fmt: skip


def _renotify(
    params: Params,
    client: Any,
    stage: str,
    challenger: ResolvedStage,
    decision: PromotionDecision,
    tags: dict[str, str],
    link: str | None,
) -> dict[str, Any]:
    """An already requested version: `unchanged`, or notified again if the last message failed."""
    name, version = challenger.name, challenger.version
    requested = tags.get(DECISION_KEY, "")
    if tags.get(NOTIFIED_KEY) == requested:
        return {"status": "unchanged", "reason": "promotion already requested"}
    sent = _notify(params, stage, name, version, tags.get("casepilot.promotion_link"), link,
                   decision, _group(tags.get(PROMOTE_WITH)))  # fmt: skip
    if sent.status == "sent":
        client.set_model_version_tag(name, version, NOTIFIED_KEY, requested)
    return {"status": "requested", "notified": sent.status, "reason": sent.reason}


def decided_by() -> str:
    """`monitor/casepilot run 'name'` inside a deployment run, else the flow run or process."""
    from prefect.runtime import deployment, flow_run

    run = flow_run.name
    if not run:
        return "a direct call (no Prefect flow run)"
    where = f"{flow_run.flow_name}/{deployment.name}" if deployment.name else flow_run.flow_name
    return f"{where} run '{run}'"


def _notify(
    params: Params,
    stage: str,
    name: str,
    version: str,
    mlflow_link: str | None,
    evidence_link: str | None,
    decision: PromotionDecision,
    together: dict[str, str] | None = None,
) -> Any:
    """Send the reviewers the request: the evidence, the MLflow link and how to approve."""
    from monitoring.notify.channels import notify_reviewers

    title = f"casepilot: review the {stage} challenger ({name} v{version})"
    lines = [
        _evidence_line(stage, decision, together),
        *decision.reasons,
        f"Review the evidence in MLflow: {mlflow_link}",
        f"Approve, signed in as a reviewer other than the requester: `casepilot approve {stage} "
        f"--version {version}`; the promote deployment then moves champion within "
        f"{params.schedule.promote_poll_seconds} s.",
    ]
    if evidence_link:
        lines.append(f"Monitoring evidence: {evidence_link}")
    details = {"stage": stage, "model": name, "version": version, "link": mlflow_link,
               "evidence": decision.as_dict()}  # fmt: skip
    return notify_reviewers(params, title, "\n".join(lines), details)


def _evidence_line(stage: str, decision: PromotionDecision, together: dict[str, str] | None) -> str:
    """The notification's first line: the replayed win, or why a first champion is proposed."""
    if not decision.cases:
        return (
            f"The {stage} stage has no champion yet: its challenger is proposed as the first "
            "(the first champion cascade moves whole, once every stage is approved)."
        )
    swapped = (
        f"{stage} swapped together with {', '.join(f'{s} v{v}' for s, v in together.items())}; "
        "approve every one of them: promote moves them together"
        if together
        else f"only the {stage} stage swapped"
    )
    return (
        f"The {stage} challenger beat the champion on {decision.cases} replayed shadow cases "
        f"({swapped}): match rate {decision.challenger_match_rate:.3f} vs "
        f"{decision.champion_match_rate:.3f}, one-sided McNemar p={decision.p_value:.3g}."
    )


def _group(tag: str | None) -> dict[str, str] | None:
    try:
        return json.loads(tag) or None if tag else None
    except ValueError:
        return None
