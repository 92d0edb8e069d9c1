"""The `monitor` flow's promotion step: per-stage evidence → a request and a notification, or a
rejection.

For every stage with a `challenger` that shadowed at least `promote.min_cases` answered cases
(`monitoring.decisions.replay.stage_shadow_cases`), the logged messages are replayed through the
champion cascade and through the champion cascade with only that stage swapped to its
challenger (why: monitoring/decisions/replay.py). Models are loaded by alias from MLflow, once
per version per run; the retrieve index is restored in memory, so the replay never touches the
Qdrant folder the running service holds. Then either:

- the decision supports promotion → `pipelines.registry.approval.request_promotion` records the request
  and its per-stage evidence on that version, and the reviewers get one message with the
  evidence and the MLflow link (monitoring/notify/channels.py: apprise, through the paging channel);
- it does not → the version is tagged `casepilot.challenger_rejected=true` with the reasons.

A match-rate win is vetoed when reviewers found the challenger significantly worse on the latest
reviewed day (monitoring/review/promotion.py); the reviewed figures are tagged on the version
(`casepilot.evidence.reviewed_*`) either way. A stage with no champion yet gets a first-champion
request on its offline evidence (there is nothing to shadow against); the reviewer decides.

Idempotent: the hash of the decision's inputs (cases, replies, model versions, settings) and of
its evidence are stored on the version (`casepilot.decision_inputs`, `casepilot.decision_key`).
A rerun on the same inputs replays nothing, records nothing and sends nothing; a version that
already carries a request is not asked again (a new request would clear a reviewer's
approval), only re-notified if the earlier message failed (`casepilot.notified_key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitoring.decisions.replay import (
    evidence_key,
    joint_decision,
    joint_shadow_cases,
    stage_decision,
    stage_shadow_cases,
)
from monitoring.review.promotion import reviewed_decision
from pipelines.registry.approval import REQUESTED, request_promotion
from pipelines.registry.audit import now_iso, set_version_tags
from pipelines.registry.promote import PROMOTE_WITH
from pipelines.registry.store import CHALLENGER, CHAMPION, registry_client

if TYPE_CHECKING:
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.cascade import Cascade
    from pipelines.config import Params
    from pipelines.registry.resolve import ResolvedStage

DECISION_KEY = "casepilot.decision_key"
NOTIFIED_KEY = "casepilot.notified_key"
REJECTED = "casepilot.challenger_rejected"
REJECTED_REASONS = "casepilot.rejected_reasons"
DECIDED_AT = "casepilot.decided_at"
DECISION_INPUTS = "casepilot.decision_inputs"  # hash of the cases and models decided on
DECIDED_BY = "casepilot.decided_by"  # the Prefect flow run (and deployment) that decided
REPLAY_QDRANT = ":memory:"  # the service holds the on-disk index's lock


class ReplayModels:
    """Stage objects loaded by version, once per monitor run, and cascades built from them."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], Any] = {}

    def cascade(self, stages: dict[str, ResolvedStage]) -> Cascade:
        from pipelines.cascade import Cascade
        from pipelines.registry.model import load_stage_folder

        objects = {}
        for stage, resolved in stages.items():
            key = (stage, resolved.version)
            if key not in self._loaded:
                self._loaded[key] = load_stage_folder(
                    stage, resolved.local_dir, qdrant_location=REPLAY_QDRANT
                )
            objects[stage] = self._loaded[key]
        versions = {s: f"{r.name}/{r.version}" for s, r in stages.items()}
        return Cascade(**objects, versions=versions)


def _texts(cascade: Cascade, messages: list[str]) -> list[str | None]:
    return [s.text for s in cascade.suggest_batch(messages)]


