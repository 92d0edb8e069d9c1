"""Approval-gated promotion: the request on the challenger's version, the reviewer's tag, the audit.

Why model version tags: a reviewer works in the MLflow UI, where tags are what they can set on a
version — and behind `mlflow server --app-name basic-auth` only users with EDIT on the registered
model can. The flow records a *promotion request* with its evidence on the challenger's version;
the reviewer approves by adding the tag `promote.approval_tag` (default `casepilot.approved_by`)
with their name. MLflow keeps no author or time per tag, so the time lives in
`casepilot.approved_at`: set by the reviewer, or stamped by the promote step when it first sees
the approval. Every event is also an MLflow run in the registry experiment (the audit trail).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipelines.registry_audit import (
    jsonable,
    log_audit_run,
    now_iso,
    page_event,
    set_version_tags,
    version_url,
)
from pipelines.registry_store import (
    CHALLENGER,
    CHAMPION,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from monitoring.promotion import PromotionDecision
    from pipelines.config import Params

REQUESTED = "casepilot.promotion_requested"
REQUESTED_AT = "casepilot.promotion_requested_at"
EVIDENCE = "casepilot.promotion_evidence"  # the decision as JSON
LINK = "casepilot.promotion_link"  # this version's page in the MLflow UI
APPROVED_AT = "casepilot.approved_at"
BOOTSTRAP = "casepilot.bootstrap"
README_SECTION = "README.md, 'Promotion and approval'"


class PromotionRefused(PermissionError):
    """The challenger may not become champion: no promotion request, or no reviewer approval."""


class UnapprovedChampion(PermissionError):
    """`champion` points at a version nobody approved (nor bootstrapped): refuse to load it."""


@dataclass(frozen=True)
class Approval:
    """Who approved a version and when; `bootstrap` for a first champion set by an operator."""

    by: str
    at: str | None
    bootstrap: bool = False


@dataclass(frozen=True)
class PromotionRequest:
    """A recorded request: the version, where to review it, and the audit run."""

    stage: str
    name: str
    version: str
    requested_at: str
    link: str
    audit_run_id: str


def approval_record(tags: Mapping[str, str], approval_tag: str) -> Approval | None:
    """Return the approval a version's tags record, or None when it has none."""
    if tags.get(BOOTSTRAP) == "true":
        return Approval(tags.get("casepilot.promoted_by") or "unknown", None, bootstrap=True)
    approver = (tags.get(approval_tag) or "").strip()
    return Approval(approver, tags.get(APPROVED_AT) or None) if approver else None


def _challenger(client: MlflowClient, name: str, stage: str) -> str:
    version = aliases_of(client, name).get(CHALLENGER)
    if version is None:
        raise LookupError(
            f"{name} has no challenger; register a version that passes the offline gates "
            f"with `casepilot register {stage} --model DIR` first"
        )
    return version


def request_promotion(
    params: Params, stage: str, decision: PromotionDecision, *, version: str | None = None
) -> PromotionRequest:
    """Record a promotion request with its evidence on the challenger's model version.

    `decision` is `monitoring.promotion.decide_promotion`'s; a decision against promotion is
    refused (ValueError). A new request clears an earlier approval: the reviewer approves this
    evidence, not an older one.
    """
    if not decision.promote:
        raise ValueError(
            f"the shadow decision does not support promoting {stage}: "
            + "; ".join(decision.reasons)
        )
    client = registry_client(params)
    name = registered_model_name(params, stage)
    version = version or _challenger(client, name, stage)
    if aliases_of(client, name).get(CHAMPION) == version:
        raise ValueError(f"{name} version {version} is already the champion; nothing to request")
    requested_at, link = now_iso(), version_url(params, name, version)
    evidence = jsonable(decision.as_dict())
    tags = {
        REQUESTED: "true",
        REQUESTED_AT: requested_at,
        EVIDENCE: json.dumps(evidence, sort_keys=True),
        LINK: link,
        "casepilot.evidence.cases": str(decision.cases),
        "casepilot.evidence.p_value": f"{decision.p_value:.6g}",
        "casepilot.evidence.champion_match_rate": f"{decision.champion_match_rate:.4f}",
        "casepilot.evidence.challenger_match_rate": f"{decision.challenger_match_rate:.4f}",
        **{
            f"casepilot.evidence.stage_delta.{s}": f"{d:+.4f}"
            for s, d in decision.stage_deltas.items()
        },
    }
    existing = client.get_model_version(name, version).tags
    for stale in (params.promote.approval_tag, APPROVED_AT):
        if stale in existing:
            client.delete_model_version_tag(name, version, stale)
    set_version_tags(client, name, version, tags)
    client.update_model_version(
        name,
        version,
        description=(
            f"Promotion requested {requested_at}: challenger match rate "
            f"{decision.challenger_match_rate:.3f} vs champion {decision.champion_match_rate:.3f} "
            f"on {decision.cases} shadow cases (McNemar p={decision.p_value:.4g}). To approve, add "
            f"the tag `{params.promote.approval_tag}` = your name (optionally "
            f"`{APPROVED_AT}` = ISO time); then run the promote flow or `casepilot promote`."
        ),
    )
    _, run_id = log_audit_run(
        client,
        params,
        "promotion-request",
        stage,
        {"casepilot.model": name, "casepilot.version": version, "casepilot.link": link},
        evidence,
    )
    return PromotionRequest(stage, name, version, requested_at, link, run_id)


