"""The retrieve stage's Qdrant store: clients, versioned collections and the searchable index.

A collection is named by the dataset version and the embedder version it was built from, so an
index is a versioned artifact. A location is a server URL, ':memory:' or an embedded folder; on
embedded Qdrant topic filters are applied here rather than point by point (see `search`).
"""

from __future__ import annotations

import atexit
import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.config import RetrieveConfig
from pipelines.stages.encoder.embedder import Embedder

_ID_NAMESPACE = uuid.UUID("6f1c1d1e-4a55-4c1b-9d1c-63617365706c")  # stable point ids
# Query texts per embedder forward, sorted by length: a service batch of 32 short messages
# padded to its longest costs as much per text as one at a time on a CPU; chunks of 8 of
# similar length cost ~0.6 of that (benchmarks/RESULTS.md, copilot service).
EMBED_ROWS = 8


@dataclass(frozen=True)
class Hit:
    """One retrieved item: a resolved conversation (its reply) or a doc passage."""

    score: float
    source: Literal["conversation", "doc"]
    topic: str
    ref_id: str  # case_id or doc_id
    text: str  # the agent reply, or the doc passage
    message: str | None = None  # the customer message of a conversation
    title: str | None = None  # the doc title


@dataclass(frozen=True)
class RetrievePrediction:
    """The top-k hits for one message, the best similarity and whether the stage passes on."""

    hits: tuple[Hit, ...]
    best_similarity: float
    emitted: bool
    reason: str | None = None


