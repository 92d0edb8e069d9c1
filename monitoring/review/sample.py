"""The day's review sample: a stratified draw from the prediction log with inclusion probabilities.

Every logged request falls into one decision stratum (first match wins): `disagreement` (a
shadow ran and decided differently: another topic, or one answered where the other abstained),
`abstained` (the champion sent nothing), `low_confidence` (the champion's topic probability is
below `review.low_confidence`) or `answered`. The day's `review.daily_size` items are allocated
to strata in proportion to stratum size x `review.stratum_weights` (D'Hondt, at least two per
stratum where it has two, so every stratum's variance can be estimated) and drawn inside each
stratum by simple random sampling without replacement, so every item of stratum h has inclusion
probability exactly n_h / N_h, recorded with the item: the estimates in
`monitoring.review.estimate` stay unbiased although rare decisions are oversampled. Strata are
decision x topic: a (decision, topic) cell is its own stratum when it would get at least two
items of the day's sample, else it is pooled into (decision, "*") - on a day with thousands of
requests every busy topic is a stratum; on a small day the topics are domains of a decision
stratum (per-topic figures are domain estimates either way). Systematic sampling in topic order
was tried and dropped: its SRS variance formula under-covered (80 of 100 on the test world).

A share `review.double_label_share` of the sample is flagged for a second reviewer (inter-reviewer
agreement). Messages in the log are already PII-redacted by the service before they are logged.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.config import ReviewConfig

STRATA = ("disagreement", "abstained", "low_confidence", "answered")
MIN_PER_STRATUM = 2  # a stratum's variance needs two sampled items
SAMPLE_COLUMNS = (
    "request_id",
    "case_id",
    "created_at",
    "message",
    "champion_text",
    "shadow_text",
    "sent_reply",
    "champion_topic",
    "shadow_topic",
    "champion_stopped_at",
    "shadow_stopped_at",
    "abstain_reason",
    "topic_score",
    "trigger_score",
    "has_shadow",
    "decision",
    "stratum",
    "stratum_size",
    "stratum_sample",
    "inclusion_prob",
    "double_label",
)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def decision_of(row: Mapping[str, Any], low_confidence: float) -> str:
    """The decision stratum of one prediction-log row (see the module doc for the order)."""
    champion_sent = row.get("champion_text") is not None
    shadow = _mapping(row.get("shadow"))
    if shadow:
        shadow_sent = shadow.get("text") is not None
        if shadow_sent != champion_sent or shadow.get("topic") != row.get("topic"):
            return "disagreement"
    if not champion_sent:
        return "abstained"
    topic_p = _mapping(row.get("scores")).get("topic")
    if topic_p is not None and float(topic_p) < low_confidence:
        return "low_confidence"
    return "answered"


def allocate(sizes: Mapping[str, int], weights: Mapping[str, float], n: int) -> dict[str, int]:
    """Sample sizes per stratum: ~ size x weight (D'Hondt), >= 2 where possible, <= size."""
    n = min(n, sum(sizes.values()))
    alloc = {h: min(size, MIN_PER_STRATUM) for h, size in sizes.items()}
    while sum(alloc.values()) > n:  # more strata than the budget: drop from the smallest
        h = min((h for h in alloc if alloc[h] > 0), key=lambda k: (sizes[k] * weights[k], k))
        alloc[h] -= 1
    while sum(alloc.values()) < n:
        open_ = [h for h in sizes if alloc[h] < sizes[h]]
        h = max(open_, key=lambda k: (sizes[k] * weights[k] / (alloc[k] + 1), k))
        alloc[h] += 1
    return alloc


def strata_of(frame: pd.DataFrame, weights: Mapping[str, float], n: int) -> list[str]:
    """decision|topic where that cell would get >= 2 sampled items, else decision|* (pooled)."""
    topic = frame["champion_topic"].fillna("-")
    cell = frame["decision"] + "|" + topic
    sizes = cell.value_counts()
    weight = frame["decision"].map(lambda d: weights.get(d, 1.0))
    total = float(weight.sum())
    expected = (weight.groupby(cell).sum() / total * min(n, len(frame))).reindex(sizes.index)
    own = set(expected[(expected >= MIN_PER_STRATUM) & (sizes >= MIN_PER_STRATUM)].index)
    return [c if c in own else f"{d}|*" for c, d in zip(cell, frame["decision"], strict=True)]


def day_seed(seed: int, day: date | str) -> int:
    """A stable per-day seed (SHA-256 of seed and date, never Python's salted hash())."""
    digest = hashlib.sha256(f"{seed}:{day}".encode()).hexdigest()
    return int(digest[:12], 16)


def _flatten(window: pd.DataFrame, low_confidence: float) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for row in window.to_dict("records"):
        shadow = _mapping(row.get("shadow"))
        scores = _mapping(row.get("scores"))
        rows.append(
            {
                "request_id": row["request_id"],
                "case_id": row["case_id"],
                "created_at": row["created_at"],
                "message": row["message"],
                "champion_text": row.get("champion_text"),
                "shadow_text": shadow.get("text") if shadow else None,
                "sent_reply": _none_if_nan(row.get("sent_reply")),
                "champion_topic": row.get("topic"),
                "shadow_topic": shadow.get("topic") if shadow else None,
                "champion_stopped_at": row.get("stopped_at"),
                "shadow_stopped_at": shadow.get("stopped_at") if shadow else None,
                "abstain_reason": row.get("abstain_reason"),
                "topic_score": scores.get("topic"),
                "trigger_score": scores.get("trigger"),
                "has_shadow": bool(shadow),
                "decision": decision_of(row, low_confidence),
            }
        )
    return pd.DataFrame(rows)


def _none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def draw_review_sample(
    window: pd.DataFrame, cfg: ReviewConfig, *, day: date | str, size: int | None = None
) -> pd.DataFrame:
    """The day's review sample from a `PredictionLog.window()` frame (columns: SAMPLE_COLUMNS).

    Each case is reviewed once: a case served twice keeps its latest request. Deterministic for
    (cfg.seed, day). Raises ValueError when the window is empty (nothing to review).
    """
    import pandas as pd

    if window.empty:
        raise ValueError(
            "the prediction log has no requests in the review window; serve traffic first "
            "or widen review.lookback_hours"
        )
    latest = window.drop_duplicates("case_id", keep="last")
    frame = _flatten(latest, cfg.low_confidence)
    rng = random.Random(day_seed(cfg.seed, day))
    n = size or cfg.daily_size
    frame["stratum"] = strata_of(frame, cfg.stratum_weights, n)
    sizes = frame["stratum"].value_counts().to_dict()
    weights = {h: cfg.stratum_weights.get(h.split("|")[0], 1.0) for h in sizes}
    alloc = allocate(sizes, weights, n)
    picked = []
    for stratum in sorted(sizes):
        members = frame[frame["stratum"] == stratum].sort_values(["created_at", "request_id"])
        rows = sorted(rng.sample(range(len(members)), alloc[stratum]))
        chosen = members.iloc[rows].copy()
        chosen["stratum_size"] = len(members)
        chosen["stratum_sample"] = len(chosen)
        chosen["inclusion_prob"] = len(chosen) / len(members)
        picked.append(chosen)
    sample = pd.concat(picked, ignore_index=True)
    doubles = set(rng.sample(range(len(sample)), round(cfg.double_label_share * len(sample))))
    sample["double_label"] = [i in doubles for i in range(len(sample))]
    return sample.loc[:, list(SAMPLE_COLUMNS)]
