"""What the retrieve index holds: resolved conversations and doc passages, with their payloads.

Customer messages of resolved cases are embedded with their agent reply as payload; knowledge
docs are split into passages embedded with their title. `data_version_of` hashes the payloads
when no DVC dataset version names what was indexed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pipelines.data.contract import KnowledgeDoc, LabeledCase


def split_passages(body: str, max_chars: int) -> list[str]:
    """Split a doc body into passages of at most ~max_chars, on paragraph then sentence ends."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", body.strip()):
        pieces.extend(s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if s)
    passages: list[str] = []
    for piece in pieces:
        if passages and len(passages[-1]) + 1 + len(piece) <= max_chars:
            passages[-1] = f"{passages[-1]} {piece}"
        else:
            passages.append(piece)
    return passages or [body.strip()]


def corpus_payloads(
    cases: Iterable[LabeledCase], docs: Iterable[KnowledgeDoc], passage_chars: int
) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts to embed and their payloads: resolved answerable cases, then doc passages."""
    texts: list[str] = []
    payloads: list[dict[str, Any]] = []
    for case in cases:
        if case.answerable and case.topic and case.agent_reply:
            texts.append(case.message)
            payloads.append(
                {
                    "source": "conversation",
                    "topic": case.topic,
                    "ref_id": case.case_id,
                    "message": case.message,
                    "text": case.agent_reply,
                }
            )
    for doc in docs:
        for number, passage in enumerate(split_passages(doc.body, passage_chars)):
            texts.append(f"{doc.title}. {passage}")
            payloads.append(
                {
                    "source": "doc",
                    "topic": doc.topic,
                    "ref_id": doc.doc_id,
                    "title": doc.title,
                    "text": passage,
                    "passage": number,
                }
            )
    return texts, payloads


def data_version_of(payloads: Sequence[dict[str, Any]]) -> str:
    """A content hash of what gets indexed, when no DVC dataset version is given."""
    digest = hashlib.sha256()
    for payload in payloads:
        digest.update(json.dumps(payload, sort_keys=True).encode())
    return digest.hexdigest()
