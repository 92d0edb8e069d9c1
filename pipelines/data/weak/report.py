"""How well weak labels were made: per-LF coverage / overlaps / conflicts and held-out accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.data.weak.records import ABSTAIN, LabelSpace


@dataclass(frozen=True)
class LfStats:
    """One LF: Snorkel's LFAnalysis on the unlabeled set, accuracy on held-out gold."""

    name: str
    polarity: tuple[str, ...]  # the classes it voted for
    coverage: float
    overlaps: float
    conflicts: float
    holdout_votes: int
    holdout_accuracy: float | None  # None when it never voted on the held-out slice


@dataclass(frozen=True)
class WeakLabelReport:
    """Per-LF statistics plus the label model's coverage and held-out accuracy."""

    lfs: tuple[LfStats, ...]
    unlabeled: int
    labeled: int
    all_abstained: int
    holdout_cases: int
    holdout_coverage: float
    holdout_accuracy: float | None
    # The same slice by plain majority vote (ties abstain): what the label model must beat.
    holdout_majority_accuracy: float | None = None

    @property
    def coverage(self) -> float:
        """Share of unlabeled messages that received a weak label."""
        return self.labeled / self.unlabeled if self.unlabeled else 0.0

    def as_dict(self) -> dict:
        """The report as plain JSON-able data (for MLflow or a file)."""
        return {
            "unlabeled": self.unlabeled,
            "labeled": self.labeled,
            "coverage": round(self.coverage, 4),
            "all_abstained": self.all_abstained,
            "holdout_cases": self.holdout_cases,
            "holdout_coverage": round(self.holdout_coverage, 4),
            "holdout_accuracy": self.holdout_accuracy,
            "holdout_majority_accuracy": self.holdout_majority_accuracy,
            "lfs": [vars(stats) | {"polarity": list(stats.polarity)} for stats in self.lfs],
        }


def build_report(
    functions: Sequence,
    space: LabelSpace,
    L_new: np.ndarray,
    L_hold: np.ndarray,
    y_hold: np.ndarray,
    model,  # noqa: ANN001 - snorkel LabelModel
    labeled: int,
) -> WeakLabelReport:
    """Summarise LFs with `LFAnalysis` and score them and the label model on held-out gold."""
    from snorkel.labeling import LFAnalysis

    summary = LFAnalysis(L_new, list(functions)).lf_summary()
    stats = []
    for j, function in enumerate(functions):
        row = summary.loc[function.name]
        votes = L_hold[:, j] != ABSTAIN
        accuracy = float(np.mean(L_hold[votes, j] == y_hold[votes])) if votes.any() else None
        stats.append(
            LfStats(
                name=function.name,
                polarity=tuple(space.names[c] for c in sorted(np.unique(L_new[:, j])) if c >= 0),
                coverage=float(row["Coverage"]),
                overlaps=float(row["Overlaps"]),
                conflicts=float(row["Conflicts"]),
                holdout_votes=int(votes.sum()),
                holdout_accuracy=None if accuracy is None else round(accuracy, 4),
            )
        )
    covered = (L_hold != ABSTAIN).any(axis=1)
    accuracy = majority = None
    if covered.any():
        predicted = np.argmax(model.predict_proba(L_hold[covered]), axis=1)
        accuracy = round(float(np.mean(predicted == y_hold[covered])), 4)
        majority = _majority_accuracy(L_hold[covered], y_hold[covered], space)
    return WeakLabelReport(
        lfs=tuple(stats),
        unlabeled=len(L_new),
        labeled=labeled,
        all_abstained=int((L_new == ABSTAIN).all(axis=1).sum()),
        holdout_cases=len(L_hold),
        holdout_coverage=round(float(covered.mean()), 4) if len(L_hold) else 0.0,
        holdout_accuracy=accuracy,
        holdout_majority_accuracy=majority,
    )


def _majority_accuracy(L: np.ndarray, y: np.ndarray, space: LabelSpace) -> float | None:
    from snorkel.labeling.model import MajorityLabelVoter

    voted = MajorityLabelVoter(cardinality=space.cardinality, verbose=False).predict(
        L, tie_break_policy="abstain"
    )
    decided = voted != ABSTAIN
    return round(float(np.mean(voted[decided] == y[decided])), 4) if decided.any() else None
