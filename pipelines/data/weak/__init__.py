"""Weak supervision (issue 3.5): labeling functions + a MiniLM kNN labeler, combined by Snorkel.

`weak_label(gold, unlabeled, taxonomy, cfg)` returns `LabeledCase`s with `label_source="weak"`
and a `WeakLabelReport` (per-LF coverage, overlaps, conflicts, held-out accuracy).
"""

from pipelines.data.weak.label import LABELER, WeakLabelResult, weak_label
from pipelines.data.weak.records import (
    NOT_ANSWERABLE,
    LabelSpace,
    Taxonomy,
    UnlabeledMessage,
    load_taxonomy,
    read_unlabeled,
    taxonomy_from_gold,
    unlabeled_from_case,
)
from pipelines.data.weak.report import LfStats, WeakLabelReport

__all__ = [
    "LABELER",
    "NOT_ANSWERABLE",
    "LabelSpace",
    "LfStats",
    "Taxonomy",
    "UnlabeledMessage",
    "WeakLabelReport",
    "WeakLabelResult",
    "load_taxonomy",
    "read_unlabeled",
    "taxonomy_from_gold",
    "unlabeled_from_case",
    "weak_label",
]
