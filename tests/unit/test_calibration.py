"""Calibration and classification metrics: temperature scaling, thresholds, ECE, AUROC, plots."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluate.calibration import (
    fit_temperature,
    negative_log_likelihood,
    softmax,
    threshold_for_precision,
    threshold_for_recall,
)
from pipelines.evaluate.evaluation import (
    classification_metrics,
    expected_calibration_error,
    plot_confusion_matrix,
    plot_precision_coverage,
    plot_reliability,
    precision_coverage_curve,
    selective_metrics,
)


def _calibrated_toy(n: int = 4000, classes: int = 4, seed: int = 0):
    """Logits whose softmax is the true label distribution, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, classes))
    probs = softmax(logits)
    labels = np.array([rng.choice(classes, p=row) for row in probs])
    return logits, labels


def test_temperature_scaling_repairs_an_overconfident_model() -> None:
    logits, labels = _calibrated_toy()
    overconfident = logits * 4.0  # the same ranking, far too sure of itself
    temperature = fit_temperature(overconfident, labels)
    assert 3.0 < temperature < 5.5
    before = negative_log_likelihood(overconfident, labels)
    after = negative_log_likelihood(overconfident, labels, temperature)
    assert after < before - 0.3
    ece_before = expected_calibration_error(
        softmax(overconfident).max(1), softmax(overconfident).argmax(1) == labels
    )
    probs = softmax(overconfident, temperature)
    ece_after = expected_calibration_error(probs.max(1), probs.argmax(1) == labels)
    assert ece_after < ece_before / 2
    # argmax is unchanged by a temperature
    assert (probs.argmax(1) == overconfident.argmax(1)).all()


def test_temperature_never_worse_than_identity() -> None:
    logits, labels = _calibrated_toy(seed=1)
    temperature = fit_temperature(logits, labels)
    assert (
        negative_log_likelihood(logits, labels, temperature)
        <= negative_log_likelihood(logits, labels) + 1e-9
    )
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0


def test_threshold_meets_target_precision_with_most_coverage() -> None:
    rng = np.random.default_rng(3)
    scores = rng.uniform(size=2000)
    correct = rng.uniform(size=2000) < scores  # higher score, more often right
    choice = threshold_for_precision(scores, correct, 0.9)
    emitted = scores >= choice.threshold
    assert choice.met
    assert correct[emitted].mean() >= 0.9
    assert choice.coverage == pytest.approx(emitted.mean())
    # every lower threshold breaks the target or lets through no more correct cases
    for lower in np.sort(scores[scores < choice.threshold])[::-1][:200]:
        wider = scores >= lower
        assert correct[wider].mean() < 0.9 or correct[wider].sum() == correct[emitted].sum()


def test_threshold_on_separable_scores_keeps_a_margin_and_a_floor() -> None:
    # Separable validation: the old rule walked down into the negatives while precision stayed
    # above the target and returned ~1e-23; the threshold must sit between the two classes.
    positives = np.linspace(0.9, 0.999, 95)
    negatives = np.r_[np.full(4, 1e-23), [0.2]]
    scores = np.r_[positives, negatives]
    correct = np.r_[np.ones(95, bool), np.zeros(5, bool)]
    choice = threshold_for_precision(scores, correct, 0.95)
    assert choice.met and choice.precision == 1.0 and choice.coverage == pytest.approx(0.95)
    assert choice.threshold == pytest.approx((0.9 + 0.2) / 2)
    # a floor (1 / classes) wins over a lower midpoint
    low = threshold_for_precision([0.3, 0.1, 0.05], [True, True, False], 0.9, floor=0.5)
    assert low.threshold == 0.5 and low.coverage == 0.0
    with pytest.raises(ValueError, match="floor"):
        threshold_for_precision([0.5], [True], 0.9, floor=2.0)


def test_threshold_reports_an_unreachable_target() -> None:
    choice = threshold_for_precision([0.9, 0.8, 0.7], [False, True, False], 0.99)
    assert not choice.met
    assert choice.precision == pytest.approx(0.5)
    with pytest.raises(ValueError, match="target_precision"):
        threshold_for_precision([0.5], [True], 1.5)


def test_threshold_for_recall_keeps_the_share_of_positives() -> None:
    scores = np.linspace(0, 1, 101)
    positive = scores > 0.5
    threshold = threshold_for_recall(scores, positive, 0.95)
    assert (scores[positive] >= threshold).mean() >= 0.95
    assert (scores[positive] >= threshold + 0.011).mean() < 0.95


def test_binary_metrics_auroc_and_fpr_at_recall() -> None:
    y = np.array([0] * 50 + [1] * 50)
    p1 = np.r_[np.linspace(0.0, 0.4, 50), np.linspace(0.6, 1.0, 50)]
    metrics = classification_metrics(y, np.stack([1 - p1, p1], 1), positive_index=1)
    assert metrics["auroc"] == pytest.approx(1.0)
    assert metrics["fpr_at_95_recall"] == 0.0
    assert metrics["accuracy"] == 1.0 and metrics["f1"] == 1.0
    flipped = classification_metrics(1 - y, np.stack([1 - p1, p1], 1), positive_index=1)
    assert flipped["auroc"] == pytest.approx(0.0)


def test_multiclass_metrics_and_selective_precision() -> None:
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.1, 0.4]])
    metrics = classification_metrics(y, probs)
    assert metrics["accuracy"] == 0.75
    assert 0.0 < metrics["f1"] < 1.0 and "auroc" in metrics
    at = selective_metrics(probs.max(1), probs.argmax(1) == y, 0.6)
    assert at == {"coverage": 0.75, "selective_precision": 1.0}
    _, coverage, precision = precision_coverage_curve(probs.max(1), probs.argmax(1) == y)
    assert coverage[-1] == 1.0 and precision[-1] == 0.75


def test_plots_are_figures_with_content() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    figures = [
        plot_confusion_matrix(y, probs.argmax(1), ["no", "yes"]),
        plot_reliability(probs.max(1), probs.argmax(1) == y),
        plot_precision_coverage(probs[:, 1], y == 1, threshold=0.5),
    ]
    for figure in figures:
        assert figure.axes and figure.axes[0].get_title()