def approve_version(
    params: Params, stage: str, reviewer: str, *, version: str | None = None
) -> Approval:
    """Set the approval tags on the challenger (or `version`): what a reviewer does in the UI.

    For scripted reviews such as the demo's named demo reviewer; production approvals are made
    by people in the MLflow UI, which basic-auth restricts to users with EDIT on the model.
    """
    if not reviewer.strip():
        raise ValueError("reviewer must name who approves, e.g. 'jane.doe'")
    client = registry_client(params)
    name = registered_model_name(params, stage)
    version = version or _challenger(client, name, stage)
    at = now_iso()
    client.set_model_version_tag(name, version, params.promote.approval_tag, reviewer.strip())
    client.set_model_version_tag(name, version, APPROVED_AT, at)
    return Approval(reviewer.strip(), at)


def check_approval(client: MlflowClient, params: Params, version: ModelVersion) -> Approval:
    """Return the approval of a requested promotion, or raise PromotionRefused saying what to do.

    Needs a promotion request and the reviewer's tag, given after the request. Stamps
    `casepilot.approved_at` when the reviewer left it out (the first time it is seen).
    """
    name, number, tags = version.name, str(version.version), version.tags or {}
    where = f"{name} version {number} ({version_url(params, name, number)})"
    tag = params.promote.approval_tag
    if tags.get(REQUESTED) != "true":
        raise PromotionRefused(
            f"{where} has no promotion request: only a challenger that beat the champion on "
            "shadow traffic gets one (the promote flow records it with its evidence)"
        )
    approver = (tags.get(tag) or "").strip()
    if not approver:
        raise PromotionRefused(
            f"{where} is not approved: a reviewer sets the tag `{tag}` = their name on that "
            f"version in the MLflow UI ({README_SECTION}), then promotion can run"
        )
    approved_at = tags.get(APPROVED_AT)
    if approved_at is None:
        approved_at = now_iso()
        client.set_model_version_tag(name, number, APPROVED_AT, approved_at)
    elif _when(approved_at, f"{where}: tag `{APPROVED_AT}`") < _when(
        tags.get(REQUESTED_AT, ""), f"{where}: tag `{REQUESTED_AT}`"
    ):
        raise PromotionRefused(
            f"{where}: the approval ({approved_at}) predates the promotion request "
            f"({tags[REQUESTED_AT]}); a reviewer must approve the current evidence"
        )
    return Approval(approver, approved_at)


def _when(value: str, what: str) -> datetime:
    """Parse an ISO 8601 time from a tag (naive = UTC), or refuse naming the tag."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PromotionRefused(
            f"{what} is {value!r}, not an ISO 8601 time; use e.g. 2026-11-30T14:05:00+00:00 "
            "or delete the tag (the promote step then stamps the time it saw the approval)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def refuse_unapproved_champion(params: Params, stage: str, version: ModelVersion) -> None:
    """Raise UnapprovedChampion, and page, when `version` carries no approval record.

    The page's dedup key names the version, so a service polling every few seconds pages
    once per cooldown, not on every poll.
    """
    tags = version.tags or {}
    if approval_record(tags, params.promote.approval_tag) is not None:
        return
    name, number = version.name, str(version.version)
    link = version_url(params, name, number)
    message = (
        f"{name}@champion is version {number}, which has no approval record (no tag "
        f"`{params.promote.approval_tag}`, not `{BOOTSTRAP}=true`): refusing to load it. Move "
        f"champion back with `casepilot rollback {stage} --reason ...`, or have a reviewer "
        f"approve it at {link} ({README_SECTION})"
    )
    page_event(
        params,
        summary=f"champion of {stage} moved to unapproved {name} v{number}; not loaded",
        dedup_key=f"casepilot-unapproved-champion-{name}-v{number}",
        link=link,
        link_text="MLflow model version",
        details={"stage": stage, "model": name, "version": number},
    )
    raise UnapprovedChampion(message)
