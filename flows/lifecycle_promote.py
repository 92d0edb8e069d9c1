"""The `promote` and `rollback` flows' steps: call the registry's champion moves, report outcomes.

Only pipelines/registry_promote.py moves `champion` (and refuses without a reviewer's approval);
this module decides which stages to ask and turns a refusal into a result, not a traceback.
"""

from __future__ import annotations

import dataclasses
import getpass
from typing import TYPE_CHECKING, Any

from pipelines.contract import STAGES
from pipelines.registry_promote import PromotionRefused, promote_challenger, rollback_champion

if TYPE_CHECKING:
    from pipelines.config import Params

PROMOTER = "prefect-promote-flow"


def stages_with_challenger(params: Params) -> list[str]:
    """Stages whose registered model currently has a `challenger`, in cascade order."""
    from pipelines.registry import CHALLENGER, aliases_of, registered_model_name, registry_client

    client = registry_client(params)
    found = []
    for stage in STAGES:
        if not client.search_registered_models(
            filter_string=f"name = '{registered_model_name(params, stage)}'"
        ):
            continue
        if CHALLENGER in aliases_of(client, registered_model_name(params, stage)):
            found.append(stage)
    return found


def promote_stages(params: Params, stage: str | None) -> dict[str, dict[str, Any]]:
    """Promote the challenger of `stage` (or of every stage that has one); outcome per stage.

    `status` is `promoted`, `refused` (no approved promotion request on the challenger: the
    reason says what is missing) or `skipped` (no challenger).
    """
    stages = [stage] if stage else stages_with_challenger(params)
    outcomes: dict[str, dict[str, Any]] = {}
    for name in stages:
        try:
            promotion = promote_challenger(params, name, promoted_by=_promoter())
        except PromotionRefused as err:
            outcomes[name] = {"status": "refused", "reason": str(err)}
        except LookupError as err:  # no challenger: nothing to do for this stage
            outcomes[name] = {"status": "skipped", "reason": str(err)}
        else:
            outcomes[name] = {"status": "promoted", **dataclasses.asdict(promotion)}
    return outcomes


def _promoter() -> str:
    try:
        return f"{PROMOTER}:{getpass.getuser()}"
    except (KeyError, OSError):
        return PROMOTER


def rollback_stage(params: Params, stage: str, reason: str) -> dict[str, Any]:
    """Move `champion` of `stage` back to `previous-champion` (pages on-call); what happened."""
    done = rollback_champion(params, stage, reason, by=_promoter())
    return {
        **{k: v for k, v in dataclasses.asdict(done).items() if k != "page"},
        "page": done.page.status,
    }
