"""Moving `champion` to an approved challenger; the replaced champion stays for rollback.

Only the registry's champion moves ever touch `champion`: a first champion (`bootstrap`), an
approved promotion (here) and a rollback (`rollback`). A promotion needs a recorded promotion
request and a reviewer's signed approval (`pipelines.registry.approval`); the replaced champion
stays addressable as `previous-champion`. Every move is recorded on both versions' tags and as
an MLflow run in the registry experiment (who, when, evidence).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from pipelines.registry.approval import (
    APPROVAL_RUN,
    APPROVED_AT,
    BOOTSTRAP,
    EVIDENCE,
    Approval,
    PromotionRefused,
    UnapprovedChampion,
    check_approval,
)
from pipelines.registry.approval_ledger import authenticated_user, signed_ledgers
from pipelines.registry.audit import log_audit_run, now_iso, set_version_tags
from pipelines.registry.rollback import Rollback, rollback_champion
from pipelines.registry.store import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    PREVIOUS_TAG,
    PROMOTED_AT,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params

# The moves a reviewer's approval governs in one import: the refusals and the rollback too.
__all__ = [
    "PROMOTE_WITH",
    "Promotion",
    "PromotionRefused",
    "Rollback",
    "UnapprovedChampion",
    "promote_challenger",
    "promote_stages",
    "rollback_champion",
]


@dataclass(frozen=True)
class Promotion:
    """A champion move: which version became champion, which it replaced, and whether skipped."""

    stage: str
    name: str
    version: str | None
    previous: str | None
    skipped: str | None = None  # why nothing moved
    approved_by: str | None = None
    audit_run_id: str | None = None
    forced: bool = False  # a bootstrap past failed offline gates (`force=True`)


# JSON {stage: version}: the other members of a group requested as one (stages that win only
# together, or a first champion cascade); none of them moves before all are approved
PROMOTE_WITH = "casepilot.promote_with"


class _Move(NamedTuple):
    """An approved promotion about to happen: the versions, the approval, who and when."""

    stage: str
    name: str
    version: str
    previous: str | None
    approval: Approval
    promoted_by: str
    at: str


def promote_challenger(
    params: Params,
    stage: str,
    *,
    promoted_by: str | None = None,
    approved_by: str | None = None,
) -> Promotion:
    """Move `champion` to the approved challenger; the old champion stays `previous-champion`.

    Refuses (`PromotionRefused`) unless the challenger's current promotion request carries a
    signed approval by a reviewer who neither requested nor promotes
    (`pipelines.registry.approval_verify.check_approval`). `promoted_by` is who ran the move
    (default: the OS user); under sign-in the server's name for the promoter is what the check
    and the audit use. `approved_by` is deprecated: it never approves anything (taken as
    `promoted_by`).
    """
    if approved_by is not None:
        promoted_by = promoted_by or _deprecated_approved_by(approved_by)
    from pipelines.registry.tracking import client_tracking_uri

    signed_in_as = authenticated_user(client_tracking_uri(params))
    client = registry_client(params)
    name = registered_model_name(params.register, stage)
    aliases = aliases_of(client, name)
    version = aliases.get(CHALLENGER)
    if version is None:
        raise LookupError(
            f"{name} has no challenger to promote; register a version that "
            "passes the offline gates first"
        )
    challenger = client.get_model_version(name, version)
    promoted_by = signed_in_as or promoted_by or getpass.getuser()
    ledgers = signed_ledgers(client, signed_in_as)
    approval = check_approval(client, params, challenger, promoter=promoted_by, ledgers=ledgers)
    _check_group(client, params, challenger, promoter=promoted_by, ledgers=ledgers)
    previous = aliases.get(CHAMPION)
    previous = None if previous == version else previous
    move = _Move(stage, name, version, previous, approval, promoted_by, now_iso())
    run_id = _audit_promotion(client, params, move, (challenger.tags or {}).get(EVIDENCE, "{}"))
    _move_champion(client, params, move, run_id)
    return Promotion(stage, name, version, previous, approved_by=approval.by, audit_run_id=run_id)


def promote_stages(params: Params, stages: Iterable[str]) -> tuple[list[Promotion], list[str]]:
    """Promote each stage's approved challenger; (the promotions, why the others were refused).

    A stage without a challenger or without an approval is refused on its own: the others
    still move (unless a promote-together group holds them back, `PROMOTE_WITH`).
    """
    promotions, refusals = [], []
    for stage in stages:
        try:
            promotions.append(promote_challenger(params, stage))
        except (LookupError, PromotionRefused) as err:
            refusals.append(str(err))
    return promotions, refusals


def _deprecated_approved_by(approved_by: str) -> str:
    """Warn that `approved_by=` approves nothing any more; it names the promoter."""
    import warnings

    warnings.warn(
        "promote_challenger(approved_by=...) no longer approves: the approver is read from "
        "the challenger's approval tag; pass promoted_by= for who runs the promotion",
        DeprecationWarning,
        stacklevel=3,  # the caller of promote_challenger
    )
    return approved_by


def _audit_promotion(client: MlflowClient, params: Params, move: _Move, evidence: str) -> str:
    """Record the promotion as an audit run with the request's evidence; its run id."""
    approval = move.approval
    run_tags = {
        "casepilot.model": move.name,
        "casepilot.version": move.version,
        PREVIOUS_TAG: move.previous or "",
        "casepilot.approved_by": approval.by,
        "casepilot.approved_at": approval.at or "",
        APPROVAL_RUN: approval.run_id or "",
        "casepilot.requested_by": approval.requested_by or "",
        "casepilot.approval_store": approval.store or "",
        "casepilot.promoted_by": move.promoted_by,
    }
    evidence_dict = _evidence(evidence, move.version, move.previous)
    _, run_id = log_audit_run(client, params, "promotion", move.stage, run_tags, evidence_dict)
    return run_id


