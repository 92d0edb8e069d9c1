"""What the answer stage reads and returns, its prompt, and the context training builds for it.

At serving time the context is the retrieve stage's hits (`AnswerInput.from_hits`). For training
and evaluation `training_inputs` stands in for retrieval: the replies of the most similar other
resolved cases of the same topic plus the topic's doc, never the case's own reply.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipelines.data.contract import KnowledgeDoc, LabeledCase


class RetrievedReply(BaseModel):
    """A resolved conversation from retrieval: its reply, and its message or similarity."""

    model_config = ConfigDict(frozen=True)
    reply: str
    message: str | None = None
    similarity: float | None = None  # in [0, 1]; used when `message` is absent


class AnswerInput(BaseModel):
    """What the answer stage reads: the message, its topic and the retrieved context."""

    model_config = ConfigDict(frozen=True)
    message: str
    topic: str
    passages: tuple[str, ...] = ()  # retrieved replies and doc passages, best first
    matches: tuple[RetrievedReply, ...] = ()  # retrieved conversations, for the as-is path

    @classmethod
    def from_hits(cls, message: str, topic: str, hits: Sequence[Any]) -> AnswerInput:
        """Build the input from retrieve-stage hits (`.source`, `.text`, `.message`, `.score`)."""
        matches = tuple(
            RetrievedReply(reply=h.text, message=h.message, similarity=h.score)
            for h in hits
            if h.source == "conversation"
        )
        return cls(
            message=message, topic=topic, passages=tuple(h.text for h in hits), matches=matches
        )


class AnswerPrediction(BaseModel):
    """The stage's decision for one input: a reply, or an abstention with its reason."""

    model_config = ConfigDict(frozen=True)
    text: str | None
    confidence: float
    groundedness: float
    score: float
    source: Literal["generated", "retrieved"] | None
    abstained: bool
    reason: str | None = None


def prompt(inp: AnswerInput, max_passages: int) -> str:
    """The model's prompt: context (best passage last), topic, message, then the reply marker."""
    context = "\n".join(reversed(inp.passages[:max_passages]))
    return f"<|context|>{context}\n<|topic|>{inp.topic}\n<|message|>{inp.message}\n<|reply|>"


def training_inputs(
    cases: Sequence[LabeledCase],
    docs: Sequence[KnowledgeDoc],
    *,
    pool: Sequence[LabeledCase] | None = None,
    max_passages: int = 4,
    passage_chars: int = 400,
) -> list[tuple[AnswerInput, str]]:
    """(input, reference reply) for each resolved case, with context drawn from `pool`.

    The context stands in for retrieval: the replies of the most similar other cases of the
    same topic in `pool` (default: `cases`), then the topic's doc passage. A case never sees
    its own reply.
    """
    from rapidfuzz import fuzz, process, utils

    resolved = [c for c in cases if c.answerable and c.topic and c.agent_reply]
    by_topic: dict[str, list[LabeledCase]] = defaultdict(list)
    for c in pool if pool is not None else resolved:
        if c.answerable and c.topic and c.agent_reply:
            by_topic[c.topic].append(c)
    doc_text = {d.topic: f"{d.title}. {d.body}"[:passage_chars] for d in docs}
    out = []
    for case in resolved:
        others = [c for c in by_topic.get(case.topic, []) if c.case_id != case.case_id]
        best = process.extract(
            case.message,
            [c.message for c in others],
            scorer=fuzz.token_set_ratio,
            processor=utils.default_process,
            limit=max(max_passages - 1, 1),
        )
        near = [others[index] for _, _, index in best]
        passages = [c.agent_reply for c in near]
        if case.topic in doc_text:
            passages.append(doc_text[case.topic])
        matches = tuple(RetrievedReply(reply=c.agent_reply, message=c.message) for c in near)
        inp = AnswerInput(
            message=case.message, topic=case.topic, passages=tuple(passages), matches=matches
        )
        out.append((inp, case.agent_reply))
    return out
