"""Inputs of weak supervision: unlabeled messages, the label space, the taxonomy's macros."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError

from pipelines.data.contract import ContractError, LabeledCase, Record, Turn, UtcDatetime

ABSTAIN = -1
NOT_ANSWERABLE = "NOT_ANSWERABLE"


class UnlabeledMessage(Record):
    """A customer message (with its conversation and the agent's reply) that has no label yet."""

    case_id: str = Field(min_length=1)
    created_at: UtcDatetime
    message: str = Field(min_length=1)
    context: tuple[Turn, ...] = ()
    agent_reply: str | None = None


@dataclass(frozen=True)
class LabelSpace:
    """Integer classes for Snorkel: one per topic, then NOT_ANSWERABLE; ABSTAIN is -1."""

    topics: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.topics, NOT_ANSWERABLE)

    @property
    def cardinality(self) -> int:
        return len(self.topics) + 1

    @property
    def not_answerable(self) -> int:
        return len(self.topics)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def of_case(self, case: LabeledCase) -> int:
        """The class of a gold case; a topic outside the space raises with the fix."""
        if not case.answerable:
            return self.not_answerable
        if case.topic not in self.topics:
            raise ValueError(
                f"gold case {case.case_id}: topic {case.topic!r} is not in the taxonomy; "
                "add it to taxonomy.json or drop the case"
            )
        return self.topics.index(case.topic)


@dataclass(frozen=True)
class Taxonomy:
    """Topic names and, per topic, the canonical replies (macros) agents send."""

    topics: tuple[str, ...]
    macros: dict[str, tuple[str, ...]]


def load_taxonomy(path: Path) -> Taxonomy:
    """Read taxonomy.json ({"topics": [{"name", "macros", ...}]}) as written by the synth world."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        topics = raw["topics"]
        names = tuple(topic["name"] for topic in topics)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ContractError(
            f"{path}: not a taxonomy ({err}); "
            "expected {'topics': [{'name': ..., 'macros': [...]}]}"
        ) from err
    macros = {topic["name"]: tuple(topic.get("macros") or ()) for topic in topics}
    return Taxonomy(names, macros)


def taxonomy_from_gold(gold: Sequence[LabeledCase]) -> Taxonomy:
    """A taxonomy when no taxonomy.json is given: the gold topics, no macros."""
    topics = tuple(sorted({case.topic for case in gold if case.topic is not None}))
    return Taxonomy(topics, {})


def read_unlabeled(path: Path) -> list[UnlabeledMessage]:
    """Read unlabeled messages from JSONL; label fields of LabeledCase lines are ignored."""
    keep = set(UnlabeledMessage.model_fields)
    records = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                records.append(
                    UnlabeledMessage.model_validate({k: row[k] for k in keep & set(row)})
                )
            except (ValueError, ValidationError, TypeError) as err:
                raise ContractError(
                    f"{path}:{number}: not an unlabeled message ({err}); each line needs "
                    "case_id, created_at, message (context and agent_reply optional)"
                ) from err
    return records


def unlabeled_from_case(case: LabeledCase) -> UnlabeledMessage:
    """Strip a labeled case down to what an unlabeled message carries."""
    return UnlabeledMessage(
        case_id=case.case_id,
        created_at=case.created_at,
        message=case.message,
        context=case.context,
        agent_reply=case.agent_reply,
    )
