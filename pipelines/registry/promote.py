"""Moving `champion`: a first (bootstrap) champion, approved promotion, and rollback.

Only these functions ever move `champion`. A promotion needs a recorded promotion request and a
reviewer's approval tag on the challenger's version (`pipelines.registry.approval`); the replaced champion
stays addressable as `previous-champion` for rollback. Every move is recorded on both versions'
tags and as an MLflow run in the registry experiment (who, when, evidence).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.data.contract import STAGES
from pipelines.registry.approval import (
    APPROVAL_RUN,
    APPROVED_AT,
    BOOTSTRAP,
    EVIDENCE,
    PromotionRefused,
    UnapprovedChampion,
    check_approval,
)
from pipelines.registry.approval_ledger import authenticated_user, signed_ledgers
from pipelines.registry.audit import log_audit_run, now_iso, set_version_tags
from pipelines.registry.rollback import AutoRollback, Rollback, auto_rollback, rollback_champion
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
    from pipelines.config import Params

# Every champion move in one import: rollback lives in registry_rollback, refusals in approval.
__all__ = [
    "AutoRollback",
    "Promotion",
    "PromotionRefused",
    "Rollback",
    "UnapprovedChampion",
    "auto_rollback",
    "bootstrap_champion",
    "promote_challenger",
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


GATE, GATE_REASONS = "casepilot.gate", "casepilot.gate_reasons"
FORCED = "casepilot.bootstrap_forced"
# JSON {stage: version}: the other members of a group requested as one (stages that win only
# together, or a first champion cascade); none of them moves before all are approved
PROMOTE_WITH = "casepilot.promote_with"


def bootstrap_champion(
    params: Params,
    *,
    by: str | None = None,
    stages: Iterable[str] = STAGES,
    force: bool = False,
) -> list[Promotion]:
    """Give each stage without a champion a first one: its challenger, else its latest version.

    There is no earlier champion to compare against, so no approval is asked: it is recorded as
    `casepilot.bootstrap=true` with who (default: the OS user) and when, on the version and as
    an audit run. A stage that already has a champion is left alone.

    A version that failed its offline gates (`casepilot.gate=failed`) is refused — for every
    stage before anything moves — with `PromotionRefused` naming the gate; `force=True` makes
    it champion anyway, recorded as `casepilot.bootstrap_forced=true` with the gate's reasons.
    """
    by, stages = by or getpass.getuser(), list(stages)
    client = registry_client(params)
    outcomes: list[Promotion] = []
    chosen: list[tuple[str, str, str, dict[str, str]]] = []  # stage, name, version, aliases
    for stage in stages:
        name = registered_model_name(params, stage)
        aliases = aliases_of(client, name)
        if CHAMPION in aliases:
            note = f"already has champion v{aliases[CHAMPION]}"
            outcomes.append(Promotion(stage, name, aliases[CHAMPION], None, skipped=note))
            continue
        version = aliases.get(CHALLENGER)
        if version is None:
            found = client.search_model_versions(filter_string=f"name = '{name}'")
            version = str(max(int(v.version) for v in found)) if found else None
        if version is None:
            outcomes.append(Promotion(stage, name, None, None, skipped="no version registered"))
            continue
        chosen.append((stage, name, version, aliases))
    gates = {
        (stage, version): client.get_model_version(name, version).tags or {}
        for stage, name, version, _ in chosen
    }
    failed = {key: tags for key, tags in gates.items() if tags.get(GATE) == "failed"}
    if failed and not force:
        raise PromotionRefused(_gate_refusal(params, failed))
    for stage, name, version, aliases in chosen:
        forced = (stage, version) in failed
        reasons = failed.get((stage, version), {}).get(GATE_REASONS, "")
        at = now_iso()
        client.set_registered_model_alias(name, CHAMPION, version)
        if aliases.get(CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        record = {
            BOOTSTRAP: "true",
            "casepilot.promoted_by": by,
            PROMOTED_AT: at,
            PREVIOUS_TAG: "",
            **({FORCED: "true", "casepilot.forced_gate_reasons": reasons[:5000]} if forced else {}),
        }
        run_tags = {
            "casepilot.model": name,
            "casepilot.version": version,
            "casepilot.promoted_by": by,
            FORCED: str(forced).lower(),
        }
        evidence = {
            "version": version,
            "by": by,
            "at": at,
            "forced": forced,
            "gate": gates[(stage, version)].get(GATE, ""),
            "gate_reasons": reasons,
        }
        _, run_id = log_audit_run(client, params, "bootstrap", stage, run_tags, evidence)
        set_version_tags(client, name, version, {**record, "casepilot.promotion_run_id": run_id})
        outcomes.append(Promotion(stage, name, version, None, audit_run_id=run_id, forced=forced))
    order = {stage: i for i, stage in enumerate(stages)}
    return sorted(outcomes, key=lambda o: order[o.stage])


def _gate_refusal(params: Params, failed: dict[tuple[str, str], dict[str, str]]) -> str:
    """The refusal: which version failed which gate, and the two ways forward."""
    parts = [
        f"{stage} v{version} failed its offline gates ({tags.get(GATE_REASONS) or 'see its tags'})"
        for (stage, version), tags in sorted(failed.items())
    ]
    first = sorted(failed)[0][0]
    return (
        "refusing to bootstrap a champion that failed its offline gates: "
        + "; ".join(parts)
        + f". Fix: retrain and register a version that passes `register.gates.{first}` in "
        "params.yaml (or correct a gate that is wrong there), or accept it knowingly with "
        "`casepilot promote --bootstrap --force` (recorded as forced in the audit)"
    )


def promote_challenger(
    params: Params,
    stage: str,
    *,
    promoted_by: str | None = None,
    approved_by: str | None = None,
) -> Promotion:
    """Move `champion` to the approved challenger; the old champion stays `previous-champion`.

    Refuses (`pipelines.registry.approval.PromotionRefused`) unless the challenger's current promotion
    request carries a signed approval by a reviewer who neither requested nor promotes
    (`pipelines.registry.approval_verify.check_approval`). `promoted_by` is who ran the move (default:
    the OS user); under sign-in the server's name for the promoter is what the check and the
    audit use. `approved_by` is deprecated: it never approves anything (taken as `promoted_by`).
    """
    if approved_by is not None:
        import warnings

        warnings.warn(
            "promote_challenger(approved_by=...) no longer approves: the approver is read from "
            "the challenger's approval tag; pass promoted_by= for who runs the promotion",
            DeprecationWarning,
            stacklevel=2,
        )
        promoted_by = promoted_by or approved_by
    from pipelines.registry.tracking import client_tracking_uri

    signed_in_as = authenticated_user(client_tracking_uri(params))
    client = registry_client(params)
    name = registered_model_name(params, stage)
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
    if previous == version:
        previous = None
    at = now_iso()
    evidence_json = (challenger.tags or {}).get(EVIDENCE, "{}")
    run_tags = {
        "casepilot.model": name,
        "casepilot.version": version,
        PREVIOUS_TAG: previous or "",
        "casepilot.approved_by": approval.by,
        "casepilot.approved_at": approval.at or "",
        APPROVAL_RUN: approval.run_id or "",
        "casepilot.requested_by": approval.requested_by or "",
        "casepilot.approval_store": approval.store or "",
        "casepilot.promoted_by": promoted_by,
    }
    _, run_id = log_audit_run(
        client, params, "promotion", stage, run_tags, _evidence(evidence_json, version, previous)
    )
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
            APPROVED_AT: approval.at or at,
            APPROVAL_RUN: approval.run_id or "",
            "casepilot.approval_store": approval.store or "",
            "casepilot.promoted_by": promoted_by,
            PROMOTED_AT: at,
            PREVIOUS_TAG: previous or "",
            "casepilot.promotion_run_id": run_id,
        },
    )
    if previous is not None:
        set_version_tags(
            client,
            name,
            previous,
            {
                "casepilot.replaced_by": version,
                "casepilot.replaced_at": at,
                "casepilot.replaced_run_id": run_id,
            },
        )
    return Promotion(stage, name, version, previous, approved_by=approval.by, audit_run_id=run_id)


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
        name = registered_model_name(params, stage)
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
