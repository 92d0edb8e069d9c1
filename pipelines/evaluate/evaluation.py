"""Offline evaluation of classifiers: metrics and the plots every stage logs to MLflow.

Metrics: accuracy, macro precision / recall / F1, AUROC, negative log-likelihood, expected
calibration error, and selective precision / coverage at an abstain threshold. Plots are
matplotlib `Figure` objects built without pyplot, so nothing touches a global backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipelines.evaluate.calibration import threshold_for_recall

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 15
) -> float:
    """Return the ECE: the bin-weighted gap between confidence and accuracy (equal-width bins)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidences) == 0:
        return 0.0
    bins = np.minimum((confidences * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            gap = abs(confidences[members].mean() - correct[members].mean())
            ece += members.mean() * gap
    return float(ece)


def selective_metrics(scores: Sequence[float], correct: Sequence[bool], threshold: float) -> dict:
    """Return coverage and precision of the cases emitted at `threshold` (score >= threshold)."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    emitted = scores >= threshold
    coverage = float(emitted.mean()) if len(scores) else 0.0
    precision = float(correct[emitted].mean()) if emitted.any() else 0.0
    return {"coverage": coverage, "selective_precision": precision}


def classification_metrics(
    y_true: Sequence[int], probs: np.ndarray, *, positive_index: int | None = None
) -> dict[str, float]:
    """Return accuracy, macro P/R/F1, NLL, ECE and AUROC for class-probability rows.

    With `positive_index` (a binary task), precision / recall / F1 and AUROC are those of that
    class; otherwise they are macro averages and AUROC is one-vs-rest over the classes present.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    metrics: dict[str, float] = {
        "n": float(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "nll": float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None)).mean()),
        "ece": expected_calibration_error(confidence, y_pred == y_true),
    }
    if positive_index is not None:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=[positive_index], average=None, zero_division=0
        )
        metrics |= {"precision": float(p[0]), "recall": float(r[0]), "f1": float(f[0])}
        is_positive = y_true == positive_index
        if len(np.unique(is_positive)) == 2:
            scores = probs[:, positive_index]
            metrics["auroc"] = float(roc_auc_score(is_positive, scores))
            # the negatives let through at the threshold that keeps 95% of the positives
            keep = threshold_for_recall(scores, is_positive, 0.95)
            metrics["fpr_at_95_recall"] = float((scores[~is_positive] >= keep).mean())
        return metrics
    present = np.unique(y_true)
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0
    )
    metrics |= {"precision": float(p), "recall": float(r), "f1": float(f)}
    if len(present) > 1:
        sub = probs[:, present] / np.clip(probs[:, present].sum(axis=1, keepdims=True), 1e-12, None)
        if len(present) == 2:
            metrics["auroc"] = float(roc_auc_score(y_true == present[1], sub[:, 1]))
        else:
            metrics["auroc"] = float(
                roc_auc_score(y_true, sub, multi_class="ovr", average="macro", labels=present)
            )
    return metrics


def precision_coverage_curve(
    scores: Sequence[float], correct: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (thresholds, coverage, precision), thresholds descending, one point per cut."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    emitted = np.arange(1, len(scores) + 1)
    precision = np.cumsum(correct[order]) / emitted
    return scores[order], emitted / max(len(scores), 1), precision


def plot_confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> Figure:
    """Return a confusion-matrix figure (rows: true, columns: predicted; row-normalised)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(labels)))).astype(float)
    matrix /= np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    size = min(4 + 0.18 * len(labels), 20)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(len(labels))
    font = 8 if len(labels) <= 20 else 4
    ax.set_xticks(ticks, labels=labels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=labels, fontsize=font)
    if len(labels) <= 10:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    fig.tight_layout()
    return fig


def plot_reliability(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 15
) -> Figure:
    """Return a reliability diagram: accuracy per confidence bin against the diagonal."""
    from matplotlib.figure import Figure

    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.minimum((confidences * n_bins).astype(int), n_bins - 1)
    accuracy = [correct[bins == b].mean() if (bins == b).any() else 0.0 for b in range(n_bins)]
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.bar(edges[:-1], accuracy, width=1 / n_bins, align="edge", edgecolor="black", alpha=0.7)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ece = expected_calibration_error(confidences, correct, n_bins)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"reliability (ECE {ece:.3f})")
    fig.tight_layout()
    return fig


def plot_precision_coverage(
    scores: Sequence[float], correct: Sequence[bool], threshold: float | None = None
) -> Figure:
    """Return the precision–coverage curve, with the chosen threshold marked."""
    from matplotlib.figure import Figure

    _, coverage, precision = precision_coverage_curve(scores, correct)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(coverage, precision)
    if threshold is not None:
        at = selective_metrics(scores, correct, threshold)
        ax.scatter(
            [at["coverage"]],
            [at["selective_precision"]],
            color="red",
            zorder=3,
            label=f"threshold {threshold:.3f}",
        )
        ax.legend(loc="lower left")
    ax.set(xlabel="coverage", ylabel="precision of emitted", xlim=(0, 1.02))
    ax.set_title("precision vs coverage")
    fig.tight_layout()
    return fig
