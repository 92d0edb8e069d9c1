"""The automatic rollback: a monitoring decision on shadow evidence, acted out on the registry.

Rolling back to a version that was trusted is cheap and a regression in front of agents is not,
so `auto_rollback` acts on `should_roll_back` (monitoring.decisions.promotion) alone; the move,
its audit trail and the page are the registry's (`pipelines.registry.rollback`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitoring.decisions.promotion import RollbackDecision, ShadowStats, should_roll_back
from pipelines.registry.rollback import Rollback, rollback_champion

if TYPE_CHECKING:
    from pipelines.config import Params

AUTO_ROLLBACK_BY = "casepilot auto-rollback"


@dataclass(frozen=True)
class AutoRollback:
    """`auto_rollback`'s decision and, when it rolled back, the rollback."""

    decision: RollbackDecision
    rollback: Rollback | None


def auto_rollback(
    params: Params,
    stage: str,
    online_metrics: tuple[ShadowStats, ShadowStats],
    *,
    link: str | None = None,
    champion_version: str | None = None,
) -> AutoRollback:
    """Roll back when `should_roll_back` says the new champion regressed.

    `online_metrics` is (before, after): match outcomes of the previous champion's window and of
    the new champion's since promotion (`monitoring.online.rollback_stats` builds them from the
    prediction log). `link` points the page at the evidence (a dashboard). `champion_version`:
    the version the stats were measured on; if `champion` moved since, nothing is rolled back.
    """
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
