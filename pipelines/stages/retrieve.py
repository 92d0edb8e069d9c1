"""The retrieve stage: a topic-filtered top-k index of resolved conversations and help-centre docs.

Customer messages of resolved cases (payload: their agent reply) and passages of knowledge docs
are embedded with the shared embedder into a Qdrant collection. The collection name carries the
dataset version and the embedder version, so an index is a versioned artifact: `train` writes
its vectors and payloads beside a `stage.json` into `out_dir`, and `load` restores the
collection into any Qdrant location (embedded folder, server URL, or ':memory:') when missing.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.config import RetrieveConfig
from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.stages.encoder.embedder import Embedder, load_embedder

STAGE_FILE = "stage.json"
VECTORS_FILE = "vectors.safetensors"
PAYLOADS_FILE = "payloads.jsonl"
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


def _fill_collection(
    client,
    name: str,
    vectors: np.ndarray,
    payloads: Sequence[dict[str, Any]],
    batch_size: int,
    server: bool,
) -> None:
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


def build(
    cfg: RetrieveConfig,
    cases: Sequence[LabeledCase],
    docs: Sequence[KnowledgeDoc],
    *,
    location: str,
    data_version: str | None = None,
) -> tuple[RetrieveIndex, np.ndarray, list]:
    """Embed cases and docs into a new collection at `location`: (index, vectors, payloads)."""
    embedder = load_embedder(cfg.embedder, cfg.batch_size)
    texts, payloads = corpus_payloads(cases, docs, cfg.passage_chars)
    if not texts:
        raise ValueError("nothing to index: no answerable case with topic and agent_reply, no doc")
    name = collection_name(data_version or data_version_of(payloads), embedder.version)
    vectors = embedder.embed(texts)
    client = open_client(location)
    if client.collection_exists(name):
        client.delete_collection(name)
    _fill_collection(client, name, vectors, payloads, cfg.batch_size, is_server(location))
    info = {
        "stage": "retrieve",
        "collection": name,
        "location": location,
        "embedder": cfg.embedder,
        "embedder_version": embedder.version,
        "data_version": data_version or data_version_of(payloads),
        "points": len(payloads),
        "conversations": sum(p["source"] == "conversation" for p in payloads),
        "doc_passages": sum(p["source"] == "doc" for p in payloads),
        "config": cfg.model_dump(),
        "built_at": datetime.now(UTC).isoformat(),
    }
    return RetrieveIndex(client, name, embedder, cfg, info), vectors, payloads


def train(
    cfg: RetrieveConfig,
    train_cases: Sequence[LabeledCase],
    val_cases: Sequence[LabeledCase] | None,
    out_dir: Path,
    *,
    docs: Sequence[KnowledgeDoc],
    location: str,
    data_version: str | None = None,
) -> Path:
    """Build the index (from training cases only) and save it as an artifact in `out_dir`.

    `val_cases` are not indexed (they would leak their own replies); they are evaluated and
    the metrics stored in `stage.json` when given.
    """
    from safetensors.numpy import save_file

    index, vectors, payloads = build(
        cfg, train_cases, docs, location=location, data_version=data_version
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"vectors": vectors}, str(out_dir / VECTORS_FILE))
    with (out_dir / PAYLOADS_FILE).open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(p) + "\n" for p in payloads)
    if val_cases:
        index.info["val_metrics"] = evaluate(index, val_cases)
    (out_dir / STAGE_FILE).write_text(json.dumps(index.info, indent=2) + "\n", encoding="utf-8")
    return out_dir


def load(
    model_dir: Path, *, location: str | None = None, cfg: RetrieveConfig | None = None
) -> RetrieveIndex:
    """Open a saved index at `location` (default: where it was built), restoring it if missing."""
    from safetensors.numpy import load_file

    from pipelines.quantize.methods import load_stage_embedder

    model_dir = Path(model_dir)
    stage_file = model_dir / STAGE_FILE
    if not stage_file.exists():
        raise FileNotFoundError(
            f"{stage_file} not found: build the index with `casepilot train retrieve`"
        )
    info = json.loads(stage_file.read_text(encoding="utf-8"))
    cfg = cfg or RetrieveConfig.model_validate(info["config"])
    embedder = load_stage_embedder(  # the recorded precision (ONNX: the graph in model_dir)
        info["embedder"], cfg.batch_size, info, model_dir=model_dir
    )
    if embedder.version != info["embedder_version"]:
        raise ValueError(
            f"{model_dir}: built with embedder {info['embedder_version']}, but "
            f"{info['embedder']!r} is now {embedder.version}; rebuild the index"
        )
    location = location or info["location"]
    info["location"] = location
    client = open_client(location)
    if not client.collection_exists(info["collection"]):
        vectors = load_file(str(model_dir / VECTORS_FILE))["vectors"]
        lines = (model_dir / PAYLOADS_FILE).read_text(encoding="utf-8").splitlines()
        _fill_collection(
            client,
            info["collection"],
            vectors,
            [json.loads(x) for x in lines],
            cfg.batch_size,
            is_server(location),
        )
    return RetrieveIndex(client, info["collection"], embedder, cfg, info)


def evaluate(
    index: RetrieveIndex,
    val_cases: Sequence[LabeledCase],
    *,
    match_threshold: float | None = None,
    filter_by_topic: bool = True,
) -> dict[str, float]:
    """recall@k and MRR on resolved validation cases (searched within their labeled topic).

    A conversation hit is relevant when its reply matches the case's reference reply
    (ROUGE-L F1 ≥ match_threshold, default `cfg.relevance_match`: the same judgement as an
    emitted suggestion's correctness); `recall_at_k` and `mrr` count those only.
    `recall_at_k_any` / `mrr_any` also count a doc of the case's topic as relevant.
    """
    from pipelines.evaluate.text_metrics import rouge_l

    threshold = index.cfg.relevance_match if match_threshold is None else match_threshold
    cases = [c for c in val_cases if c.answerable and c.topic and c.agent_reply]
    if not cases:
        raise ValueError(
            "evaluate retrieve: no answerable validation case with topic and agent_reply"
        )
    started = datetime.now(UTC)
    predictions = index.predict(
        [c.message for c in cases], [c.topic if filter_by_topic else None for c in cases]
    )
    elapsed_ms = (datetime.now(UTC) - started).total_seconds() * 1000
    first, first_any = [], []
    for case, prediction in zip(cases, predictions, strict=True):
        ranks = [
            r
            for r, h in enumerate(prediction.hits, 1)
            if h.source == "conversation" and rouge_l(h.text, case.agent_reply or "") >= threshold
        ]
        docs = [
            r
            for r, h in enumerate(prediction.hits, 1)
            if h.source == "doc" and h.topic == case.topic
        ]
        first.append(min(ranks, default=0))
        first_any.append(min(ranks + docs, default=0))
    return {
        "cases": float(len(cases)),
        "k": float(index.cfg.top_k),
        "recall_at_k": float(np.mean([r > 0 for r in first])),
        "mrr": float(np.mean([1 / r if r else 0.0 for r in first])),
        "recall_at_k_any": float(np.mean([r > 0 for r in first_any])),
        "mrr_any": float(np.mean([1 / r if r else 0.0 for r in first_any])),
        "abstain_rate": float(np.mean([not p.emitted for p in predictions])),
        "mean_best_similarity": float(np.mean([p.best_similarity for p in predictions])),
        "ms_per_query": elapsed_ms / len(cases),
    }
