"""Promotion through registry aliases: a first champion, then challenger → champion.

Only these functions ever move `champion`; the replaced champion stays addressable as
`previous-champion` for rollback, and every move is recorded on the version's tags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.contract import STAGES
from pipelines.registry_store import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params


@dataclass(frozen=True)
class Promotion:
    """A champion move: which version became champion, which it replaced, and whether skipped."""

    stage: str
    name: str
    version: str | None
    previous: str | None
    skipped: str | None = None  # why nothing moved


def _record_promotion(
    client: MlflowClient,
    params: Params,
    name: str,
    version: str,
    by: str,
    *,
    bootstrap: bool,
    previous: str | None,
) -> None:
    from datetime import UTC, datetime

    tags = {
        params.promote.approval_tag: by,
        "casepilot.promoted_by": by,
        "casepilot.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "casepilot.bootstrap": str(bootstrap).lower(),
        "casepilot.previous_champion": previous or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def bootstrap_champion(
    params: Params, *, by: str, stages: Iterable[str] = STAGES
) -> list[Promotion]:
    """Give each stage without a champion a first one: its challenger, else its latest version.

    Recorded on the version as `casepilot.bootstrap=true` with who and when. A stage that
    already has a champion is left alone (move it with `promote_challenger`).
    """
    client = registry_client(params)
    outcomes = []
    for stage in stages:
        name = registered_model_name(params, stage)
        aliases = aliases_of(client, name)
        if CHAMPION in aliases:
            outcomes.append(
                Promotion(
                    stage,
                    name,
                    aliases[CHAMPION],
                    None,
                    skipped=f"already has champion v{aliases[CHAMPION]}",
                )
            )
            continue
        version = aliases.get(CHALLENGER)
        if version is None:
            found = client.search_model_versions(filter_string=f"name = '{name}'")
            version = str(max(int(v.version) for v in found)) if found else None
        if version is None:
            outcomes.append(Promotion(stage, name, None, None, skipped="no version registered"))
            continue
        client.set_registered_model_alias(name, CHAMPION, version)
        _record_promotion(client, params, name, version, by, bootstrap=True, previous=None)
        if aliases.get(CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        outcomes.append(Promotion(stage, name, version, None))
    return outcomes


def promote_challenger(params: Params, stage: str, *, approved_by: str) -> Promotion:
    """Move `champion` to the challenger; the old champion stays as `previous-champion`."""
    client = registry_client(params)
    name = registered_model_name(params, stage)
    aliases = aliases_of(client, name)
    version = aliases.get(CHALLENGER)
    if version is None:
        raise LookupError(
            f"{name} has no challenger to promote; register a version that "
            "passes the offline gates first"
        )
    previous = aliases.get(CHAMPION)
    if previous is not None and previous != version:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
    client.set_registered_model_alias(name, CHAMPION, version)
    _record_promotion(
        client, params, name, version, approved_by, bootstrap=False, previous=previous
    )
    client.delete_registered_model_alias(name, CHALLENGER)
    return Promotion(stage, name, version, previous)