def decide_challengers(params: Params, link: str | None = None) -> dict[str, dict[str, Any]]:
    """Decide every challenger stage; per stage `{"status", ...}`.

    `status`: `requested` (request recorded, reviewers notified: `notified`), `rejected`
    (reasons tagged), `waiting` (fewer than `promote.min_cases` shadowed cases), `unchanged`
    (same evidence as the last run, or already requested). `link` (e.g. the monitor's Evidently
    snapshot) goes into the notification. Stages that win only together are requested as one
    group (`together`), which promote moves only once every member is approved.
    """
    from flows.lifecycle.promote import stages_with_challenger
    from pipelines.registry.register import resolve_cascade_dirs, resolve_stage

    stages = stages_with_challenger(params)
    if not stages:
        return {}
    first = _first_champions(params, stages, link)
    if first:  # no full champion cascade to replay against yet
        return first
    champion = resolve_cascade_dirs(params, CHAMPION)
    challengers = {s: resolve_stage(params, s, CHALLENGER) for s in stages}
    challengers = {s: c for s, c in challengers.items() if c.version != champion[s].version}
    if not challengers:
        return {}
    window = _window(params, challengers)
    replay = Replay(champion)
    outcomes: dict[str, dict[str, Any]] = {}
    pending: dict[str, Pending] = {}
    for stage, challenger in challengers.items():
        got = _stage_evidence(params, stage, challenger, window, replay)
        if isinstance(got, Pending):
            pending[stage] = got
        else:
            outcomes[stage] = got
    groups = _joint_evidence(params, pending, window, replay)
    client = registry_client(params)
    for stage, item in pending.items():
        decision, together = groups.get(stage, (item.decision, None))
        outcome = record_decision(params, stage, item.challenger, decision, link, together)
        name, version = item.challenger.name, item.challenger.version
        client.set_model_version_tag(name, version, DECISION_INPUTS, item.inputs)
        outcomes[stage] = {**item.base, **outcome, **({"together": together} if together else {})}
    return {stage: outcomes[stage] for stage in challengers}


class Replay:
    """Replayed texts per swapped-stage combination (the champion's shared by every stage), and
    the loaded models."""

    def __init__(self, champion: dict[str, ResolvedStage]) -> None:
        self.champion, self.models = champion, ReplayModels()
        self._texts: dict[tuple, dict[str, str | None]] = {}

    def texts(self, swapped: dict[str, ResolvedStage], messages: list[str]) -> list[str | None]:
        """The champion cascade with `swapped` stages replaced, on `messages` (cached)."""
        key = tuple(sorted((s, r.version) for s, r in swapped.items()))
        cache = self._texts.setdefault(key, {})
        missing = [m for m in dict.fromkeys(messages) if m not in cache]
        if missing:
            cascade = self.models.cascade({**self.champion, **swapped})
            cache.update(zip(missing, _texts(cascade, missing), strict=True))
        return [cache[m] for m in messages]

    def champion_texts(self, messages: list[str]) -> list[str | None]:
        return self.texts({}, messages)

    def swapped_texts(self, stage: str, challenger: ResolvedStage, messages: list[str]) -> list:
        return self.texts({stage: challenger}, messages)

    def inputs_key(self, params: Params, stage: str, ref: str, rows: Any) -> str:
        """A hash of everything the decision depends on, known before replaying anything."""
        blob = json.dumps({
            "stage": stage, "ref": ref, "promote": params.promote.model_dump(mode="json"),
            "threshold": params.monitor.match_threshold,
            "champion": {s: f"{r.name}/{r.version}" for s, r in self.champion.items()},
            "rows": rows[["case_id", "message", "sent_reply"]].values.tolist(),
        }, sort_keys=True, default=str)  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Pending:
    """One stage's fresh evidence, not recorded yet (a joint decision may still replace it)."""

    challenger: ResolvedStage
    base: dict[str, Any]
    inputs: str
    decision: PromotionDecision
    requested: bool


def _stage_evidence(
    params: Params,
    stage: str,
    challenger: ResolvedStage,
    window: Any,
    replay: Replay,
) -> dict[str, Any] | Pending:
    """One challenger stage: wait for cases, skip unchanged inputs, else replay it swapped alone."""
    ref = f"{challenger.name}/{challenger.version}"
    rows = stage_shadow_cases(window, stage, ref, params.promote.replay_max_cases)
    base = {"name": challenger.name, "version": challenger.version, "cases": len(rows)}
    if len(rows) < params.promote.min_cases:
        return {**base, "status": "waiting",
                "reason": f"{len(rows)} of {params.promote.min_cases} shadowed cases with the "
                          "agent's reply"}  # fmt: skip
    inputs = replay.inputs_key(params, stage, ref, rows)
    tags = registry_client(params).get_model_version(challenger.name, challenger.version).tags
    settled = tags.get(REQUESTED) != "true" or tags.get(NOTIFIED_KEY) == tags.get(DECISION_KEY)
    if tags.get(DECISION_INPUTS) == inputs and settled:
        return {**base, "status": "unchanged", "reason": "no new shadow cases since last decision"}
    messages = rows["message"].tolist()
    decision = stage_decision(
        stage, rows["case_id"].tolist(), rows["sent_reply"].tolist(),
        replay.champion_texts(messages), replay.swapped_texts(stage, challenger, messages),
        params,
    )  # fmt: skip
    # reviewed correctness can veto a match-rate win (monitoring/review/promotion.py)
    decision = reviewed_decision(params, stage, challenger.name, challenger.version, decision)
    return Pending(challenger, base, inputs, decision, tags.get(REQUESTED) == "true")


