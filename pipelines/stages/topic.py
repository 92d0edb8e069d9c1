"""The topic stage: which topic of the support taxonomy an answerable message is about.

Trained on answerable cases only. The cascade goes on when the calibrated top probability
reaches the threshold chosen on validation for `topic.target_precision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.stages.encoder.classifier import (
    ClassifierModel,
    Examples,
    StageClassifier,
    context_text,
    evaluate_probabilities,
)
from pipelines.stages.encoder.classifier_train import fine_tune
from pipelines.stages.kinds import EncoderStage

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.config import TopicConfig
    from pipelines.data.contract import LabeledCase

STAGE = "topic"


@dataclass(frozen=True)
class TopicPrediction:
    """One topic decision: the top topic, its calibrated probability, and whether to go on."""

    label: str
    probability: float
    emitted: bool  # probability >= threshold
    threshold: float

    @property
    def abstain_reason(self) -> str | None:
        if self.emitted:
            return None
        return f"topic: top probability {self.probability:.3f} < threshold {self.threshold:.3f}"


def topic_labels(cases: Sequence[LabeledCase]) -> list[str]:
    """Return the sorted topics of the answerable cases."""
    return sorted({c.topic for c in cases if c.answerable and c.topic})


def examples(cases: Sequence[LabeledCase], labels: Sequence[str]) -> Examples:
    """Return examples of the answerable cases whose topic is one of `labels`."""
    index = {name: i for i, name in enumerate(labels)}
    kept = [c for c in cases if c.answerable and c.topic in index]
    return Examples(
        texts=[c.message for c in kept],
        pairs=[context_text(c.context) for c in kept],
        labels=[index[c.topic] for c in kept],
    )


def train(
    cfg: TopicConfig,
    train_cases: Sequence[LabeledCase],
    val_cases: Sequence[LabeledCase],
    out_dir: Path,
    *,
    console: Console | None = None,
) -> Path:
    """Fine-tune, calibrate and save the topic classifier into `out_dir`; returns `out_dir`.

    Validation cases whose topic never occurs in training are left out (the model cannot
    predict a topic it has not seen).
    """
    labels = topic_labels(train_cases)
    if len(labels) < 2:
        raise ValueError(
            f"topic: need at least 2 topics among answerable training cases, "
            f"got {labels}; add labeled cases"
        )
    fine_tune(
        cfg,
        STAGE,
        labels,
        examples(train_cases, labels),
        examples(val_cases, labels),
        Path(out_dir),
        console=console,
    )
    return Path(out_dir)


class TopicModel(StageClassifier):
    """A trained topic classifier: batched, calibrated topic decisions."""

    stage = STAGE

    def predict(
        self, messages: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[TopicPrediction]:
        """Return one topic decision per message (contexts: prior turns, a string, or None)."""
        probs = self.probabilities(messages, contexts)
        threshold = self.meta.threshold
        return [
            TopicPrediction(
                label=self.meta.labels[int(row.argmax())],
                probability=float(row.max()),
                emitted=bool(row.max() >= threshold),
                threshold=threshold,
            )
            for row in probs
        ]


def load(model_dir: Path) -> TopicModel:
    """Load a topic classifier saved by `train`."""
    return TopicModel(ClassifierModel(Path(model_dir)))


def evaluate(
    model: TopicModel, cases: Sequence[LabeledCase], *, figures: bool = True
) -> tuple[dict[str, float], dict[str, Any]]:
    """Return (metrics, figures) on the answerable cases whose topic the model knows.

    Cases with a topic the model never saw are left out; `unknown_topic_share` says how many.
    """
    answerable = [c for c in cases if c.answerable and c.topic]
    known = examples(answerable, model.meta.labels)
    metrics, plots = evaluate_probabilities(
        model.meta,
        model.classifier.probabilities(known.texts, known.pairs),
        known.labels,
        figures=figures,
    )
    metrics["unknown_topic_share"] = 1 - len(known.texts) / max(len(answerable), 1)
    return metrics, plots


STAGE_IMPL = EncoderStage(
    STAGE,
    "accuracy",
    train=train,
    load=load,
    evaluate=evaluate,
    examples=lambda model, cases: examples(cases, model.meta.labels),
)
