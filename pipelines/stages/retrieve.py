"""The retrieve stage: a topic-filtered top-k index of resolved conversations and help-centre docs.

Customer messages of resolved cases (payload: their agent reply) and passages of knowledge docs
are embedded with the shared embedder into a Qdrant collection. The collection name carries the
dataset version and the embedder version, so an index is a versioned artifact: `train` writes
its vectors and payloads beside a `stage.json` into `out_dir`, and `load` restores the
collection into any Qdrant location (embedded folder, server URL, or ':memory:') when missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipelines.config import RetrieveConfig
from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.stages.encoder.embedder import load_embedder
from pipelines.stages.index.corpus import corpus_payloads, data_version_of
from pipelines.stages.index.qdrant import (
    RetrieveIndex,
    collection_name,
    fill_collection,
    is_server,
    open_client,
)

STAGE_FILE = "stage.json"
VECTORS_FILE = "vectors.safetensors"
PAYLOADS_FILE = "payloads.jsonl"


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
    fill_collection(client, name, vectors, payloads, cfg.batch_size, is_server(location))
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
        fill_collection(
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


# The retrieve stage's `Stage` implementation (pipelines.stages.base), found by the registry.
from pipelines.stages.kinds import IndexStage  # noqa: E402

STAGE_IMPL = IndexStage("retrieve", "recall_at_k", train=train, load=load, evaluate=evaluate)
