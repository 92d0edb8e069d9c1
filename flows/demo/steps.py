"""What the demo reads and does as the outside world: registry reads, pages, the reviewer.

Nothing here decides anything of the lifecycle. The reads wait (bounded) for what the deployed
platform did — challengers registered, promotion requests and rejections recorded, champions
moved — and the one registry action is the reviewer's approval, made as the `reviewer` user
through MLflow's API and announced as automated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel

from pipelines.config import Params
from pipelines.data.contract import STAGES

DRIFT = "casepilot-drift"  # dedup key prefix of drift pages (flows/lifecycle/hooks.page_drift)


@dataclass(frozen=True)
class Decision:
    """The platform's decision on one stage's challenger, as recorded on its MLflow version."""

    stage: str
    name: str
    version: str
    requested: bool
    reason: str
    link: str
    requested_by: str
    match_rates: str = ""  # "champion 0.270 → challenger 0.640 on 100 shadow cases"
    together: str = ""  # "retrieve v2": the other members of a group requested as one

    @property
    def line(self) -> str:
        what = "promotion requested" if self.requested else f"rejected ({self.reason})"
        if self.requested and self.together:
            what += f" together with {self.together}"
        rates = f", match rate {self.match_rates}" if self.match_rates else ""
        return f"{self.name} v{self.version}: {what}{rates}"


def _aliases(params: Params) -> dict[str, dict[str, str]]:
    from pipelines.registry.store import aliases_of, registered_model_name, registry_client

    client = registry_client(params)
    out = {}
    for stage in STAGES:
        try:
            out[stage] = aliases_of(client, registered_model_name(params.register, stage))
        except Exception:  # noqa: BLE001 - a stage not registered yet has no aliases
            out[stage] = {}
    return out


def challengers(params: Params) -> dict[str, str]:
    """{stage: version} of every `challenger` that is not also the champion."""
    out = {}
    for stage, aliases in _aliases(params).items():
        challenger = aliases.get("challenger")
        if challenger and challenger != aliases.get("champion"):
            out[stage] = challenger
    return out


def versions_line(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{s} v{v}" for s, v in versions.items()) or "none"


def decisions(params: Params, expected: Mapping[str, str]) -> dict[str, Decision]:
    """The recorded decision (request or rejection) on each expected {stage: version}."""
    from flows.lifecycle.record import DECIDED_BY, REJECTED, REJECTED_REASONS
    from pipelines.registry.approval import LINK, REQUESTED
    from pipelines.registry.store import registered_model_name, registry_client

    client = registry_client(params)
    found = {}
    for stage, version in expected.items():
        name = registered_model_name(params.register, stage)
        tags = client.get_model_version(name, version).tags
        if tags.get(REQUESTED) == "true" or tags.get(REJECTED) == "true":
            found[stage] = Decision(
                stage, name, version, tags.get(REQUESTED) == "true",
                tags.get(REJECTED_REASONS, ""), tags.get(LINK, ""),
                tags.get(DECIDED_BY, "the platform"), _match_rates(tags), _together(tags),
            )  # fmt: skip
    return found


def _together(tags: Mapping[str, str]) -> str:
    from pipelines.registry.promote import PROMOTE_WITH

    try:
        group = json.loads(tags.get(PROMOTE_WITH) or "{}")
    except ValueError:
        return ""
    if len(group) > 2:  # the first champion cascade: every other stage
        return f"the {len(group)} other stages"
    return ", ".join(f"{stage} v{version}" for stage, version in sorted(group.items()))


def _match_rates(tags: Mapping[str, str]) -> str:
    cases = tags.get("casepilot.evidence.cases", "0")
    if cases in ("", "0"):
        return ""
    champion = tags.get("casepilot.evidence.champion_match_rate", "?")
    challenger = tags.get("casepilot.evidence.challenger_match_rate", "?")
    return f"champion {champion} → challenger {challenger} on {cases} shadow cases"


def wait_for_decisions(
    params: Params, expected: Mapping[str, str], timeout_s: float
) -> list[Decision]:
    """Wait until the platform decided on every expected challenger; its decisions."""
    from flows.demo.platform import wait_until

    def all_decided() -> list[Decision] | None:
        found = decisions(params, expected)
        return list(found.values()) if len(found) == len(expected) else None

    return wait_until(
        f"the platform's promotion decision on {versions_line(expected)}", all_decided, timeout_s
    )


def notifications(received: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reviewers' notifications (apprise's JSON bodies) among what the receiver got."""
    return [b for b in received if str(b.get("title", "")).startswith("casepilot: review the")]


def drift_pages(received: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in received if str(p.get("dedup_key", "")).startswith(DRIFT)]


def page_line(page: dict[str, Any], receiver_url: str) -> str:
    link = (page.get("links") or [{}])[0].get("href", "no link")
    return f"page at {receiver_url}: {page.get('summary', '')[:160]} — evidence {link}"


@dataclass(frozen=True)
class ReviewerApproval:
    stage: str
    version: str
    by: str
    at: str

    @property
    def line(self) -> str:
        return f"{self.stage} v{self.version} approved by '{self.by}'"


def approve_as_reviewer(
    params: Params, requests: Sequence[Decision], note: str, console: Console
) -> list[ReviewerApproval]:
    """Approve each requested version signed in as the `reviewer` user — and say so loudly.

    The password comes from the secrets file `casepilot up` wrote; the approval is a run in the
    reviewer's own approvals ledger, bound to the version and the SHA-256 of its evidence.
    """
    from pipelines.registry.approval import approve_request
    from pipelines.registry.approval_ledger import stored_sign_in

    reviewer = stored_sign_in(params.home, "reviewer")

    console.print(
        Panel.fit(
            "[bold]AUTOMATED DEMO APPROVAL[/bold]\n"
            f"The demo now approves {versions_line({r.stage: r.version for r in requests})} "
            "signed in to MLflow as the `reviewer` user.\n"
            f"In production a reviewer does this (README, 'Promotion and approval'). [{note}]",
            border_style="yellow",
            title="not a human review",
        )
    )
    approvals = []
    for request in requests:
        approval = approve_request(params, request.stage, request.version, sign_in=reviewer)
        approvals.append(ReviewerApproval(request.stage, request.version, approval.by, approval.at))
    return approvals


def wait_for_champions(
    params: Params, expected: Mapping[str, str], timeout_s: float
) -> dict[str, str]:
    """Wait until `champion` points at the expected {stage: version}."""
    from flows.demo.platform import wait_until

    def moved() -> dict[str, str] | None:
        aliases = _aliases(params)
        ok = all(aliases[s].get("champion") == v for s, v in expected.items())
        return dict(expected) if ok else None

    return wait_until(f"champion to move to {versions_line(expected)}", moved, timeout_s)


def promote_run(runs: Any, since: datetime) -> Any:
    """The promote deployment run that promoted something after `since` (None if not found)."""
    promoted = [r for r in runs.runs("promote", since=since) if "promoted" in r.message]
    return promoted[-1] if promoted else None


def reviewed_line(params: Params) -> str:
    """Today's reviewed correctness (with its 95% interval) for champion and challenger."""
    import json

    from flows.lifecycle.review import today
    from monitoring.review import run as review_run

    path = review_run.review_dir(params) / "history.json"
    history = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    entry = next((h for h in history if h["day"] == today()), None)
    return review_run.describe(entry) if entry else "no reviewed items yet"


def scenario_lines(params: Params) -> list[str]:
    """The scenario gate on each stage's latest version: both failure rates, and its verdict."""
    from pipelines.evaluate.scenarios.gate import scenario_rates

    return [rates.line() for rates in scenario_rates(params).values()]
