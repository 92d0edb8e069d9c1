"""The demo's lifecycle steps that are not lifecycle flows: bootstrap, traffic, decision, approval.

Each function does one step with the project's own functions and returns the line the summary
shows plus the data a test checks. The lifecycle flows themselves (`retrain`, `monitor`,
`promote`) are called as subflows by `flows/demo_flow.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.panel import Panel

from pipelines.config import Params

BOOTSTRAPPED_BY = "casepilot demo (bootstrap of the first champion)"


def registered_line(registered: dict[str, Any]) -> str:
    """`trigger v1 (challenger), topic v1 (gate failed: …)` from the retrain flow's result."""
    parts = []
    for stage, info in registered.items():
        note = (
            "challenger"
            if info["challenger"]
            else "gate failed: " + "; ".join(info["gate_reasons"])
        )
        parts.append(f"{stage} v{info['version']} ({note})")
    return ", ".join(parts)


def bootstrap(params: Params) -> tuple[dict[str, str], list[str]]:
    """Give every stage its first champion (recorded as a bootstrap): (stage -> version, forced).

    The demo trains on one synthetic day, so a stage can miss its offline gates; the demo still
    needs a full cascade to serve, so it bootstraps with `force=True` — recorded as forced on
    the version and in the audit run — and names the forced stages (`casepilot promote
    --bootstrap` refuses such a version unless `--force`).
    """
    from pipelines.registry_promote import bootstrap_champion

    outcomes = bootstrap_champion(params, by=BOOTSTRAPPED_BY, force=True)
    missing = [o.stage for o in outcomes if o.version is None]
    if missing:
        raise RuntimeError(f"no version registered for {', '.join(missing)}: cannot serve")
    versions = {o.stage: o.version for o in outcomes if o.version is not None}
    return versions, [o.stage for o in outcomes if o.forced]


def shadow_decision(params: Params, since: Any, until: Any) -> Any:
    """The promotion decision on the shadow traffic logged in [since, until)."""
    from monitoring.prediction_log import PredictionLog
    from monitoring.promotion import decide_promotion, shadow_stats_from_window

    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        window = log.window(since=since, until=until)
    finally:
        log.close()
    champion, challenger = shadow_stats_from_window(window, params.monitor.match_threshold)
    return decide_promotion(champion, challenger, {}, params.promote)


def decision_line(decision: Any) -> str:
    verdict = "promote" if decision.promote else "keep the champion"
    return (
        f"{verdict}: challenger match rate {decision.challenger_match_rate:.3f} vs champion "
        f"{decision.champion_match_rate:.3f} on {decision.cases} paired cases "
        f"(McNemar p={decision.p_value:.2g}); " + "; ".join(decision.reasons)
    )


def request_promotions(params: Params, stages: Sequence[str], decision: Any) -> list[Any]:
    """Record the promotion request with its evidence on each stage's challenger version."""
    from pipelines.approval import request_promotion

    return [request_promotion(params, stage, decision) for stage in stages]


def approve_as_demo_reviewer(
    params: Params, stages: Sequence[str], reviewer: str, console: Console
) -> list[Any]:
    """Approve each requested challenger as the named demo reviewer — and say so loudly."""
    from pipelines.approval import approve_version

    console.print(
        Panel.fit(
            f"[bold]AUTOMATED DEMO APPROVAL[/bold]\n"
            f"The demo now approves {', '.join(stages)} as the reviewer\n"
            f"[bold]{reviewer}[/bold] by setting the tag `{params.promote.approval_tag}` on each "
            "challenger version.\nIn production a person does this in the MLflow UI "
            "(basic-auth: only reviewers may).",
            border_style="yellow",
            title="not a human review",
        )
    )
    return [approve_version(params, stage, reviewer) for stage in stages]
