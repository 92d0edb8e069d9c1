"""A first champion for every stage that has none: its challenger, else its latest version.

There is no earlier champion to compare against, so no approval is asked: the move is recorded
as `casepilot.bootstrap=true` with who and when, on the version and as an audit run. A version
that failed its offline gates is refused unless forced, and a forced one says so in the audit.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from pipelines.data.contract import STAGES
from pipelines.registry.approval_verify import BOOTSTRAP, PromotionRefused
from pipelines.registry.audit import log_audit_run, now_iso, set_version_tags
from pipelines.registry.promote import Promotion
from pipelines.registry.store import (
    CHALLENGER,
    CHAMPION,
    GATE,
    GATE_REASONS,
    PREVIOUS_TAG,
    PROMOTED_AT,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params

FORCED = "casepilot.bootstrap_forced"


class _Candidate(NamedTuple):
    """The version a stage without a champion would get as its first one."""

    stage: str
    name: str
    version: str
    aliases: dict[str, str]


def bootstrap_champion(
    params: Params,
    *,
    by: str | None = None,
    stages: Iterable[str] = STAGES,
    force: bool = False,
) -> list[Promotion]:
    """Give each stage without a champion a first one: its challenger, else its latest version.

    There is no earlier champion to compare against, so no approval is asked: it is recorded as
    `casepilot.bootstrap=true` with who (default: the OS user) and when, on the version and as
    an audit run. A stage that already has a champion is left alone.

    A version that failed its offline gates (`casepilot.gate=failed`) is refused — for every
    stage before anything moves — with `PromotionRefused` naming the gate; `force=True` makes
    it champion anyway, recorded as `casepilot.bootstrap_forced=true` with the gate's reasons.
    """
    by, stages = by or getpass.getuser(), list(stages)
    client = registry_client(params)
    outcomes, chosen = _candidates(client, params, stages)
    gates = {(c.stage, c.version): client.get_model_version(c.name, c.version).tags or {}
             for c in chosen}  # fmt: skip
    failed = {key: tags for key, tags in gates.items() if tags.get(GATE) == "failed"}
    if failed and not force:
        raise PromotionRefused(_gate_refusal(failed))
    for candidate in chosen:
        gate = gates[(candidate.stage, candidate.version)]
        forced = (candidate.stage, candidate.version) in failed
        outcomes.append(_make_first_champion(client, params, candidate, gate, by=by, forced=forced))
    order = {stage: i for i, stage in enumerate(stages)}
    return sorted(outcomes, key=lambda o: order[o.stage])


def _candidates(
    client: MlflowClient, params: Params, stages: list[str]
) -> tuple[list[Promotion], list[_Candidate]]:
    """(stages skipped, with why; the version each other stage would get)."""
    skipped: list[Promotion] = []
    chosen: list[_Candidate] = []
    for stage in stages:
        name = registered_model_name(params.register, stage)
        aliases = aliases_of(client, name)
        if CHAMPION in aliases:
            note = f"already has champion v{aliases[CHAMPION]}"
            skipped.append(Promotion(stage, name, aliases[CHAMPION], None, skipped=note))
            continue
        version = aliases.get(CHALLENGER)
        if version is None:
            found = client.search_model_versions(filter_string=f"name = '{name}'")
            version = str(max(int(v.version) for v in found)) if found else None
        if version is None:
            skipped.append(Promotion(stage, name, None, None, skipped="no version registered"))
            continue
        chosen.append(_Candidate(stage, name, version, aliases))
    return skipped, chosen


def _make_first_champion(
    client: MlflowClient,
    params: Params,
    candidate: _Candidate,
    gate: dict[str, str],
    *,
    by: str,
    forced: bool,
) -> Promotion:
    """Point `champion` at the candidate and record the bootstrap on it and as an audit run."""
    stage, name, version, aliases = candidate
    reasons = gate.get(GATE_REASONS, "") if forced else ""
    at = now_iso()
    client.set_registered_model_alias(name, CHAMPION, version)
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    record = {
        BOOTSTRAP: "true",
        "casepilot.promoted_by": by,
        PROMOTED_AT: at,
        PREVIOUS_TAG: "",
        **({FORCED: "true", "casepilot.forced_gate_reasons": reasons[:5000]} if forced else {}),
    }
    run_tags = {"casepilot.model": name, "casepilot.version": version,
                "casepilot.promoted_by": by, FORCED: str(forced).lower()}  # fmt: skip
    evidence = {"version": version, "by": by, "at": at, "forced": forced,
                "gate": gate.get(GATE, ""), "gate_reasons": reasons}  # fmt: skip
    _, run_id = log_audit_run(client, params, "bootstrap", stage, run_tags, evidence)
    set_version_tags(client, name, version, {**record, "casepilot.promotion_run_id": run_id})
    return Promotion(stage, name, version, None, audit_run_id=run_id, forced=forced)


def _gate_refusal(failed: dict[tuple[str, str], dict[str, str]]) -> str:
    """The refusal: which version failed which gate, and the two ways forward."""
    parts = [
        f"{stage} v{version} failed its offline gates ({tags.get(GATE_REASONS) or 'see its tags'})"
        for (stage, version), tags in sorted(failed.items())
    ]
    first = sorted(failed)[0][0]
    return (
        "refusing to bootstrap a champion that failed its offline gates: "
        + "; ".join(parts)
        + f". Fix: retrain and register a version that passes `register.gates.{first}` in "
        "params.yaml (or correct a gate that is wrong there), or accept it knowingly with "
        "`casepilot promote --bootstrap --force` (recorded as forced in the audit)"
    )
