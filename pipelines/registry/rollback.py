"""Rolling `champion` back to `previous-champion`, recording why, and paging on-call.

Rolling back to a version that was trusted is cheap and a regression in front of agents is not,
so a rollback needs only a reason; the audit trail is an MLflow run plus tags on both versions,
and the page carries the evidence. *Whether* shadow evidence calls for a rollback is a
monitoring decision: `monitoring.decisions.rollback.auto_rollback` acts on it through here.
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
    from mlflow import MlflowClient

    from pipelines.config import Params
    from pipelines.notify.paging import PageResult


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
    name = registered_model_name(params.register, stage)
    current, target = _rollback_target(client, name, expect_version)
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
    _move_back(client, name, current, target, at=at, by=by, reason=reason, run_id=run_id)
    details = {"stage": stage, "model": name, "from_version": current, "to_version": target,
               "reason": reason, "by": by, "audit_run": run_url(params, experiment_id, run_id),
               **(evidence or {})}  # fmt: skip
    paged = page_event(
        params,
        summary=f"{stage}: champion rolled back from {name} v{current} to v{target}: {reason}",
        dedup_key=f"casepilot-rollback-{name}-v{current}",
        link=link or details["audit_run"],
        link_text="evidence" if link else "MLflow rollback run",
        details=details,
    )
    return Rollback(stage, name, current, target, reason, run_id, paged)


def _rollback_target(
    client: MlflowClient, name: str, expect_version: str | None
) -> tuple[str, str]:
    """(current champion, previous champion) of `name`; LookupError when there is nothing to
    roll back to, or `champion` is no longer on `expect_version`."""
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
    return current, target


def _move_back(
    client: MlflowClient,
    name: str,
    current: str,
    target: str,
    *,
    at: str,
    by: str,
    reason: str,
    run_id: str,
) -> None:
    """Point `champion` at `target` and tag both versions with the rollback."""
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
        {RESTORED_AT: at, "casepilot.restored_from": current, "casepilot.rollback_run_id": run_id},
    )
