"""Computed checks: per-row columns and suite parameters that the GE suite then judges.

Checks GE has no built-in for (contract validity, label conflicts, PII, label mix, label
agreement) become columns of the validated frame, so every failure still names a GE
expectation, e.g. `expect_column_mean_to_be_between(label_disputed)`. A check that cannot run
(no reference yet, batch too small) gets a neutral column and a reason in `skipped`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
from pydantic import ValidationError

from pipelines.config import PiiConfig, ValidationConfig
from pipelines.data.contract import LabeledCase, LabelSource

NOT_ANSWERABLE = "<not answerable>"
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass
class Checks:
    """The computed columns, the suite parameters, and the checks that were skipped (and why)."""

    columns: dict[str, list[Any]]
    parameters: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)


def message_key(text: Any, context: Any = ()) -> str | None:
    """A message with its prior turns, normalised for "same message" comparisons (words only).

    The context is part of it: a follow-up such as "what if that doesn't work?" takes its topic
    from the turns before it, so the same words may rightly carry different labels.
    """
    if not isinstance(text, str):
        return None
    turns = [t.get("text") if isinstance(t, dict) else getattr(t, "text", t) for t in context or ()]
    joined = " | ".join([*(t for t in turns if isinstance(t, str)), text])
    return " ".join(re.findall(r"\w+|\|", joined.casefold()))


def label_of(row: dict[str, Any]) -> str | None:
    """The label a row carries: its topic, or `NOT_ANSWERABLE`; None when unlabeled."""
    if row.get("answerable") is False:
        return NOT_ANSWERABLE
    topic = row.get("topic")
    return topic if row.get("answerable") is True and isinstance(topic, str) else None


def load_taxonomy(path: Path) -> list[str] | None:
    """Topic names from a taxonomy JSON file, or None when the file does not exist."""
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    items = raw.get("topics", []) if isinstance(raw, dict) else raw
    names = [item["name"] if isinstance(item, dict) else item for item in items]
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"{path}: expected a list of topic names (or of objects with 'name'), or "
            "{'topics': [...]}; fix the file or point data.validation.taxonomy elsewhere"
        )
    return sorted(names)


def compute_checks(
    rows: list[dict[str, Any]],
    cfg: ValidationConfig,
    *,
    reference: Sequence[LabeledCase],
    known_case_ids: set[str],
    taxonomy: list[str] | None,
    pii: PiiConfig,
    embed: Callable[[], Embed],
) -> Checks:
    """Compute every check column for `rows` against the reference; `embed()` gives an encoder."""
    labels = [label_of(row) for row in rows]
    checks = Checks(
        columns={
            "contract_valid": [_contract_valid(row) for row in rows],
            "topic_consistent": [_topic_consistent(row) for row in rows],
            "case_id_seen_before": [row.get("case_id") in known_case_ids for row in rows],
            "label_conflict": _label_conflicts(rows, labels, reference),
            "has_pii": _pii_flags(rows, pii),
        },
        parameters={
            "min_message_chars": cfg.min_message_chars,
            "max_message_chars": cfg.max_message_chars,
            "label_sources": list(get_args(LabelSource)),
            "max_pii_rate": cfg.max_pii_rate,
            "max_label_shift": cfg.max_label_shift,
            "max_label_conflict_share": cfg.max_label_conflict_share,
            "max_label_disagreement": cfg.max_label_disagreement,
        },
    )
    if taxonomy is None:
        taxonomy = sorted({case.topic for case in reference if case.topic})
    if taxonomy:
        checks.parameters["taxonomy"] = taxonomy
    else:
        checks.parameters["taxonomy"] = sorted(
            {row["topic"] for row in rows if isinstance(row.get("topic"), str)}
        )
        checks.skipped["topic in taxonomy"] = "no taxonomy file and no reference topics"
    _mix_checks(checks, labels, reference, cfg)
    checks.columns["label_disputed"] = _label_agreement(checks, rows, labels, reference, cfg, embed)
    return checks


def _contract_valid(row: dict[str, Any]) -> bool:
    try:
        LabeledCase.model_validate(row)
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def _topic_consistent(row: dict[str, Any]) -> bool:
    answerable, topic = row.get("answerable"), row.get("topic")
    return (answerable is True and isinstance(topic, str)) or (
        answerable is False and topic is None
    )


def _label_conflicts(
    rows: list[dict[str, Any]], labels: list[str | None], reference: Sequence[LabeledCase]
) -> list[float]:
    """1.0 where the same normalised message carries another label in the batch or reference."""
    seen: dict[str, set[str]] = {}
    keys = [message_key(row.get("message"), row.get("context")) for row in rows]
    pairs = [(message_key(c.message, c.context), c.topic or NOT_ANSWERABLE) for c in reference]
    for key, label in [*pairs, *zip(keys, labels, strict=True)]:
        if key and label:
            seen.setdefault(key, set()).add(label)
    return [float(bool(key) and len(seen.get(key, ())) > 1) for key in keys]


def _pii_flags(rows: list[dict[str, Any]], pii: PiiConfig) -> list[float]:
    from pipelines.data.redact import redact_texts

    messages = [row.get("message") for row in rows]
    texts = [m for m in messages if isinstance(m, str)]
    flags = iter(result.redacted for result in redact_texts(texts, pii))
    return [float(next(flags)) if isinstance(m, str) else math.nan for m in messages]


def _mix_checks(
    checks: Checks,
    labels: list[str | None],
    reference: Sequence[LabeledCase],
    cfg: ValidationConfig,
) -> None:
    """Label-mix distance and not-answerable share bounds, against the reference when it counts."""
    low, high = cfg.not_answerable_share
    shift = 0.0
    why_not = _mix_skip_reason(len(labels), len(reference), cfg)
    if why_not:
        checks.skipped["label mix vs reference"] = why_not
    else:
        ref_labels = [case.topic or NOT_ANSWERABLE for case in reference]
        shift = _total_variation([label for label in labels if label], ref_labels)
        ref_share = ref_labels.count(NOT_ANSWERABLE) / len(ref_labels)
        low = max(low, ref_share - cfg.max_not_answerable_shift)
        high = min(high, ref_share + cfg.max_not_answerable_shift)
    checks.columns["label_shift"] = [shift] * len(labels)
    # The suite checks the mean of `answerable`, i.e. 1 - the not-answerable share.
    checks.parameters["min_answerable_share"] = round(1.0 - high, 6)
    checks.parameters["max_answerable_share"] = round(1.0 - low, 6)


def _mix_skip_reason(batch_rows: int, reference_rows: int, cfg: ValidationConfig) -> str | None:
    if reference_rows < cfg.min_reference_cases:
        minimum = cfg.min_reference_cases
        return f"reference has {reference_rows} cases (< min_reference_cases {minimum})"
    if batch_rows < cfg.min_rows_for_mix:
        return f"batch has {batch_rows} rows (< min_rows_for_mix {cfg.min_rows_for_mix})"
    return None


def _total_variation(labels: Sequence[str], ref_labels: Sequence[str]) -> float:
    if not labels:
        return 1.0
    ours, theirs = Counter(labels), Counter(ref_labels)
    return 0.5 * sum(
        abs(ours[k] / len(labels) - theirs[k] / len(ref_labels)) for k in set(ours) | set(theirs)
    )


def _label_agreement(
    checks: Checks,
    rows: list[dict[str, Any]],
    labels: list[str | None],
    reference: Sequence[LabeledCase],
    cfg: ValidationConfig,
    embed: Callable[[], Embed],
) -> list[float]:
    """1.0 where the kNN labeler confidently predicts another topic, else 0.0.

    The labeler is a majority vote of the k nearest reference cases (MiniLM cosine); it
    predicts only when more than k/2 neighbours share a topic, so a message between two similar
    topics is not disputed, while a flipped label (its neighbours agree on the true topic) is.
    Only answerable rows with a topic are judged (NaN elsewhere; GE's mean skips nulls).
    """
    ref = _reference_sample([c for c in reference if c.topic], cfg.max_reference_cases)
    judged = [i for i, label in enumerate(labels) if label and label != NOT_ANSWERABLE]
    judged = [i for i in judged if isinstance(rows[i].get("message"), str)]
    if len(ref) < cfg.min_reference_cases or not judged:
        checks.skipped["label agreement"] = (
            f"reference has {len(ref)} topic-labeled cases (< min_reference_cases "
            f"{cfg.min_reference_cases})"
            if judged
            else "no topic-labeled rows to judge"
        )
        return [0.0] * len(rows)
    encode = embed()
    ref_vectors = encode([case.message for case in ref])
    ref_topics = np.array([case.topic for case in ref])
    vectors = encode([rows[i]["message"] for i in judged])
    k = min(cfg.agreement_k, len(ref))
    disputed = [math.nan] * len(rows)
    for start in range(0, len(judged), 2048):
        sims = vectors[start : start + 2048] @ ref_vectors.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for offset, neighbours in enumerate(nearest):
            row_index = judged[start + offset]
            predicted, votes = Counter(ref_topics[neighbours].tolist()).most_common(1)[0]
            disputed[row_index] = float(votes > k / 2 and predicted != labels[row_index])
    return disputed


def _reference_sample(cases: list[LabeledCase], limit: int) -> list[LabeledCase]:
    """At most `limit` cases, chosen by the hash of their id (stable as the reference grows)."""
    if len(cases) <= limit:
        return cases
    return sorted(cases, key=lambda c: hashlib.sha256(c.case_id.encode()).digest())[:limit]
