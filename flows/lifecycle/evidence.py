"""One challenger stage's shadow evidence: its logged cases replayed through two cascades.

The logged messages are replayed through the champion cascade and through the champion cascade
with only that stage swapped to its challenger (why: monitoring/decisions/replay.py). Models are
loaded by alias from MLflow, once per version per run; the retrieve index is restored in memory,
so the replay never touches the Qdrant folder the running service holds. A match-rate win is
vetoed when reviewers found the challenger significantly worse on the latest reviewed day
(monitoring/review/promotion.py).

The hash of the decision's inputs (cases, replies, model versions, settings) is stored on the
version (`casepilot.decision_inputs`): a rerun on the same inputs replays nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flows.lifecycle.record import DECISION_INPUTS, DECISION_KEY, NOTIFIED_KEY
from monitoring.decisions.replay import stage_decision, stage_shadow_cases
from monitoring.review.promotion import reviewed_decision
from pipelines.registry.approval import REQUESTED
from pipelines.registry.store import registry_client

if TYPE_CHECKING:
    from monitoring.decisions.promotion import PromotionDecision
    from pipelines.cascade import Cascade
    from pipelines.config import Params
    from pipelines.registry.resolve import ResolvedStage

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


def stage_evidence(
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
        params.monitor.match_threshold, params.promote,
    )  # fmt: skip
    # reviewed correctness can veto a match-rate win (monitoring/review/promotion.py)
    decision = reviewed_decision(params, stage, challenger.name, challenger.version, decision)
    return Pending(challenger, base, inputs, decision, tags.get(REQUESTED) == "true")


def shadow_window(params: Params, challengers: dict[str, ResolvedStage]) -> Any:
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
