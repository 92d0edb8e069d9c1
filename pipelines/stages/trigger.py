"""The trigger stage: is this message a real, answerable question? (DESIGN §1)

Input is the message plus the last prior turn, if any. The cascade goes on when the calibrated
p(answerable) reaches the threshold chosen on validation for `trigger.target_precision`.
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

    from pipelines.config import TriggerConfig
    from pipelines.data.contract import LabeledCase

STAGE = "trigger"
LABELS = ["not_answerable", "answerable"]
POSITIVE = "answerable"


@dataclass(frozen=True)
class TriggerPrediction:
    """One trigger decision: the likelier label, calibrated p(answerable), and whether to go on."""

    label: str
    probability: float  # calibrated p(answerable)
    emitted: bool  # probability >= threshold: the cascade continues
    threshold: float

    @property
    def abstain_reason(self) -> str | None:
        if self.emitted:
            return None
        return f"trigger: p(answerable) {self.probability:.3f} < threshold {self.threshold:.3f}"


def examples(cases: Sequence[LabeledCase]) -> Examples:
    """Return the trigger's training examples: message, last context turn, answerable label."""
    return Examples(
        texts=[c.message for c in cases],
        pairs=[context_text(c.context) for c in cases],
        labels=[int(c.answerable) for c in cases],
    )


def train(
    cfg: TriggerConfig,
    train_cases: Sequence[LabeledCase],
    val_cases: Sequence[LabeledCase],
    out_dir: Path,
    *,
    console: Console | None = None,
) -> Path:
    """Fine-tune, calibrate and save the trigger into `out_dir`; returns `out_dir`."""
    fine_tune(
        cfg,
        STAGE,
        LABELS,
        examples(train_cases),
        examples(val_cases),
        Path(out_dir),
        positive_label=POSITIVE,
        console=console,
    )
    return Path(out_dir)


class TriggerModel(StageClassifier):
    """A trained trigger: batched, calibrated answerability decisions."""

    stage = STAGE

    def predict(
        self, messages: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[TriggerPrediction]:
        """Return one decision per message (contexts: prior turns, a string, or None each)."""
        probs = self.probabilities(messages, contexts)
        p = probs[:, LABELS.index(POSITIVE)]
        threshold = self.meta.threshold
        return [
            TriggerPrediction(
                label=LABELS[int(row.argmax())],
                probability=float(score),
                emitted=bool(score >= threshold),
                threshold=threshold,
            )
            for row, score in zip(probs, p, strict=True)
        ]


def load(model_dir: Path) -> TriggerModel:
    """Load a trigger saved by `train`."""
    return TriggerModel(ClassifierModel(Path(model_dir)))


def evaluate(
    model: TriggerModel, cases: Sequence[LabeledCase], *, figures: bool = True
) -> tuple[dict[str, float], dict[str, Any]]:
    """Return (metrics, figures) of the trigger on labeled cases (AUROC, ECE, coverage, …)."""
    data = examples(cases)
    probs = model.classifier.probabilities(data.texts, data.pairs)
    return evaluate_probabilities(model.meta, probs, data.labels, figures=figures)


STAGE_IMPL = EncoderStage(
    STAGE,
    "auroc",
    train=train,
    load=load,
    evaluate=evaluate,
    examples=lambda model, cases: examples(cases),
)
