"""The runtime cascade (DESIGN §1): trigger → topic → retrieve → answer → tone, one object for all.

Evaluation, the CLI, the service and shadow scoring call the same `Cascade`. Each stage runs
batched over the cases still in play; a case stops at the first stage that abstains, with the
stage name and a reason such as "trigger: p(answerable)=0.41 < 0.80". The tone stage never
abstains: when its rewrite is unfaithful the answer's draft is kept, and a reply the answer
stage retrieved verbatim (an agent's own words) is not rewritten. Constructing a cascade
from stage objects is separate from loading them (`load_cascade_from_dirs` here, the MLflow
registry by alias elsewhere), so tests build one from tiny real models.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipelines.data.contract import STAGES, Stage, Suggestion, Turn
from pipelines.stages.answer import AnswerInput
from pipelines.stages.registry import get_stage

Context = Sequence[Turn]


class ClassifierPrediction(Protocol):
    label: str
    probability: float  # trigger: p(answerable); topic: the top topic's probability
    emitted: bool
    threshold: float


class ClassifierStage(Protocol):
    """trigger or topic: a calibrated classifier with an abstain threshold."""

    def predict(
        self, messages: Sequence[str], contexts: Sequence[Context] | None = None
    ) -> Sequence[ClassifierPrediction]: ...


class RetrievePredictionLike(Protocol):
    hits: Sequence[Any]
    best_similarity: float
    emitted: bool
    reason: str | None


class RetrieveStage(Protocol):
    def predict(
        self, messages: Sequence[str], topics: Sequence[str | None]
    ) -> Sequence[RetrievePredictionLike]: ...


class AnswerPrediction(Protocol):
    text: str | None
    confidence: float
    groundedness: float
    score: float
    source: str | None  # "generated" or "retrieved"
    abstained: bool
    reason: str | None


class AnswerStage(Protocol):
    """Reads `AnswerInput`s (message, topic, retrieved passages) built from the retrieve hits."""

    def predict(self, batch: Sequence[AnswerInput]) -> Sequence[AnswerPrediction]: ...


class TonePrediction(Protocol):
    text: str  # the rewrite, or the draft when it was kept
    kept_draft: bool
    faithfulness: float
    tone_score: float


class ToneStage(Protocol):
    def predict(self, drafts: Sequence[str]) -> Sequence[TonePrediction]: ...


@dataclass
class _Case:
    """The running state of one message through the cascade."""

    message: str
    context: Context
    scores: dict[str, float] = field(default_factory=dict)
    topic: str | None = None
    hits: Sequence[Any] = ()
    text: str | None = None
    source: str | None = None
    stopped_at: Stage | None = None
    reason: str | None = None
    latency_ms: float = 0.0


def _reason(stage: str, given: str | None, fallback: str) -> str:
    """The stage's own reason, prefixed with the stage name, or the fallback."""
    if not given:
        return f"{stage}: {fallback}"
    return given if given.startswith(f"{stage}:") else f"{stage}: {given}"


def _below(prediction: Any) -> str:
    threshold = getattr(prediction, "threshold", None)
    return f" < {threshold:.3f}" if isinstance(threshold, int | float) else " below threshold"


