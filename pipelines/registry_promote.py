"""Moving `champion`: a first (bootstrap) champion, approved promotion, and rollback.

Only these functions ever move `champion`. A promotion needs a recorded promotion request and a
reviewer's approval tag on the challenger's version (`pipelines.approval`); the replaced champion
stays addressable as `previous-champion` for rollback. Every move is recorded on both versions'
tags and as an MLflow run in the registry experiment (who, when, evidence).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.approval import (
    APPROVED_AT,
    BOOTSTRAP,
    EVIDENCE,
    PromotionRefused,
    UnapprovedChampion,
    check_approval,
)
from pipelines.contract import STAGES
from pipelines.registry_audit import log_audit_run, now_iso, set_version_tags
from pipelines.registry_rollback import AutoRollback, Rollback, auto_rollback, rollback_champion
from pipelines.registry_store import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
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


def bootstrap_champion(
    params: Params, *, by: str | None = None, stages: Iterable[str] = STAGES
) -> list[Promotion]:
    """Give each stage without a champion a first one: its challenger, else its latest version.

    There is no earlier champion to compare against, so no approval is asked: it is recorded as
    `casepilot.bootstrap=true` with who (default: the OS user) and when, on the version and as
    an audit run. A stage that already has a champion is left alone.
    """
    by = by or getpass.getuser()
    client = registry_client(params)
    outcomes = []
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
        at = now_iso()
        client.set_registered_model_alias(name, CHAMPION, version)
        if aliases.get(CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        record = {
            BOOTSTRAP: "true",
            "casepilot.promoted_by": by,
            "casepilot.promoted_at": at,
            "casepilot.previous_champion": "",
        }
        _, run_id = log_audit_run(
            client,
            params,
            "bootstrap",
            stage,
            {"casepilot.model": name, "casepilot.version": version, "casepilot.promoted_by": by},
            {"version": version, "by": by, "at": at},
        )
        set_version_tags(client, name, version, {**record, "casepilot.promotion_run_id": run_id})
        outcomes.append(Promotion(stage, name, version, None, audit_run_id=run_id))
    return outcomes


def promote_challenger(
    params: Params,
    stage: str,
    *,
    promoted_by: str | None = None,
    approved_by: str | None = None,
) -> Promotion:
    """Move `champion` to the approved challenger; the old champion stays `previous-champion`.

    Refuses (`pipelines.approval.PromotionRefused`) unless the challenger's version carries a
    promotion request and the reviewer's approval tag; the approver is read from that tag.
    `promoted_by` is who ran the move (default: the OS user), recorded beside the approver.
    `approved_by` is deprecated: it never approves anything and is taken as `promoted_by`.
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
    approval = check_approval(client, params, challenger)
    previous = aliases.get(CHAMPION)
    if previous == version:
        previous = None
    at, promoted_by = now_iso(), promoted_by or getpass.getuser()
    evidence_json = (challenger.tags or {}).get(EVIDENCE, "{}")
    run_tags = {
        "casepilot.model": name,
        "casepilot.version": version,
        "casepilot.previous_champion": previous or "",
        "casepilot.approved_by": approval.by,
        "casepilot.approved_at": approval.at or "",
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
            APPROVED_AT: approval.at or at,
            "casepilot.promoted_by": promoted_by,
            "casepilot.promoted_at": at,
            "casepilot.previous_champion": previous or "",
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


def _evidence(evidence_json: str, version: str, previous: str | None) -> dict[str, Any]:
    try:
        evidence = json.loads(evidence_json)
    except json.JSONDecodeError:
        evidence = {"unparsed_evidence": evidence_json}
    return {**evidence, "version": version, "previous": previous}