def _joint_evidence(
    params: Params, pending: dict[str, Pending], window: Any, replay: Replay
) -> dict[str, tuple[PromotionDecision, dict[str, str] | None]]:
    """Stages that lost alone, judged together with every other challenger on fresh evidence
    (monitoring/decisions/replay.joint_decision) — winners and already requested ones included,
    so a new topic's stage is judged with the retrieve challenger that holds its conversations
    even when that one wins alone.

    Leave-one-out shrinks the set to the stages that contribute, replaying again while it
    shrinks (at most once per stage). When the joint arm wins, each group member that lost
    alone gets the group's decision and `together` (the other members' versions); a member
    that won alone keeps its own request (it needs nobody). When it does not, each loser's
    rejection gets the joint reason. {} when no stage lost alone on fresh evidence, or no other
    challenger to judge it with.
    """
    lost = {s: p for s, p in pending.items() if not p.decision.promote and not p.requested}
    swapped = {s: p.challenger for s, p in pending.items()}
    if not lost or len(swapped) < 2:
        return {}
    refs = {s: f"{r.name}/{r.version}" for s, r in swapped.items()}
    rows = joint_shadow_cases(window, refs, params.promote.replay_max_cases)
    if len(rows) < params.promote.min_cases:
        return {}
    messages, cases = rows["message"].tolist(), rows["case_id"].tolist()
    replies = rows["sent_reply"].tolist()
    while True:
        without = {
            s: replay.texts({k: v for k, v in swapped.items() if k != s}, messages) for s in swapped
        }
        group, decision = joint_decision(
            list(swapped), cases, replies, replay.champion_texts(messages),
            replay.texts(swapped, messages), without, params,
        )  # fmt: skip
        if not group or len(group) == len(swapped):
            break
        swapped = {s: swapped[s] for s in group}
    names = ", ".join(f"{s} v{swapped[s].version}" for s in swapped)
    if not group or not decision.promote or not set(group) & set(lost):
        why = (
            "; ".join(decision.reasons)
            if group
            else "fewer than two of them add matches given the others: no group to request"
        )
        note = f"together with the other challengers ({names}): {why}"
        return {
            s: (dataclasses.replace(p.decision, reasons=(*p.decision.reasons, note)), None)
            for s, p in lost.items()
        }
    return _group_requests(params, lost, swapped, group, decision)


def _group_requests(
    params: Params,
    lost: dict[str, Pending],
    swapped: dict[str, ResolvedStage],
    group: list[str],
    decision: PromotionDecision,
) -> dict[str, tuple[PromotionDecision, dict[str, str] | None]]:
    """The winning group's decision for each member that lost alone, `together` with the rest;
    one member's reviewed veto holds back every member that needs the group."""
    names = ", ".join(f"{s} v{swapped[s].version}" for s in group)
    out: dict[str, tuple[PromotionDecision, dict[str, str] | None]] = {}
    for stage in (s for s in group if s in lost):
        alone = "; ".join(lost[stage].decision.reasons)
        reasons = (f"requested together with {names}: the cascade wins only with all of them "
                   f"swapped (alone: {alone})", *decision.reasons)  # fmt: skip
        item = lost[stage].challenger
        own = reviewed_decision(
            params, stage, item.name, item.version, dataclasses.replace(decision, reasons=reasons)
        )
        together = {s: swapped[s].version for s in group if s != stage}
        out[stage] = (own, together)
    vetoed = [s for s, (d, _) in out.items() if not d.promote]
    if vetoed:  # the members that need the group move with it: one's reviewed veto holds all
        why = f"held back with {', '.join(vetoed)} (reviewed veto)"
        out = {s: (dataclasses.replace(d, promote=False, reasons=(*d.reasons, why)), None)
               for s, (d, _) in out.items()}  # fmt: skip
    return out


