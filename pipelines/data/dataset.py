"""Train/validation splits of labeled cases: deterministic, stratified, stable as data grows."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from pipelines.data.contract import LabeledCase


class Split(NamedTuple):
    train: list[LabeledCase]
    val: list[LabeledCase]


def stratum(case: LabeledCase) -> str:
    """The label a split is stratified by: the topic, or the not-answerable kind."""
    if case.answerable:
        return f"topic:{case.topic}"
    return f"none:{case.unanswerable_kind or 'unknown'}"


def _unit_interval(case_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_cases(cases: Sequence[LabeledCase], val_share: float, seed: int) -> Split:
    """Split cases into train and validation, stratified by `stratum`.

    A case goes to validation when the hash of its id (with the seed) falls below `val_share`,
    so its side depends only on its id: a case never moves between train and validation as new
    batches arrive. Hashes are uniform, so each stratum keeps about `val_share` in validation; a
    stratum of two or more cases that drew none gives its lowest-hash case to validation.
    """
    if not 0.0 < val_share < 1.0:
        raise ValueError(f"val_share must be in (0, 1), got {val_share}")
    by_stratum: dict[str, list[LabeledCase]] = {}
    for case in cases:
        by_stratum.setdefault(stratum(case), []).append(case)
    val_ids: set[str] = set()
    for members in by_stratum.values():
        drawn = {c.case_id for c in members if _unit_interval(c.case_id, seed) < val_share}
        if not drawn and len(members) >= 2:
            drawn = {min(members, key=lambda c: _unit_interval(c.case_id, seed)).case_id}
        val_ids |= drawn
    train = [c for c in cases if c.case_id not in val_ids]
    val = [c for c in cases if c.case_id in val_ids]
    return Split(train, val)