def _move_champion(client: MlflowClient, params: Params, move: _Move, run_id: str) -> None:
    """Move the aliases (champion, previous-champion, challenger) and tag both versions."""
    name, version, previous, approval = move.name, move.version, move.previous, move.approval
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.delete_registered_model_alias(name, CHALLENGER)
    set_version_tags(
        client,
        name,
        version,
        {
            BOOTSTRAP: "false",
            params.promote.approval_tag: approval.by,
            APPROVED_AT: approval.at or move.at,
            APPROVAL_RUN: approval.run_id or "",
            "casepilot.approval_store": approval.store or "",
            "casepilot.promoted_by": move.promoted_by,
            PROMOTED_AT: move.at,
            PREVIOUS_TAG: previous or "",
            "casepilot.promotion_run_id": run_id,
        },
    )
    if previous is not None:
        replaced = {"casepilot.replaced_by": version, "casepilot.replaced_at": move.at,
                    "casepilot.replaced_run_id": run_id}  # fmt: skip
        set_version_tags(client, name, previous, replaced)


def _check_group(
    client: Any, params: Params, challenger: Any, *, promoter: str, ledgers: Any
) -> None:
    """PromotionRefused unless every other member of the challenger's group (`PROMOTE_WITH`)
    is champion already or an approved challenger: a group moves whole or not at all."""
    try:
        group = json.loads((challenger.tags or {}).get(PROMOTE_WITH) or "{}")
    except ValueError:
        group = {}
    own = f"{challenger.name} v{challenger.version}"
    for stage, version in sorted(group.items()):
        name = registered_model_name(params.register, stage)
        aliases = aliases_of(client, name)
        if aliases.get(CHAMPION) == str(version):
            continue
        if aliases.get(CHALLENGER) != str(version):
            raise PromotionRefused(
                f"{own} was requested together with {name} v{version}, which is no longer the "
                "challenger: the group cannot move whole; the next monitor run decides anew"
            )
        member = client.get_model_version(name, str(version))
        try:
            check_approval(client, params, member, promoter=promoter, ledgers=ledgers)
        except PromotionRefused as err:
            raise PromotionRefused(
                f"{own} moves only together with {name} v{version}, not approved yet: {err}"
            ) from err


def _evidence(evidence_json: str, version: str, previous: str | None) -> dict[str, Any]:
    try:
        evidence = json.loads(evidence_json)
    except json.JSONDecodeError:
        evidence = {"unparsed_evidence": evidence_json}
    return {**evidence, "version": version, "previous": previous}
