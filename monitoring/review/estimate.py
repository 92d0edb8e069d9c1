"""Honest online accuracy from reviewed samples: design-based estimates with 95% intervals.

Every figure is a ratio over a domain (e.g. topic accuracy = correct topics / requests that got a
topic), estimated with the Hájek estimator R = sum(w y z) / sum(w z), w = 1 / inclusion
probability (`monitoring.review.sample`), adjusted per stratum for sampled items nobody reviewed
(treated as missing at random inside their stratum). Its variance is the stratified
without-replacement variance of the linearised values u = z (y - R) / sum(w z):
V = sum_h N_h^2 (1 - n_h/N_h) s_h^2(u) / n_h. The interval is Wilson's score interval on the
effective sample size min(R(1-R)/V, n) (design effect floored at 1, as NCHS does for survey
proportions) with a Student-t quantile on n - H degrees of freedom (Kish; Korn & Graubard 1998):
it stays inside [0, 1] and keeps its coverage where a rare error sits in a few strata.

`label_free_calibration` compares the label-free average-confidence estimates the monitor logs
(`monitoring.online.estimated_accuracy`) with the reviewed ones and corrects them by the mean
offset seen on earlier days.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

ACCEPTABLE = ("correct", "usable")  # a suggestion counts as correct if sendable as is or edited
RATINGS = ("correct", "usable", "wrong", "unsafe")
ROLES = {
    "champion": ("champion_text", "champion_topic", "champion_stopped_at", "champion_rating"),
    "challenger": ("shadow_text", "shadow_topic", "shadow_stopped_at", "shadow_rating"),
}
METRICS = (
    "trigger_accuracy",
    "trigger_precision",
    "trigger_recall",
    "topic_accuracy",
    "suggestion_correct",
)


@dataclass(frozen=True)
class Estimate:
    """A design-based estimate with its 95% interval; NaN value where the domain is empty."""

    value: float
    low: float
    high: float
    se: float
    cases: int  # reviewed items in the domain

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


EMPTY = Estimate(math.nan, math.nan, math.nan, math.nan, 0)


def _t_quantile(df: int, alpha: float = 0.05) -> float:
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, max(df, 1)))


def _weights(frame: pd.DataFrame) -> np.ndarray:
    """1 / inclusion probability, scaled up where some of a stratum's sample went unreviewed."""
    reviewed = frame.groupby("stratum")["stratum"].transform("size").to_numpy(float)
    sampled = frame["stratum_sample"].to_numpy(float)
    return sampled / reviewed / frame["inclusion_prob"].to_numpy(float)


def _stratified_variance(frame: pd.DataFrame, u: np.ndarray) -> float:
    """Variance of the estimated total of u under stratified without-replacement sampling."""
    total = 0.0
    strata = frame["stratum"].to_numpy()
    sizes = frame["stratum_size"].to_numpy(float)
    for stratum in np.unique(strata):
        mask = strata == stratum
        n_h, big_n = int(mask.sum()), float(sizes[mask][0])
        if n_h < 2:
            continue  # a single reviewed item gives no variance; allocation avoids this
        total += big_n**2 * (1 - n_h / big_n) * float(np.var(u[mask], ddof=1)) / n_h
    return total


def ratio_estimate(
    frame: pd.DataFrame, y: np.ndarray, z: np.ndarray, alpha: float = 0.05
) -> Estimate:
    """Hájek estimate of mean(y) over the domain z, with a Wilson/effective-n interval."""
    z = np.asarray(z, dtype=float)
    y = np.nan_to_num(np.asarray(y, dtype=float)) * z
    w = _weights(frame)
    domain_total = float((w * z).sum())
    cases = int(z.sum())
    if cases == 0 or domain_total <= 0:
        return EMPTY
    value = float((w * y).sum() / domain_total)
    u = z * (y - value) / domain_total
    variance = _stratified_variance(frame, u)
    df = len(frame) - frame["stratum"].nunique()
    q = _t_quantile(df, alpha)
    # design effect floored at 1 (NCHS practice, Parker et al. 2017): a stratum whose few
    # sampled items happen to agree shows no variance, which must not narrow the interval
    n_eff = min(value * (1 - value) / variance, cases) if variance > 0 else float(cases)
    n_eff = max(n_eff, 1e-9)
    centre = (value + q**2 / (2 * n_eff)) / (1 + q**2 / n_eff)
    half = q / (1 + q**2 / n_eff) * math.sqrt(value * (1 - value) / n_eff + q**2 / (4 * n_eff**2))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Estimate(value, min(low, value), max(high, value), math.sqrt(variance), cases)