class Cascade:
    """The five stages with their versions; `suggest` / `suggest_batch` return `Suggestion`s."""

    def __init__(
        self,
        trigger: ClassifierStage,
        topic: ClassifierStage,
        retrieve: RetrieveStage,
        answer: AnswerStage,
        tone: ToneStage | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self.trigger, self.topic, self.retrieve = trigger, topic, retrieve
        self.answer, self.tone = answer, tone
        self.versions = dict(versions or {})

    def suggest(self, message: str, context: Context = ()) -> Suggestion:
        """One message (with its earlier turns) → a suggestion or an abstention with its reason."""
        return self.suggest_batch([message], [context])[0]

    def suggest_batch(
        self, messages: Sequence[str], contexts: Sequence[Context] | None = None
    ) -> list[Suggestion]:
        """Run the cascade over a batch; each stage sees only the cases still in play."""
        contexts = list(contexts) if contexts is not None else [()] * len(messages)
        if len(contexts) != len(messages):
            raise ValueError(f"got {len(messages)} messages but {len(contexts)} contexts")
        cases = [_Case(m, tuple(c)) for m, c in zip(messages, contexts, strict=True)]
        for stage_step in (self._trigger, self._topic, self._retrieve, self._answer, self._tone):
            live = [c for c in cases if c.stopped_at is None]
            if not live:
                continue
            started = time.perf_counter()
            stage_step(live)
            share = (time.perf_counter() - started) * 1000 / len(live)
            for case in live:
                case.latency_ms += share
        return [self._suggestion(c) for c in cases]

    # Each step reads and updates the live cases in place.

    def _trigger(self, live: list[_Case]) -> None:
        predictions = self.trigger.predict([c.message for c in live], [c.context for c in live])
        for case, p in zip(live, predictions, strict=True):
            case.scores["trigger"] = float(p.probability)
            if not p.emitted:
                self._stop(case, "trigger", None, f"p(answerable)={p.probability:.3f}{_below(p)}")

    def _topic(self, live: list[_Case]) -> None:
        predictions = self.topic.predict([c.message for c in live], [c.context for c in live])
        for case, p in zip(live, predictions, strict=True):
            case.scores["topic"] = float(p.probability)
            case.topic = p.label
            if not p.emitted:
                self._stop(case, "topic", None, f"p({p.label})={p.probability:.3f}{_below(p)}")

    def _retrieve(self, live: list[_Case]) -> None:
        predictions = self.retrieve.predict([c.message for c in live], [c.topic for c in live])
        for case, p in zip(live, predictions, strict=True):
            case.scores["retrieve"] = float(p.best_similarity)
            case.hits = tuple(p.hits)
            if not p.emitted:
                self._stop(case, "retrieve", p.reason, f"best similarity={p.best_similarity:.3f}")

    def _answer(self, live: list[_Case]) -> None:
        inputs = [AnswerInput.from_hits(c.message, c.topic or "", c.hits) for c in live]
        for case, p in zip(live, self.answer.predict(inputs), strict=True):
            case.scores["answer"] = float(p.score)
            case.scores["answer_confidence"] = float(p.confidence)
            case.scores["answer_groundedness"] = float(p.groundedness)
            if p.abstained or not p.text:
                self._stop(
                    case,
                    "answer",
                    p.reason,
                    f"confidence={p.confidence:.2f}, groundedness={p.groundedness:.2f}",
                )
            else:
                case.text = p.text
                case.source = getattr(p, "source", None) or "generated"

    def _tone(self, live: list[_Case]) -> None:
        # A retrieved reply is what an agent sent: already in house style, so it is not rewritten.
        live = [c for c in live if c.source != "retrieved"]
        if self.tone is None or not live:
            return
        for case, p in zip(live, self.tone.predict([c.text or "" for c in live]), strict=True):
            case.scores["tone"] = float(p.tone_score)
            case.scores["tone_faithfulness"] = float(p.faithfulness)
            case.scores["tone_kept_draft"] = 1.0 if p.kept_draft else 0.0
            if not p.kept_draft and p.text:
                case.text = p.text

    @staticmethod
    def _stop(case: _Case, stage: Stage, given: str | None, fallback: str) -> None:
        case.stopped_at = stage
        case.reason = _reason(stage, given, fallback)

    def _suggestion(self, case: _Case) -> Suggestion:
        return Suggestion(
            text=None if case.stopped_at else case.text,
            stopped_at=case.stopped_at,
            abstain_reason=case.reason,
            topic=case.topic,
            scores=case.scores,
            versions=self.versions,
            latency_ms=case.latency_ms,
            source=None if case.stopped_at else case.source,
        )


def stage_version(stage: str, model_dir: Path) -> str:
    """A stage's version: the `version` in its JSON descriptor, else a hash of that file."""
    for name in ("stage.json", f"{stage}.json", "meta.json", "config.json"):
        descriptor = Path(model_dir) / name
        if descriptor.exists():
            try:
                info = json.loads(descriptor.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                info = {}
            if isinstance(info, dict) and isinstance(info.get("version"), str):
                return info["version"]
            if isinstance(info, dict) and isinstance(info.get("collection"), str):
                return info["collection"]
            return f"{stage}-{hashlib.sha256(descriptor.read_bytes()).hexdigest()[:10]}"
    return f"{stage}-unversioned"


def load_cascade_from_dirs(models_dir: Path, *, qdrant_location: str | None = None) -> Cascade:
    """Load every stage from `models_dir/<stage>/` with its own `load` (the stage registry)."""
    models_dir = Path(models_dir)
    missing = [s for s in STAGES if not (models_dir / s).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{models_dir}: no model folder for {', '.join(missing)}; train them with "
            f"`casepilot train <stage> --out {models_dir}/<stage>`"
        )
    loaded = {s: get_stage(s).load(models_dir / s, location=qdrant_location) for s in STAGES}
    versions = {s: stage_version(s, models_dir / s) for s in STAGES}
    return Cascade(**loaded, versions=versions)