def collection_name(data_version: str, embedder_version: str) -> str:
    """`casepilot-retrieve-<data version[:12]>-<embedder version>`: the index's identity."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", data_version)[:12]
    return f"casepilot-retrieve-{safe}-{embedder_version}"


@functools.lru_cache(maxsize=8)
def _embedded_client(path: str):
    from qdrant_client import QdrantClient

    Path(path).mkdir(parents=True, exist_ok=True)
    client = QdrantClient(path=path)
    atexit.register(client.close)  # release the folder lock before interpreter teardown
    return client


def is_server(location: str) -> bool:
    """True when `location` is a Qdrant server URL (else ':memory:' or an embedded folder)."""
    return re.match(r"^https?://", location) is not None


def open_client(location: str):
    """A Qdrant client: a server for an http(s) URL, in-process for ':memory:', else a folder.

    Embedded folders are locked by one client at a time, so the client per folder is shared
    within the process; two processes cannot open the same folder (use a server for that).
    """
    from qdrant_client import QdrantClient

    if location == ":memory:":
        return QdrantClient(location=":memory:")
    if is_server(location):
        return QdrantClient(url=location)
    return _embedded_client(str(Path(location).expanduser().resolve()))


class RetrieveIndex:
    """A built collection plus the embedder it was built with; `predict` is batched."""

    def __init__(
        self, client, collection: str, embedder: Embedder, cfg: RetrieveConfig, info: dict[str, Any]
    ) -> None:
        self.client = client
        self.collection = collection
        self.embedder = embedder
        self.cfg = cfg
        self.info = info

    @property
    def version(self) -> str:
        return self.collection

    def search(
        self, messages: Sequence[str], topics: Sequence[str | None], k: int | None = None
    ) -> list[list[Hit]]:
        """Top-k hits per message, restricted to its topic when one is given."""
        if len(messages) != len(topics):
            raise ValueError(f"got {len(messages)} messages but {len(topics)} topics")
        k = k or self.cfg.top_k
        vectors = [v.tolist() for v in embed_by_length(self.embedder, messages)]
        if is_server(self.info["location"]):  # the server's payload index makes filters cheap
            return self._query(vectors, topics, k)
        # Embedded Qdrant checks a filter point by point in Python (~50 ms CPU per query at
        # 3k points), so search unfiltered for k×oversample and filter here. That is exact: a
        # topic point outside the unfiltered top scores below all of them. Only when fewer
        # than k of the topic made it does the filtered query run.
        wide = self._query(vectors, [None] * len(vectors), k * self.cfg.oversample)
        results: list[list[Hit] | None] = []
        for hits, topic in zip(wide, topics, strict=True):
            kept = [h for h in hits if topic is None or h.topic == topic][:k]
            exhausted = len(hits) < k * self.cfg.oversample
            results.append(kept if len(kept) == k or exhausted else None)
        redo = [i for i, hits in enumerate(results) if hits is None]
        for i, hits in zip(
            redo, self._query([vectors[i] for i in redo], [topics[i] for i in redo], k), strict=True
        ):
            results[i] = hits
        return [hits or [] for hits in results]

    def _query(
        self, vectors: Sequence[list[float]], topics: Sequence[str | None], limit: int
    ) -> list[list[Hit]]:
        from qdrant_client import models

        requests = [
            models.QueryRequest(
                query=vector,
                limit=limit,
                with_payload=True,
                filter=None
                if topic is None
                else models.Filter(
                    must=[models.FieldCondition(key="topic", match=models.MatchValue(value=topic))]
                ),
            )
            for vector, topic in zip(vectors, topics, strict=True)
        ]
        responses = []
        for start in range(0, len(requests), self.cfg.batch_size):
            chunk = requests[start : start + self.cfg.batch_size]
            responses.extend(self.client.query_batch_points(self.collection, requests=chunk))
        return [[_hit(point) for point in response.points] for response in responses]

    def predict(
        self, messages: Sequence[str], topics: Sequence[str | None]
    ) -> list[RetrievePrediction]:
        """Hits per message; abstains when the best similarity is below `cfg.min_similarity`."""
        predictions = []
        for topic, hits in zip(topics, self.search(messages, topics), strict=True):
            best = hits[0].score if hits else -1.0
            if not hits:
                reason = f"retrieve: nothing indexed for topic {topic!r}"
            elif best < self.cfg.min_similarity:
                reason = f"retrieve: best similarity={best:.3f} < {self.cfg.min_similarity:.3f}"
            else:
                reason = None
            predictions.append(RetrievePrediction(tuple(hits), best, reason is None, reason))
        return predictions


def embed_by_length(embedder: Any, texts: Sequence[str], rows: int = EMBED_ROWS) -> np.ndarray:
    """`embedder.embed(texts)`, run on length-sorted chunks of `rows` (little padding each)."""
    if len(texts) <= rows:
        return embedder.embed(list(texts))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = [
        embedder.embed([texts[i] for i in order[start : start + rows]])
        for start in range(0, len(order), rows)
    ]
    return np.concatenate(chunks)[np.argsort(order, kind="stable")]


def _hit(point) -> Hit:
    payload = point.payload or {}
    return Hit(
        score=float(point.score),
        source=payload["source"],
        topic=payload["topic"],
        ref_id=payload["ref_id"],
        text=payload["text"],
        message=payload.get("message"),
        title=payload.get("title"),
    )


def fill_collection(
    client,
    name: str,
    vectors: np.ndarray,
    payloads: Sequence[dict[str, Any]],
    batch_size: int,
    server: bool,
) -> None:
    """Create collection `name` and upload the vectors with their payloads (stable point ids)."""
    from qdrant_client import models

    client.create_collection(
        name,
        vectors_config=models.VectorParams(
            size=int(vectors.shape[1]), distance=models.Distance.COSINE
        ),
    )
    if server:  # embedded Qdrant scans every point anyway and warns about payload indexes
        client.create_payload_index(name, "topic", field_schema=models.PayloadSchemaType.KEYWORD)
    ids = [
        str(uuid.uuid5(_ID_NAMESPACE, f"{p['source']}:{p['ref_id']}:{p.get('passage', 0)}"))
        for p in payloads
    ]
    client.upload_collection(
        name,
        vectors=vectors,
        payload=list(payloads),
        ids=ids,
        batch_size=max(batch_size, 256),
        wait=True,
    )
