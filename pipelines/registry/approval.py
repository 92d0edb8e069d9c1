"""Approval-gated promotion: a signed request, a reviewer's signed approval, the checks.

MLflow cannot restrict who sets a model version tag or alias, so a tag cannot be an approval.
The flow records a *promotion request* on the challenger's version (tags with the evidence, for
the reviewer to read in the MLflow UI) and as a run in the requester's ledger; a reviewer
approves with `casepilot approve STAGE --version N` (`approve_request`), a run in their own
ledger that names the model, the version, the request run and the SHA-256 of the evidence
(`pipelines.registry.approval_ledger`: under `casepilot up` only that user can write their
ledger). The promote step accepts an approval only from a reviewer who is neither the requester
nor the promoter, for exactly the version and evidence of the current request.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.registry.approval_ledger import (
    AUTHENTICATED,
    UNAUTHENTICATED,
    SignIn,
    authenticated_user,
    evidence_sha256,
    record_signed_run,
    signed_in,
    signed_ledgers,
)
from pipelines.registry.approval_verify import (
    APPROVAL_RUN,
    APPROVED_AT,
    BOOTSTRAP,
    EVIDENCE,
    EVIDENCE_SHA,
    LINK,
    README_SECTION,
    REQUEST_RUN,
    REQUESTED,
    REQUESTED_AT,
    REQUESTED_BY,
    Approval,
    PromotionRefused,
    UnapprovedChampion,
    check_approval,
    current_request,
)
from pipelines.registry.audit import jsonable, now_iso, set_version_tags, version_url
from pipelines.registry.store import (
    CHALLENGER,
    CHAMPION,
    aliases_of,
    registered_model_name,
    registry_client,
)

# The tag names, refusals and checks live in approval_verify; callers import them from here.
__all__ = [
    "APPROVAL_RUN", "APPROVED_AT", "BOOTSTRAP", "EVIDENCE", "EVIDENCE_SHA", "LINK", "REQUESTED",
    "REQUESTED_AT", "REQUESTED_BY", "REQUEST_RUN", "Approval", "PromotionRefused",
    "PromotionEvidence", "PromotionRequest", "SignIn", "UnapprovedChampion", "approval_record",
    "approve_request", "approve_version", "check_approval", "request_promotion",
]  # fmt: skip

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params


class PromotionEvidence(Protocol):
    """The shadow decision a request records (monitoring's `PromotionDecision` is one)."""

    @property
    def promote(self) -> bool: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def cases(self) -> int: ...
    @property
    def champion_match_rate(self) -> float: ...
    @property
    def challenger_match_rate(self) -> float: ...
    @property
    def p_value(self) -> float: ...
    @property
    def stage_deltas(self) -> dict[str, float]: ...
    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PromotionRequest:
    """A recorded request: the version, where to review it, and the signed request run."""

    stage: str
    name: str
    version: str
    requested_at: str
    link: str
    audit_run_id: str
    requested_by: str = ""
    evidence_sha256: str = ""


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


def _signed_client(params: Params) -> tuple[MlflowClient, str | None]:
    """A registry client and the user the server signed it in as (None: no sign-in)."""
    from pipelines.registry.tracking import client_tracking_uri

    uri = client_tracking_uri(params)
    return registry_client(params), authenticated_user(uri)


def request_promotion(
    params: Params,
    stage: str,
    decision: PromotionEvidence,
    *,
    version: str | None = None,
    requested_by: str | None = None,
) -> PromotionRequest:
    """Record a promotion request with its evidence on the challenger's model version.

    `decision` is the shadow decision (`PromotionEvidence`, e.g. monitoring's
    `decide_promotion`); a decision against promotion is refused (ValueError). The request is
    also a run in the requester's ledger, binding the version to the SHA-256 of the evidence;
    a new request supersedes older approvals. The requester is the signed-in MLflow user;
    `requested_by` (default: the OS user) only names them on a store without sign-in.
    """
    if not decision.promote:
        raise ValueError(
            f"the shadow decision does not support promoting {stage}: "
            + "; ".join(decision.reasons)
        )
    client, signer = _signed_client(params)
    name = registered_model_name(params.register, stage)
    version = version or _challenger(client, name, stage)
    if aliases_of(client, name).get(CHAMPION) == version:
        raise ValueError(f"{name} version {version} is already the champion; nothing to request")
    requester = signer or requested_by or getpass.getuser()
    requested_at, link = now_iso(), version_url(params, name, version)
    evidence_json = json.dumps(jsonable(decision.as_dict()), sort_keys=True)
    sha = evidence_sha256(evidence_json)
    run_id = record_signed_run(
        client,
        params,
        signed_ledgers(client, signer),
        requester,
        "promotion-request",
        {"model": name, "version": version, "stage": stage, "evidence_sha256": sha},
    )
    existing = client.get_model_version(name, version).tags
    # REQUESTED is withdrawn first ("false": an update, which the promoter's EDIT allows; deleting
    # a tag needs MANAGE) and set last: MLflow writes a version's tags one at a time, and whoever
    # reads `requested=true` (a reviewer, the demo) must find the whole request
    if existing.get(REQUESTED) == "true":
        client.set_model_version_tag(name, version, REQUESTED, "false")
    for stale in (params.promote.approval_tag, APPROVED_AT, APPROVAL_RUN):
        if stale in existing:
            client.delete_model_version_tag(name, version, stale)
    set_version_tags(
        client,
        name,
        version,
        {**_request_tags(decision, evidence_json, link), REQUESTED_AT: requested_at,
         REQUESTED_BY: requester, REQUEST_RUN: run_id, EVIDENCE_SHA: sha},
    )  # fmt: skip
    client.set_model_version_tag(name, version, REQUESTED, "true")
    client.update_model_version(
        name, version, description=_request_description(params, stage, version, decision)
    )
    return PromotionRequest(stage, name, version, requested_at, link, run_id, requester, sha)


def _request_tags(decision: PromotionEvidence, evidence_json: str, link: str) -> dict[str, str]:
    """The evidence as version tags, the way the reviewer reads it in the MLflow UI."""
    return {
        EVIDENCE: evidence_json,
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


def _request_description(
    params: Params, stage: str, version: str, decision: PromotionEvidence
) -> str:
    return (
        f"Promotion requested {now_iso()}: challenger match rate "
        f"{decision.challenger_match_rate:.3f} vs champion {decision.champion_match_rate:.3f} "
        f"on {decision.cases} shadow cases (McNemar p={decision.p_value:.4g}). To approve, a "
        f"reviewer other than the requester runs `casepilot approve {stage} --version {version}` "
        "signed in as themselves (MLFLOW_TRACKING_USERNAME/PASSWORD); then the promote flow or "
        f"`casepilot promote` moves champion ({README_SECTION})."
    )


def approve_request(
    params: Params,
    stage: str,
    version: str,
    *,
    sign_in: SignIn | None = None,
    reviewer: str | None = None,
) -> Approval:
    """Approve the current promotion request of `stage` version `version`; the approval.

    Signs in with `sign_in` (default: MLFLOW_TRACKING_USERNAME/PASSWORD) and records the
    approval as a run in that reviewer's ledger, bound to the request run and the SHA-256 of
    its evidence. Refuses (PromotionRefused) a signer who is not a reviewer or who made the
    request. `reviewer` names the approver only on a store without sign-in; under sign-in it
    must match the signed-in user or be left out.
    """
    with signed_in(sign_in):
        client, signer = _signed_client(params)
        if signer is not None and reviewer not in (None, signer):
            raise ValueError(f"signed in as {signer!r}, not {reviewer!r}: drop reviewer=")
        who = (signer or reviewer or "").strip()
        if not who:
            raise ValueError("reviewer must name who approves, e.g. 'jane.doe'")
        ledgers = signed_ledgers(client, signer)
        name = registered_model_name(params.register, stage)
        current = client.get_model_version(name, str(version))
        request = current_request(client, params, current, ledgers)
        if ledgers is not None and who not in ledgers.reviewers:
            raise PromotionRefused(
                f"{who!r} is not a reviewer (reviewers: {', '.join(sorted(ledgers.reviewers))}):"
                " only a reviewer's approval counts; sign in as one"
            )
        if who == request.requested_by:
            raise PromotionRefused(
                f"{who!r} requested the promotion of {name} v{version}: a reviewer other than "
                "the requester must approve it"
            )
        binding = {
            "model": name,
            "version": str(version),
            "stage": stage,
            "evidence_sha256": request.evidence_sha256,
            "request_run_id": request.run_id,
        }
        run_id = record_signed_run(client, params, ledgers, who, "approval", binding)
        at = now_iso()
        set_version_tags(
            client, name, str(version), {params.promote.approval_tag: who, APPROVED_AT: at}
        )
    store = AUTHENTICATED if ledgers is not None else UNAUTHENTICATED
    return Approval(who, at, run_id=run_id, requested_by=request.requested_by, store=store)


def approve_version(
    params: Params, stage: str, reviewer: str, *, version: str | None = None
) -> Approval:
    """Approve the challenger (or `version`) as `reviewer`, signed in as whoever the
    environment names: `approve_request` for scripts that approve the current challenger."""
    if not reviewer.strip():
        raise ValueError("reviewer must name who approves, e.g. 'jane.doe'")
    if version is None:
        client = registry_client(params)
        version = _challenger(client, registered_model_name(params.register, stage), stage)
    from pipelines.registry.tracking import client_tracking_uri

    signed = authenticated_user(client_tracking_uri(params))
    return approve_request(params, stage, version, reviewer=None if signed else reviewer.strip())
