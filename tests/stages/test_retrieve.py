"""The retrieve stage on a toy corpus: topic filtering, versioned index artifact, recall@k / MRR."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipelines.config import RetrieveConfig
from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.stages import retrieve

NOW = datetime(2026, 1, 5, tzinfo=UTC)
REPLIES = {
    "card_blocked": "Sorry about that! I've unblocked your card; it works again in a few minutes.",
    "refund_status": "Refunds reach your account within 5 business days of approval.",
    "change_address": "You can update your address under Settings → Profile → Address.",
}
MESSAGES = {
    "card_blocked": [
        "my card got blocked at the shop",
        "why is my debit card frozen",
        "card declined and now it says blocked",
    ],
    "refund_status": [
        "where is my refund",
        "refund still not arrived after a week",
        "how long does a refund take",
    ],
    "change_address": [
        "I moved house, how do I change my address",
        "need to update my postal address",
        "wrong address on my account",
    ],
}


def case(case_id: str, message: str, topic: str | None, reply: str | None) -> LabeledCase:
    return LabeledCase(
        case_id=case_id,
        created_at=NOW,
        message=message,
        answerable=topic is not None,
        topic=topic,
        agent_reply=reply,
        label_source="synthetic",
    )


def toy_cases() -> list[LabeledCase]:
    return [
        case(f"{topic}-{i}", message, topic, REPLIES[topic])
        for topic, messages in MESSAGES.items()
        for i, message in enumerate(messages)
    ]


def toy_docs() -> list[KnowledgeDoc]:
    body = "First paragraph about the topic.\n\nSecond paragraph. " + "More detail here. " * 30
    return [
        KnowledgeDoc(
            doc_id=f"doc-{t}", topic=t, title=t.replace("_", " "), body=body, updated_at=NOW
        )
        for t in MESSAGES
    ]


CFG = RetrieveConfig(top_k=5, min_similarity=0.3, passage_chars=200)


@pytest.fixture(scope="module")
def built():
    index, _, payloads = retrieve.build(
        CFG, toy_cases(), toy_docs(), location=":memory:", data_version="toy-v1"
    )
    return index, payloads


def test_topic_filter_returns_only_that_topic_and_near_duplicate_first(built) -> None:
    index, _ = built
    [hits] = index.search(["my card is blocked at the shop"], ["card_blocked"])
    assert hits and {h.topic for h in hits} == {"card_blocked"}
    assert hits[0].source == "conversation" and hits[0].ref_id == "card_blocked-0"
    assert hits[0].text == REPLIES["card_blocked"]
    [other] = index.search(["my card is blocked at the shop"], ["refund_status"])
    assert {h.topic for h in other} == {"refund_status"}


def test_docs_are_split_into_passages_with_payload(built) -> None:
    _, payloads = built
    doc_payloads = [
        p for p in payloads if p["source"] == "doc" and p["ref_id"] == "doc-refund_status"
    ]
    assert len(doc_payloads) > 1
    assert all(len(p["text"]) <= CFG.passage_chars + 20 for p in doc_payloads)
    assert {"topic", "source", "ref_id", "title", "text"} <= set(doc_payloads[0])


def test_abstains_below_min_similarity_with_reason(built) -> None:
    index, _ = built
    strict = retrieve.RetrieveIndex(
        index.client,
        index.collection,
        index.embedder,
        CFG.model_copy(update={"min_similarity": 0.99}),
        index.info,
    )
    [kept], [dropped] = (
        index.predict(["where is my refund"], ["refund_status"]),
        strict.predict(["the weather is lovely in spring"], ["refund_status"]),
    )
    assert kept.emitted and kept.reason is None and kept.best_similarity > 0.9
    assert not dropped.emitted
    assert dropped.reason.startswith("retrieve: best similarity=") and "< 0.990" in dropped.reason
    [empty] = index.predict(["anything"], ["unknown_topic"])
    assert not empty.emitted and "nothing indexed" in empty.reason


def test_collection_name_carries_data_and_embedder_version(built) -> None:
    index, _ = built
    assert index.collection.startswith("casepilot-retrieve-toy-v1-minilm-l6-v2-")
    assert retrieve.collection_name("a" * 40, "minilm-l6-v2-1234") != retrieve.collection_name(
        "b" * 40, "minilm-l6-v2-1234"
    )
    assert retrieve.collection_name("a" * 40, "e1") != retrieve.collection_name("a" * 40, "e2")
    _, payloads = retrieve.corpus_payloads(toy_cases(), toy_docs(), 200)
    _, fewer = retrieve.corpus_payloads(toy_cases()[:-1], toy_docs(), 200)
    assert retrieve.data_version_of(payloads) != retrieve.data_version_of(fewer)


def test_recall_and_mrr_on_a_toy_with_known_answers(built) -> None:
    index, _ = built
    val = [
        case("v1", "my card is blocked", "card_blocked", REPLIES["card_blocked"]),
        case("v2", "refund not here yet", "refund_status", REPLIES["refund_status"]),
        case("v3", "change my address", "change_address", "A reply no indexed case ever sent."),
    ]
    metrics = retrieve.evaluate(index, val)
    # v1, v2 find a matching reply at rank 1 (every hit in their topic has that reply); v3 never.
    assert metrics["recall_at_k"] == pytest.approx(2 / 3)
    assert metrics["mrr"] == pytest.approx(2 / 3)
    assert metrics["recall_at_k_any"] == pytest.approx(1.0)  # v3's topic doc is in its top 5


def test_train_writes_artifact_and_load_restores_it_elsewhere(tmp_path) -> None:
    out = retrieve.train(
        CFG,
        toy_cases(),
        None,
        tmp_path / "retrieve",
        docs=toy_docs(),
        location=":memory:",
        data_version="toy-v2",
    )
    info = json.loads((out / "stage.json").read_text())
    assert (
        info["collection"].startswith("casepilot-retrieve-toy-v2-") and info["conversations"] == 9
    )
    loaded = retrieve.load(out, location=":memory:")  # a fresh in-memory store: restored from files
    assert loaded.client.collection_exists(info["collection"])
    [hits] = loaded.search(["how long does a refund take"], ["refund_status"])
    assert hits[0].ref_id == "refund_status-2" and hits[0].score > 0.99


@pytest.mark.parametrize("oversample", [1, 10])
def test_embedded_search_equals_the_filtered_query(built, oversample) -> None:
    index, _ = built
    index = retrieve.RetrieveIndex(
        index.client,
        index.collection,
        index.embedder,
        CFG.model_copy(update={"oversample": oversample}),
        index.info,
    )
    messages = ["card blocked", "refund late", "new address", "card blocked"]
    topics = ["card_blocked", "refund_status", "change_address", "refund_status"]
    vectors = [v.tolist() for v in index.embedder.embed(messages)]
    expected = index._query(vectors, topics, CFG.top_k)  # Qdrant's own filtered search
    got = index.search(messages, topics)
    assert [[(h.ref_id, h.text) for h in hits] for hits in got] == [
        [(h.ref_id, h.text) for h in hits] for hits in expected
    ]
    assert all(len(hits) == CFG.top_k for hits in got)
