"""The data contract (DESIGN §2): typed records and their JSONL / Parquet storage.

Every record is a frozen pydantic model. JSONL is the interchange format (batches, exports);
Parquet is the columnar format for accepted datasets and analytics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

LabelSource = Literal["human", "review", "weak", "synthetic"]
Stage = Literal["trigger", "topic", "retrieve", "answer", "tone"]
STAGES: tuple[Stage, ...] = ("trigger", "topic", "retrieve", "answer", "tone")
# Why a message is not answerable; the synthetic world and the importers label these kinds.
UnanswerableKind = Literal["chit_chat", "thanks", "missing_context", "out_of_scope"]


class Record(BaseModel):
    """Base of every contract record: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Timestamps are stored in UTC; a naive timestamp is taken to be UTC already.
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Turn(Record):
    """One earlier turn of the conversation."""

    role: Literal["customer", "agent"]
    text: str


class LabeledCase(Record):
    """A customer message with its labels: the unit every stage trains on."""

    case_id: str = Field(min_length=1)
    created_at: UtcDatetime
    message: str = Field(min_length=1)
    context: tuple[Turn, ...] = ()
    answerable: bool
    topic: str | None = None
    agent_reply: str | None = None
    label_source: LabelSource
    labeler: str | None = None
    # Beyond DESIGN §2, all optional: the stiff draft of `agent_reply` (tone training), why a
    # message is not answerable (abstain-reason evaluation), and a weak label's confidence.
    reply_draft: str | None = None
    unanswerable_kind: UnanswerableKind | None = None
    label_confidence: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _topic_matches_answerable(self) -> LabeledCase:
        if not self.answerable and self.topic is not None:
            raise ValueError(
                f"case {self.case_id}: topic must be null when answerable is false "
                f"(got topic={self.topic!r}); set topic to null or answerable to true"
            )
        if self.answerable and self.unanswerable_kind is not None:
            raise ValueError(
                f"case {self.case_id}: unanswerable_kind is only for answerable=false cases"
            )
        return self


class KnowledgeDoc(Record):
    """A help-centre article: grounding for retrieval and answers."""

    doc_id: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    title: str
    body: str = Field(min_length=1)
    updated_at: UtcDatetime


class Suggestion(Record):
    """What the cascade returns for one message: a reply, or an abstention with its reason."""

    text: str | None
    stopped_at: Stage | None = None
    abstain_reason: str | None = None
    topic: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    latency_ms: float = Field(ge=0.0)
    # "generated" by the answer model, or a "retrieved" near-exact reply returned as is.
    source: Literal["generated", "retrieved"] | None = None

    @model_validator(mode="after")
    def _abstention_has_reason(self) -> Suggestion:
        if self.text is None and not self.abstain_reason:
            raise ValueError("an abstention (text=None) needs an abstain_reason")
        return self


class PredictionRecord(Record):
    """One served request: the champion's answer, the shadow's, and how long each took."""

    request_id: str = Field(min_length=1)
    case_id: str = Field(min_length=1)
    created_at: UtcDatetime
    message: str  # redacted before it is logged
    champion: Suggestion
    shadow: Suggestion | None = None
    shadow_error: str | None = None
    latency_ms: float = Field(ge=0.0)


class Feedback(Record):
    """What the agent actually did with a suggestion."""

    case_id: str = Field(min_length=1)
    sent_reply: str
    used_suggestion: bool
    created_at: UtcDatetime | None = None


R = TypeVar("R", bound=Record)


class ContractError(ValueError):
    """A stored record does not match the contract; names the file and line."""


def write_jsonl(records: Iterable[Record], path: Path) -> int:
    """Write records as one JSON object per line; returns the count written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(record.model_dump_json(exclude_none=False))
            out.write("\n")
            count += 1
    return count


def iter_jsonl(path: Path, model: type[R]) -> Iterator[R]:
    """Yield validated records from a JSONL file; a bad line raises with file and line number."""
    path = Path(path)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield model.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError) as err:
                raise ContractError(
                    f"{path}:{number}: not a valid {model.__name__}: {err}. "
                    f"Fix or remove that line (see DESIGN §2 for the fields)."
                ) from err


def read_jsonl(path: Path, model: type[R]) -> list[R]:
    """Read a whole JSONL file into validated records."""
    return list(iter_jsonl(path, model))


def write_parquet(records: Iterable[Record], path: Path) -> int:
    """Write records to one Parquet file (nested fields become Arrow structs and lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [record.model_dump(mode="python") for record in records]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return len(rows)


def read_parquet(path: Path, model: type[R]) -> list[R]:
    """Read a Parquet file written by `write_parquet` back into validated records."""
    import pyarrow.parquet as pq

    rows = pq.read_table(Path(path)).to_pylist()
    records = []
    for number, row in enumerate(rows):
        try:
            records.append(model.model_validate(row))
        except ValidationError as err:
            raise ContractError(
                f"{path} row {number}: not a valid {model.__name__}: {err}"
            ) from err
    return records
