"""Rolling `champion` back to `previous-champion`: by hand, or when the new champion regresses.

Rolling back to a version that was trusted is cheap and a regression in front of agents is not,
so `auto_rollback` acts on `monitoring.decisions.promotion.should_roll_back` alone and pages on-call with
the evidence; the audit trail is an MLflow run plus tags on both versions.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.registry.audit import (
    log_audit_run,
    now_iso,
    page_event,
    run_url,
    set_version_tags,
)
from pipelines.registry.store import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    PREVIOUS_TAG,
    RESTORED_AT,
    ROLLED_BACK_AT,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from monitoring.decisions.promotion import RollbackDecision, ShadowStats
    from monitoring.notify.paging import PageResult
    from pipelines.config import Params

AUTO_ROLLBACK_BY = "casepilot auto-rollback"


@dataclass(frozen=True)
class Rollback:
    """A rollback: champion went from `from_version` back to `to_version`; the page's outcome."""

    stage: str
    name: str
    from_version: str
    to_version: str
    reason: str
    audit_run_id: str
    page: PageResult


@dataclass(frozen=True)
class AutoRollback:
    """`auto_rollback`'s decision and, when it rolled back, the rollback."""

    decision: RollbackDecision
    rollback: Rollback | None


def rollback_champion(
    params: Params,
    stage: str,
    reason: str,
    *,
    by: str | None = None,
    link: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    expect_version: str | None = None,
) -> Rollback:
    """Move `champion` back to `previous-champion`, record why, and page on-call.

    `link` is the evidence to page with (e.g. the monitoring dashboard); default: the audit
    run in MLflow. Raises LookupError when there is no previous champion to return to, or when
    `expect_version` is given and `champion` is no longer on it (someone moved it meanwhile:
    an automatic rollback must never roll back the version it just restored).
    """
    if not reason.strip():
        raise ValueError("a rollback needs a reason, e.g. 'match rate fell 0.12 after promotion'")
    client = registry_client(params)
    name = registered_model_name(params, stage)
    aliases = aliases_of(client, name)
    current, target = aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)
    if expect_version is not None and current != str(expect_version):
        raise LookupError(
            f"{name}: champion is v{current}, not v{expect_version} any more (moved meanwhile); "
            "nothing rolled back — look at the registry's audit runs"
        )
    if current is None or target is None or target == current:
        raise LookupError(
            f"{name} has no previous champion to roll back to (champion={current}, "
            f"{PREVIOUS_CHAMPION}={target}); roll forward by promoting an approved challenger"
        )
    at, by = now_iso(), by or getpass.getuser()
    experiment_id, run_id = log_audit_run(
        client,
        params,
        "rollback",
        stage,
        {
            "casepilot.model": name,
            "casepilot.from_version": current,
            "casepilot.to_version": target,
            "casepilot.rolled_back_by": by,
            "casepilot.reason": reason[:5000],
        },
        {**(evidence or {}), "reason": reason, "from_version": current, "to_version": target},
    )
    client.set_registered_model_alias(name, CHAMPION, target)
    # The restored version's own predecessor becomes the next rollback target, if any.
    older = client.get_model_version(name, target).tags.get(PREVIOUS_TAG, "")
    if older and older not in (current, target):
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, older)
    else:
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    set_version_tags(
        client,
        name,
        current,
        {
            ROLLED_BACK_AT: at,
            "casepilot.rolled_back_by": by,
            "casepilot.rolled_back_reason": reason[:5000],
            "casepilot.rollback_run_id": run_id,
        },
    )
    set_version_tags(
        client,
        name,
        target,
        {
            RESTORED_AT: at,
            "casepilot.restored_from": current,
            "casepilot.rollback_run_id": run_id,
        },
    )
    audit = run_url(params, experiment_id, run_id)
    paged = page_event(
        params,
        summary=f"{stage}: champion rolled back from {name} v{current} to v{target}: {reason}",
        dedup_key=f"casepilot-rollback-{name}-v{current}",
        link=link or audit,
        link_text="evidence" if link else "MLflow rollback run",
        details={
            "stage": stage,
            "model": name,
            "from_version": current,
            "to_version": target,
            "reason": reason,
            "by": by,
            "audit_run": audit,
            **(evidence or {}),
        },
    )
    return Rollback(stage, name, current, target, reason, run_id, paged)


def auto_rollback(
    params: Params,
    stage: str,
    online_metrics: tuple[ShadowStats, ShadowStats],
    *,
    link: str | None = None,
    champion_version: str | None = None,
) -> AutoRollback:
    """Roll back when `monitoring.decisions.promotion.should_roll_back` says the new champion regressed.

    `online_metrics` is (before, after): match outcomes of the previous champion's window and of
    the new champion's since promotion (`monitoring.online.rollback_stats` builds them from the
    prediction log). `link` points the page at the evidence (a dashboard). `champion_version`:
    the version the stats were measured on; if `champion` moved since, nothing is rolled back.
    """
    from monitoring.decisions.promotion import should_roll_back

    before, after = online_metrics
    decision = should_roll_back(before, after, params.promote)
    if not decision.roll_back:
        return AutoRollback(decision, None)
    evidence = {
        "before_match_rate": decision.before_match_rate,
        "after_match_rate": decision.after_match_rate,
        "after_cases": decision.after_cases,
        "before_cases": before.cases,
        "p_value": decision.p_value,
    }
    rolled = rollback_champion(
        params,
        stage,
        decision.reason,
        by=AUTO_ROLLBACK_BY,
        link=link,
        evidence=evidence,
        expect_version=champion_version,
    )
    return AutoRollback(decision, rolled)