def _first_champions(
    params: Params, stages: list[str], link: str | None
) -> dict[str, dict[str, Any]]:
    """Stages with no champion yet: their challenger (it passed its offline gates) is requested
    as the first champion — there is no champion to compare with on shadow traffic, so the
    evidence is the offline metrics, and the reviewer decides. {} when every stage has one."""
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.registry.register import resolve_stage
    from pipelines.registry.store import aliases_of, registered_model_name

    client = registry_client(params)
    first = [
        s for s in stages if CHAMPION not in aliases_of(client, registered_model_name(params, s))
    ]
    missing = _stages_without_candidate(params, client, stages) if first else {}
    if missing:  # a first champion cascade that could not serve: request none of it yet
        why = "; ".join(f"{stage}: {reason}" for stage, reason in missing.items())
        return {
            stage: {"name": registered_model_name(params, stage), "version": None, "cases": 0,
                    "status": "waiting",
                    "reason": f"the first champion cascade needs every stage; none yet for {why}"}
            for stage in first
        }  # fmt: skip
    outcomes: dict[str, dict[str, Any]] = {}
    resolved = {stage: resolve_stage(params, stage, CHALLENGER) for stage in first}
    for stage, challenger in resolved.items():
        tags = client.get_model_version(challenger.name, challenger.version).tags or {}
        metrics = {k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")}
        offline = ", ".join(f"{k} {float(v):.3f}" for k, v in sorted(metrics.items()))
        decision = PromotionDecision(
            True, (f"first champion of {stage}: no champion to compare with on shadow traffic; "
                   f"it passed its offline gates ({offline or 'no metrics'})",),
            0, 0.0, 0.0, 0, 0, 1.0,
        )  # fmt: skip
        base = {"name": challenger.name, "version": challenger.version, "cases": 0}
        together = {s: r.version for s, r in resolved.items() if s != stage}
        outcomes[stage] = {
            **base,
            **record_decision(params, stage, challenger, decision, link, together),
        }
    return outcomes


def _stages_without_candidate(params: Params, client: Any, stages: list[str]) -> dict[str, str]:
    """Stages of the cascade with neither a champion nor a challenger, with the reason (e.g. the
    newest version's failed offline gate): the service cannot load a cascade without them."""
    from pipelines.data.contract import STAGES
    from pipelines.registry.promote import GATE_REASONS
    from pipelines.registry.store import aliases_of, registered_model_name

    missing: dict[str, str] = {}
    for stage in STAGES:
        name = registered_model_name(params, stage)
        if stage in stages or CHAMPION in aliases_of(client, name):
            continue
        versions = client.search_model_versions(f"name = '{name}'")
        newest = max(versions, key=lambda v: int(v.version), default=None)
        if newest is None:
            missing[stage] = f"{name} has no registered version"
        else:
            gate = (newest.tags or {}).get(GATE_REASONS) or "no challenger alias"
            missing[stage] = f"{name} v{newest.version} failed its offline gate ({gate})"
    return missing


def _window(params: Params, challengers: dict[str, ResolvedStage]) -> Any:
    """The prediction log since the oldest challenger version was registered."""
    from monitoring.log.store import PredictionLog

    client = registry_client(params)
    created = min(
        client.get_model_version(r.name, r.version).creation_timestamp for r in challengers.values()
    )
    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        return log.window(since=datetime.fromtimestamp(created / 1000, UTC))
    finally:
        log.close()


def record_decision(
    params: Params,
    stage: str,
    challenger: ResolvedStage,
    decision: PromotionDecision,
    link: str | None = None,
    together: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Request + notify, or tag the rejection — unless this evidence was recorded already.

    `together` (stage → version) are the other members of a group requested as one: promote
    moves none of them before all are approved (`casepilot.promote_with`)."""
    client = registry_client(params)
    name, version = challenger.name, challenger.version
    tags = client.get_model_version(name, version).tags or {}
    key = evidence_key(stage, f"{name}/{version}", decision)
    summary = {"key": key, "evidence": decision.as_dict()}
    if tags.get(REQUESTED) == "true":
        requested = tags.get(DECISION_KEY, "")
        if tags.get(NOTIFIED_KEY) == requested:
            return {**summary, "status": "unchanged", "reason": "promotion already requested"}
        sent = _notify(params, stage, name, version, tags.get("casepilot.promotion_link"), link,
                       decision, _group(tags.get(PROMOTE_WITH)))  # fmt: skip
        if sent.status == "sent":
            client.set_model_version_tag(name, version, NOTIFIED_KEY, requested)
        return {**summary, "status": "requested", "notified": sent.status, "reason": sent.reason}
    if tags.get(DECISION_KEY) == key:
        return {**summary, "status": "unchanged", "reason": "same evidence as the last decision"}
    if not decision.promote:
        set_version_tags(client, name, version, {
            REJECTED: "true", REJECTED_REASONS: "; ".join(decision.reasons)[:4900],
            DECISION_KEY: key, DECIDED_AT: now_iso(), DECIDED_BY: decided_by()})  # fmt: skip
        return {**summary, "status": "rejected", "reason": "; ".join(decision.reasons)}
    # the group first: once the request is on the version a reviewer may approve it, and
    # promote must then already know what the version moves with
    client.set_model_version_tag(name, version, PROMOTE_WITH, json.dumps(together or {}))
    request = request_promotion(params, stage, decision, version=version)
    set_version_tags(client, name, version, {REJECTED: "false", DECISION_KEY: key,
                                             DECIDED_AT: request.requested_at,
                                             DECIDED_BY: decided_by()})  # fmt: skip
    sent = _notify(params, stage, name, version, request.link, link, decision, together)
    if sent.status == "sent":
        client.set_model_version_tag(name, version, NOTIFIED_KEY, key)
    return {**summary, "status": "requested", "link": request.link,
            "audit_run_id": request.audit_run_id, "notified": sent.status,
            "reason": sent.reason}  # fmt: skip


def decided_by() -> str:
    """`monitor/casepilot run 'name'` inside a deployment run, else the flow run or process."""
    from prefect.runtime import deployment, flow_run

    run = flow_run.name
    if not run:
        return "a direct call (no Prefect flow run)"
    where = f"{flow_run.flow_name}/{deployment.name}" if deployment.name else flow_run.flow_name
    return f"{where} run '{run}'"


def _notify(
    params: Params,
    stage: str,
    name: str,
    version: str,
    mlflow_link: str | None,
    evidence_link: str | None,
    decision: PromotionDecision,
    together: dict[str, str] | None = None,
) -> Any:
    from monitoring.notify.channels import notify_reviewers

    title = f"casepilot: review the {stage} challenger ({name} v{version})"
    swapped = (
        f"{stage} swapped together with {', '.join(f'{s} v{v}' for s, v in together.items())}; "
        "approve every one of them: promote moves them together"
        if together
        else f"only the {stage} stage swapped"
    )
    evidence = (
        f"The {stage} challenger beat the champion on {decision.cases} replayed shadow cases "
        f"({swapped}): match rate {decision.challenger_match_rate:.3f} vs "
        f"{decision.champion_match_rate:.3f}, one-sided McNemar p={decision.p_value:.3g}."
        if decision.cases
        else f"The {stage} stage has no champion yet: its challenger is proposed as the first "
        "(the first champion cascade moves whole, once every stage is approved)."
    )
    lines = [
        evidence,
        *decision.reasons,
        f"Review the evidence in MLflow: {mlflow_link}",
        f"Approve, signed in as a reviewer other than the requester: `casepilot approve {stage} "
        f"--version {version}`; the promote deployment then moves champion within "
        f"{params.schedule.promote_poll_seconds} s.",
    ]
    if evidence_link:
        lines.append(f"Monitoring evidence: {evidence_link}")
    details = {"stage": stage, "model": name, "version": version, "link": mlflow_link,
               "evidence": decision.as_dict()}  # fmt: skip
    return notify_reviewers(params, title, "\n".join(lines), details)


def _group(tag: str | None) -> dict[str, str] | None:
    try:
        return json.loads(tag) or None if tag else None
    except ValueError:
        return None
