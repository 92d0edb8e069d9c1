"""The `monitor` flow's automatic rollback: a new champion that regressed goes back, and pages.

For each stage whose `champion` came from an approved promotion (not a bootstrap, not a version
a rollback restored) and still has its `previous-champion`, the prediction log gives the old
champion's match outcomes before the promotion and the new one's since
(`monitoring.online.rollback_stats`); `monitoring.decisions.rollback.auto_rollback` applies
`monitoring.decisions.promotion.should_roll_back` (at least `promote.rollback_min_cases` cases)
and, when it says so, rolls back and pages with the evidence link.

Idempotent: after a rollback the champion is the restored version (tagged `restored_at`, so it is
not watched again) and the rolled-back version is no longer champion; a rollback also checks
that `champion` is still on the version that was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.data.contract import STAGES
from pipelines.registry.approval import BOOTSTRAP
from pipelines.registry.store import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    PREVIOUS_TAG,
    PROMOTED_AT,
    RESTORED_AT,
    ROLLED_BACK_AT,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params


@dataclass(frozen=True)
class Watched:
    """A champion under watch: promoted from `previous` at `promoted_at`."""

    stage: str
    name: str
    version: str
    previous: str
    promoted_at: datetime


def _parse(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


def champion_to_watch(client: MlflowClient, params: Params, stage: str) -> Watched | str:
    """The stage's promoted champion to check for a regression, or why there is none."""
    name = registered_model_name(params.register, stage)
    aliases = aliases_of(client, name)
    version = aliases.get(CHAMPION)
    if version is None:
        return "no champion"
    tags = client.get_model_version(name, version).tags or {}
    promoted_at = _parse(tags.get(PROMOTED_AT))
    previous = tags.get(PREVIOUS_TAG, "")
    if tags.get(BOOTSTRAP) == "true" or not previous:
        return f"v{version} is a first (bootstrap) champion: nothing to return to"
    if promoted_at is None:
        return f"v{version} has no {PROMOTED_AT} tag: not promoted by casepilot"
    restored = _parse(tags.get(RESTORED_AT))
    if restored is not None and restored >= promoted_at:
        return f"v{version} was restored by a rollback at {tags[RESTORED_AT]}: trusted"
    rolled = _parse(tags.get(ROLLED_BACK_AT))
    if rolled is not None and rolled >= promoted_at:
        return f"v{version} was already rolled back at {tags[ROLLED_BACK_AT]}"
    if aliases.get(PREVIOUS_CHAMPION) != previous:
        return (
            f"{PREVIOUS_CHAMPION} is {aliases.get(PREVIOUS_CHAMPION)}, not v{previous} "
            "(moved by hand): not rolling back automatically"
        )
    return Watched(stage, name, version, previous, promoted_at)


def read_rollback_window(params: Params, since: datetime) -> Any:
    """Prediction-log rows around a promotion: the last window before `since`, all after it."""
    import pandas as pd

    from monitoring.log.store import PredictionLog

    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        before = log.window(until=since, limit=params.monitor.window_cases)
        after = log.window(since=since)
    finally:
        log.close()
    frames = [f for f in (before, after) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else before


def check_rollbacks(
    params: Params, *, link: str | None = None, stages: tuple[str, ...] = STAGES
) -> dict[str, dict[str, Any]]:
    """Check every promoted champion for a regression; roll back and page where one is found.

    Returns per stage `{"status": "rolled back"|"kept"|"skipped", "reason", ...}` with the
    match rates compared (and, after a rollback, the versions, the audit run and the page).
    `link` is the evidence the page points at (the monitor's Evidently snapshot).
    """
    from monitoring.decisions.rollback import auto_rollback
    from monitoring.online import rollback_stats

    client = registry_client(params)
    outcomes: dict[str, dict[str, Any]] = {}
    for stage in stages:
        watched = champion_to_watch(client, params, stage)
        if isinstance(watched, str):
            outcomes[stage] = {"status": "skipped", "reason": watched}
            continue
        before, after = rollback_stats(
            read_rollback_window(params, watched.promoted_at),
            stage,
            version=watched.version,
            previous=watched.previous,
            promoted_at=watched.promoted_at,
            match_threshold=params.monitor.match_threshold,
            before_cases=params.monitor.window_cases,
        )
        try:
            done = auto_rollback(
                params, stage, (before, after), link=link, champion_version=watched.version
            )
        except LookupError as err:  # champion moved while we measured: leave it
            outcomes[stage] = {"status": "skipped", "reason": str(err)}
            continue
        decision = done.decision
        outcome = {
            "status": "rolled back" if done.rollback else "kept",
            "reason": decision.reason,
            "version": watched.version,
            "previous": watched.previous,
            "before_match_rate": decision.before_match_rate,
            "after_match_rate": decision.after_match_rate,
            "before_cases": before.cases,
            "after_cases": decision.after_cases,
        }
        if done.rollback:
            outcome |= {
                "to_version": done.rollback.to_version,
                "audit_run_id": done.rollback.audit_run_id,
                "page": done.rollback.page.status,
            }
        outcomes[stage] = outcome
    return outcomes
