"""Reviewers' labels: one record per (item, reviewer), agreement, and the LabeledCase batch.

A `ReviewLabel` is what one reviewer said about one sampled prediction (answerable, the correct
topic, a rating of each suggestion, an optional corrected reply). Items labelled twice give the
inter-reviewer agreement (share agreeing and Cohen's kappa per question). Items whose reviewers
disagree on answerable or topic are held back from training (they go to no batch) and counted;
for the accuracy estimates every item uses its first label.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.data.contract import LabeledCase

if TYPE_CHECKING:
    import pandas as pd

QUESTIONS = ("answerable", "topic", "champion_rating", "shadow_rating")


@dataclass(frozen=True)
class ReviewLabel:
    """One reviewer's judgement of one sampled prediction."""

    request_id: str
    case_id: str
    reviewer: str
    reviewed_at: datetime
    answerable: bool
    topic: str | None
    champion_rating: str | None
    shadow_rating: str | None
    corrected_reply: str | None = None


@dataclass(frozen=True)
class Agreement:
    """Agreement of two reviewers on the double-labelled items, per question."""

    items: int
    agreement_rate: dict[str, float]
    cohen_kappa: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "agreement_rate": self.agreement_rate,
            "cohen_kappa": self.cohen_kappa,
        }


def by_item(labels: Iterable[ReviewLabel]) -> dict[str, list[ReviewLabel]]:
    """Labels grouped by request id, earliest first (one per reviewer: the latest they gave)."""
    latest: dict[tuple[str, str], ReviewLabel] = {}
    for label in sorted(labels, key=lambda item: item.reviewed_at):
        latest[(label.request_id, label.reviewer)] = label
    grouped: dict[str, list[ReviewLabel]] = defaultdict(list)
    for label in sorted(latest.values(), key=lambda item: item.reviewed_at):
        grouped[label.request_id].append(label)
    return dict(grouped)


def agreement(labels: Iterable[ReviewLabel]) -> Agreement:
    """Agreement rate and Cohen's kappa between the first two reviewers of each double item."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [group[:2] for group in by_item(labels).values() if len(group) >= 2]
    rates, kappas = {}, {}
    for question in QUESTIONS:
        a = [str(getattr(p[0], question)) for p in pairs]
        b = [str(getattr(p[1], question)) for p in pairs]
        rates[question] = sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else math.nan
        if len(set(a) | set(b)) < 2:
            # one category only: kappa is undefined (sklearn returns NaN); agreement says it all
            kappas[question] = math.nan
        else:
            kappas[question] = float(cohen_kappa_score(a, b))
    return Agreement(items=len(pairs), agreement_rate=rates, cohen_kappa=kappas)


def reviewed_frame(sample: pd.DataFrame, labels: Iterable[ReviewLabel]) -> pd.DataFrame:
    """The sample's reviewed items with their first label (`answerable`, `true_topic`, ratings)."""
    first = {request_id: group[0] for request_id, group in by_item(labels).items()}
    frame = sample[sample["request_id"].isin(first)].copy()
    frame["answerable"] = [first[r].answerable for r in frame["request_id"]]
    frame["true_topic"] = [first[r].topic for r in frame["request_id"]]
    frame["champion_rating"] = [first[r].champion_rating for r in frame["request_id"]]
    frame["shadow_rating"] = [first[r].shadow_rating for r in frame["request_id"]]
    return frame.reset_index(drop=True)


def labeled_cases(
    sample: pd.DataFrame, labels: Iterable[ReviewLabel]
) -> tuple[list[LabeledCase], list[str]]:
    """LabeledCase rows (label_source=review) and the request ids held back for disagreement.

    The agent reply is the reviewer's corrected reply, else the reply the agent sent.
    """
    rows = {row["request_id"]: row for row in sample.to_dict("records")}
    cases, disputed = [], []
    for request_id, group in by_item(labels).items():
        row = rows.get(request_id)
        if row is None:
            continue
        if len({(g.answerable, g.topic) for g in group}) > 1:
            disputed.append(request_id)
            continue
        label = group[0]
        reply = label.corrected_reply or _text(row.get("sent_reply"))
        cases.append(
            LabeledCase(
                case_id=row["case_id"],
                created_at=row["created_at"],
                message=row["message"],
                answerable=label.answerable,
                topic=label.topic if label.answerable else None,
                agent_reply=reply,
                label_source="review",
                labeler=",".join(g.reviewer for g in group),
            )
        )
    return cases, disputed


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def latest_review_time(labels: Sequence[ReviewLabel]) -> datetime | None:
    return max((label.reviewed_at for label in labels), default=None)
