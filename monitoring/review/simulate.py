"""The demo's simulated reviewer: labels the day's sample from the synthetic world's truth.

For each sampled prediction it knows the case's true labels (`LabeledCase` of the synthetic
world): answerable, topic and the reply the agent really sent. A suggestion is rated `correct`
when it matches that reply (rapidfuzz token-set ratio >= the monitor's match threshold),
`usable` within 0.2 below it, else `wrong`. With probability `error_rate` per question the
reviewer errs (flips answerable, picks another topic, shifts a rating), like a tired human.
It submits through Label Studio's API with each reviewer's own token (`monitoring.review.studio`),
so the labels take exactly the path a person's would; double-labelled items go to two reviewers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitoring.review.labels import ReviewLabel
from monitoring.review.studio import submit, tasks

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

    from pipelines.data.contract import LabeledCase

USABLE_MARGIN = 0.2


def rate(suggestion: str | None, truth_reply: str | None, threshold: float) -> str | None:
    """correct / usable / wrong against the reply the agent really sent; None when no suggestion."""
    from rapidfuzz import fuzz, utils

    if not suggestion:
        return None
    if not truth_reply:
        return "wrong"
    score = fuzz.token_set_ratio(suggestion, truth_reply, processor=utils.default_process) / 100
    if score >= threshold:
        return "correct"
    return "usable" if score >= threshold - USABLE_MARGIN else "wrong"


def true_label(
    row: Mapping[str, Any], case: LabeledCase, reviewer: str, threshold: float
) -> ReviewLabel:
    """What an error-free reviewer says about one sampled prediction."""
    return ReviewLabel(
        request_id=str(row["request_id"]),
        case_id=str(row["case_id"]),
        reviewer=reviewer,
        reviewed_at=datetime.now(UTC),
        answerable=case.answerable,
        topic=case.topic if case.answerable else None,
        champion_rating=rate(row.get("champion_text"), case.agent_reply, threshold),
        shadow_rating=rate(row.get("shadow_text"), case.agent_reply, threshold),
    )


def with_errors(
    label: ReviewLabel, rng: random.Random, error_rate: float, topics: Sequence[str]
) -> ReviewLabel:
    """`label` with each question independently wrong with probability `error_rate`."""
    changes: dict[str, Any] = {}
    if rng.random() < error_rate:
        changes["answerable"] = not label.answerable
        changes["topic"] = rng.choice(list(topics)) if not label.answerable else None
    elif label.answerable and rng.random() < error_rate:
        changes["topic"] = rng.choice([t for t in topics if t != label.topic] or list(topics))
    for field in ("champion_rating", "shadow_rating"):
        value = getattr(label, field)
        if value is not None and rng.random() < error_rate:
            changes[field] = rng.choice([r for r in ("correct", "usable", "wrong") if r != value])
    return replace(label, **changes) if changes else label


def assignments(
    rows: Sequence[Mapping[str, Any]], reviewers: Sequence[str], rng: random.Random
) -> list[tuple[Mapping[str, Any], str]]:
    """(row, reviewer) pairs: round robin, a double-labelled row also to a second reviewer."""
    pairs = []
    for i, row in enumerate(rows):
        first = reviewers[i % len(reviewers)]
        pairs.append((row, first))
        others = [r for r in reviewers if r != first]
        if row.get("double_label") and others:
            pairs.append((row, rng.choice(others)))
    return pairs


def label_through_studio(
    clients: Mapping[str, LabelStudio],
    project_id: int,
    truth: Mapping[str, LabeledCase],
    *,
    topics: Sequence[str],
    error_rate: float,
    threshold: float,
    seed: int = 0,
) -> int:
    """Annotate every unannotated task of the project as the simulated reviewers; returns count.

    `clients`: reviewer id -> an SDK client signed in with that reviewer's token.
    """
    rng = random.Random(seed)
    any_client = next(iter(clients.values()))
    pending = [t for t in tasks(any_client, project_id) if not t.annotations]
    rows = [{**t.data, "_task_id": t.id} for t in pending]
    rows = [
        {**r, "champion_text": _text(r, "champion_text"), "shadow_text": _text(r, "shadow_text")}
        for r in rows
    ]
    submitted = 0
    for row, reviewer in assignments(rows, sorted(clients), rng):
        case = truth.get(str(row["case_id"]))
        if case is None:
            continue  # not from the synthetic world: a person has to review it
        label = with_errors(true_label(row, case, reviewer, threshold), rng, error_rate, topics)
        submit(clients[reviewer], int(row["_task_id"]), label)
        submitted += 1
    return submitted


def _text(row: Mapping[str, Any], key: str) -> str | None:
    """The task's suggestion, None where it shows a placeholder for no suggestion."""
    value = row.get(key)
    return None if not value or str(value).startswith("(no ") else str(value)
