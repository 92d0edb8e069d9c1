"""What a `monitor` or `promote` run returns, and its one-line outcome in the Prefect UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.monitor import MonitorReport


def monitor_result(
    report: MonitorReport | None,
    waiting: str | None,
    drift: tuple[str, str | None],
    rolled: dict[str, dict[str, Any]],
    decided: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The monitor run's data: the window's drift (or why it waits), the page and the drift
    event (`drift`: the page status and the event id), the rollback checks, the challengers."""
    paged, event_id = drift
    return {
        "breach": report.drift.breach if report else None,
        "page": report.page if report else False,
        "paged": paged,
        "event_id": event_id,
        "evidence_url": report.evidence_url if report is not None else None,
        "reasons": list(report.drift.reasons) if report else [],
        "waiting": waiting,
        "rollback": rolled,
        "promotion": decided,
    }


def monitor_message(result: dict[str, Any]) -> str:
    """The run's one-line outcome, shown in the Prefect UI: drift, page, rollback, challengers."""
    if result["waiting"]:
        drift = f"window not judged: {result['waiting']}"
    else:
        reasons = "; ".join(result["reasons"]) or "no drift"
        drift = f"breach={result['breach']} page={result['page']} ({result['paged']}): {reasons}"
        drift += f"; evidence {result['evidence_url']}"
    parts = [drift]
    rolled = [s for s, o in result["rollback"].items() if o["status"] == "rolled back"]
    if rolled:
        parts.append("rolled back " + ", ".join(rolled))
    decided = {s: o["status"] for s, o in result["promotion"].items()}
    if decided:
        parts.append("challengers " + ", ".join(f"{s}: {st}" for s, st in decided.items()))
    return " | ".join(parts)


def promote_message(outcomes: dict[str, Any]) -> str:
    """The run's one-line outcome in the Prefect UI: what was promoted, else that nothing was."""
    moved = [
        f"{stage} → v{o['version']}"
        for stage, o in outcomes.items()
        if stage != "service" and o.get("status") == "promoted"
    ]
    if not moved:
        return "nothing approved to promote"
    served = outcomes.get("service", {}).get("status", "not asked")
    return f"promoted {', '.join(moved)}; service reload: {served}"
