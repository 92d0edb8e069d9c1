"""Calibration of classifier scores: temperature scaling and the abstain threshold.

Both are fitted on validation data only. Temperature scaling divides the logits by one scalar
T > 0 chosen to minimise the negative log-likelihood, which leaves the argmax unchanged and makes
the probabilities honest. The threshold is the abstain knob: the lowest score at which the emitted
predictions still meet a target precision, so coverage is as high as that precision allows —
placed with a margin, never below a floor (see `threshold_for_precision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_LOG_T, MAX_LOG_T = np.log(0.05), np.log(20.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Return row-wise softmax probabilities of `logits / temperature`."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(
    logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0
) -> float:
    """Return the mean NLL of the true labels under softmax(logits / temperature)."""
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(probs)), np.asarray(labels)]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Return the temperature T in [0.05, 20] that minimises validation NLL (T=1 when no data)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(MIN_LOG_T, MAX_LOG_T),
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = float(np.exp(result.x))
    # Never return something worse than leaving the logits alone.
    if negative_log_likelihood(logits, labels, temperature) > negative_log_likelihood(
        logits, labels
    ):
        return 1.0
    return temperature


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen abstain threshold and what it achieved on the data it was fitted on."""

    threshold: float
    precision: float  # share of emitted predictions that were correct
    coverage: float  # share of cases emitted
    met: bool  # whether `precision` reached the target


def threshold_for_precision(
    scores: Sequence[float],
    correct: Sequence[bool],
    target_precision: float,
    *,
    floor: float = 0.0,
) -> ThresholdChoice:
    """Return the threshold whose emitted set (score >= threshold) meets the target precision
    with the most correct cases, placed conservatively.

    `correct[i]` says whether emitting case i would be right (trigger: the case is answerable;
    topic: the top label is the true one). Among the cut points that meet the target, the one
    emitting the most correct cases wins, and the fewest wrong ones among equals: going lower
    only to let wrong cases through while precision stays above the target would buy nothing.
    The threshold then sits midway between the lowest emitted score and the next lower one, so a
    separable validation set gives a margin on both sides instead of a threshold glued to its
    lowest negative (which once came out at ~1e-23), and it never goes below `floor` (for a
    classifier, 1 / number of classes: never emit against the model's own argmax). When no
    threshold meets the target, the one with the highest precision is returned with `met=False`,
    so the caller can warn instead of crash.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(scores) == 0:
        return ThresholdChoice(threshold=1.0, precision=0.0, coverage=0.0, met=False)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_correct = scores[order], correct[order]
    # Emitting the top k cases; only cut where the score changes (ties go together).
    cut = np.r_[sorted_scores[1:] < sorted_scores[:-1], True]
    emitted = np.arange(1, len(scores) + 1)[cut]
    hits = np.cumsum(sorted_correct)[cut]
    precision = hits / emitted
    thresholds = sorted_scores[cut]
    meets = np.flatnonzero(precision >= target_precision)
    # argmax takes the first of equals: the most correct cases with the fewest wrong ones
    best = int(meets[np.argmax(hits[meets])]) if len(meets) else int(np.argmax(precision))
    threshold = float(thresholds[best])
    if best + 1 < len(thresholds):  # midway to the next lower score
        threshold = float((thresholds[best] + thresholds[best + 1]) / 2)
    threshold = max(threshold, floor)
    kept = scores >= threshold
    return ThresholdChoice(
        threshold=threshold,
        precision=float(correct[kept].mean()) if kept.any() else 0.0,
        coverage=float(kept.mean()),
        met=bool(len(meets)),
    )


def threshold_for_recall(scores: Sequence[float], positive: Sequence[bool], recall: float) -> float:
    """Return the highest threshold that keeps at least `recall` of the positive cases."""
    positive_scores = np.sort(
        np.asarray(scores, dtype=np.float64)[np.asarray(positive, dtype=bool)]
    )
    if len(positive_scores) == 0:
        raise ValueError("threshold_for_recall needs at least one positive case")
    keep = int(np.ceil(recall * len(positive_scores)))
    return float(positive_scores[len(positive_scores) - max(keep, 1)])