def difference_estimate(
    frame: pd.DataFrame, y_a: np.ndarray, y_b: np.ndarray, z: np.ndarray, alpha: float = 0.05
) -> Estimate:
    """Hájek estimate of mean(y_b - y_a) over z (paired: the same reviewed items), normal CI."""
    z = np.asarray(z, dtype=float)
    d = (np.nan_to_num(np.asarray(y_b, float)) - np.nan_to_num(np.asarray(y_a, float))) * z
    w = _weights(frame)
    domain_total = float((w * z).sum())
    if z.sum() == 0 or domain_total <= 0:
        return EMPTY
    value = float((w * d).sum() / domain_total)
    se = math.sqrt(_stratified_variance(frame, z * (d - value) / domain_total))
    q = _t_quantile(len(frame) - frame["stratum"].nunique(), alpha)
    return Estimate(value, value - q * se, value + q * se, se, int(z.sum()))


def indicators(frame: pd.DataFrame, role: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(y, z) per metric for the champion or the challenger, from reviewed labels.

    Needs the sample columns plus `answerable` (bool), `true_topic` and `<role>_rating`.
    """
    text, topic, stopped, rating = ROLES[role]
    base = frame["has_shadow"].to_numpy(bool) if role == "challenger" else np.ones(len(frame), bool)
    answerable = frame["answerable"].to_numpy(bool)
    passed = (frame[stopped].fillna("") != "trigger").to_numpy(bool)
    has_topic = frame[topic].notna().to_numpy(bool)
    topic_right = (
        answerable & (frame[topic].fillna("") == frame["true_topic"].fillna("-")).to_numpy()
    )
    has_text = frame[text].notna().to_numpy(bool)
    ratings = frame[rating] if rating in frame else frame[text].map(lambda _: None)
    good = ratings.isin(ACCEPTABLE).to_numpy(bool)
    return {
        "trigger_accuracy": (passed == answerable, base),
        "trigger_precision": (answerable, base & passed),
        "trigger_recall": (passed, base & answerable),
        "topic_accuracy": (topic_right, base & has_topic),
        "suggestion_correct": (good, base & has_text & ratings.notna().to_numpy(bool)),
    }


def reviewed_accuracy(frame: pd.DataFrame) -> dict[str, dict[str, Estimate]]:
    """Every metric for champion and challenger: {role: {metric: Estimate}}."""
    out: dict[str, dict[str, Estimate]] = {}
    for role in ROLES:
        if role == "challenger" and not frame["has_shadow"].any():
            continue
        out[role] = {
            name: ratio_estimate(frame, y, z) for name, (y, z) in indicators(frame, role).items()
        }
    return out


def per_topic_accuracy(
    frame: pd.DataFrame, role: str = "champion"
) -> dict[str, dict[str, Estimate]]:
    """Topic accuracy and suggestion correctness within each reviewed (true) topic."""
    ind = indicators(frame, role)
    out = {}
    for topic in sorted(frame["true_topic"].dropna().unique()):
        in_topic = (frame["true_topic"] == topic).to_numpy(bool)
        out[str(topic)] = {
            name: ratio_estimate(frame, ind[name][0], ind[name][1] & in_topic)
            for name in ("topic_accuracy", "suggestion_correct")
        }
    return out


@dataclass(frozen=True)
class Calibration:
    """One label-free estimate against the reviewed one (and corrected by earlier days)."""

    label_free: float
    reviewed: float
    raw_error: float  # label_free - reviewed
    within_interval: bool
    calibrated: float  # label_free + mean(reviewed - label_free) of earlier days
    calibrated_error: float  # NaN without earlier days


def label_free_calibration(
    label_free: Mapping[str, float],
    reviewed: Mapping[str, Estimate],
    history: Sequence[Mapping[str, Mapping[str, float]]] = (),
) -> dict[str, Calibration]:
    """Calibrate `est_acc_<stage>` (trigger, topic) against reviewed trigger/topic accuracy.

    `history`: earlier days' `{"label_free": {...}, "reviewed": {...}}` point values.
    """
    pairs = {"trigger": "trigger_accuracy", "topic": "topic_accuracy"}
    out = {}
    for stage, metric in pairs.items():
        est, rev = label_free.get(stage, math.nan), reviewed.get(metric, EMPTY)
        if math.isnan(est) or math.isnan(rev.value):
            continue
        offsets = [
            day["reviewed"][metric] - day["label_free"][stage]
            for day in history
            if not math.isnan(day.get("reviewed", {}).get(metric, math.nan))
            and not math.isnan(day.get("label_free", {}).get(stage, math.nan))
        ]
        calibrated = est + (sum(offsets) / len(offsets) if offsets else 0.0)
        out[stage] = Calibration(
            label_free=est,
            reviewed=rev.value,
            raw_error=est - rev.value,
            within_interval=rev.covers(est),
            calibrated=calibrated,
            calibrated_error=calibrated - rev.value if offsets else math.nan,
        )
    return out
