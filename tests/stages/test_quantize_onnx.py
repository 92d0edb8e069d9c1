"""ONNX Runtime candidates (`onnx`, `onnx_int8`): real export, real ORT int8, the stages' own load.

The classifier is the tiny BERT of tests/stages/classifier_kit.py trained a few dozen steps; the
retrieve test exports the packaged all-MiniLM-L6-v2 (marked slow).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import QuantizeConfig, TopicConfig
from pipelines.quantize.methods import apply_method, recorded_method
from pipelines.quantize.onnx_runtime import (
    ONNX_FILE,
    OnnxEmbedder,
    OnnxRuntimeMissing,
    OnnxSequenceClassifier,
    require_onnxruntime,
    write_onnx_variant,
)
from pipelines.quantize.run import candidate_methods, quantize_stage
from pipelines.quantize.stages import stage_methods
from pipelines.stages import topic
from pipelines.stages.encoder.classifier import build_tiny_encoder
from tests.stages.classifier_kit import _tiny, _toy_cases

TEXTS = ["refund the order", "payout is late", "my card was blocked", "hello there"]


@pytest.fixture(scope="module")
def topic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx-topic")
    words = {w for c in _toy_cases() for w in c.message.split()} | {"agent", ":", "takes"}
    base = build_tiny_encoder(root / "base", sorted(words) + ["five", "days"], hidden=64)
    return topic.train(_tiny(TopicConfig, base), _toy_cases(), _toy_cases(), root / "fp32")


def test_onnx_and_int8_export_give_logits_close_to_torch(topic_dir: Path, tmp_path: Path) -> None:
    reference = topic.load(topic_dir).classifier.logits(TEXTS)
    fp32_dir, fp32 = write_onnx_variant("topic", topic_dir, tmp_path / "onnx", "onnx")
    int8_dir, int8 = write_onnx_variant(
        "topic", topic_dir, tmp_path / "int8", "onnx_int8", threads=1
    )
    assert fp32 == {"onnx_file": ONNX_FILE, "opset": 17, "threads": 2}
    assert int8["per_channel"] is True and int8["weight_type"] == "qint8" and int8["threads"] == 1
    by_onnx = topic.load(fp32_dir)
    assert isinstance(by_onnx.classifier.model, OnnxSequenceClassifier)
    np.testing.assert_allclose(by_onnx.classifier.logits(TEXTS), reference, atol=1e-4)
    by_int8 = topic.load(int8_dir)
    int8_logits = by_int8.classifier.logits(TEXTS)
    spread = np.ptp(reference)
    assert np.abs(int8_logits - reference).max() < 0.1 * spread  # int8: close, not equal
    assert not np.allclose(int8_logits, reference, atol=1e-6)  # the weights really changed
    assert (int8_logits.argmax(1) == reference.argmax(1)).all()
    # the int8 graph stores MatMul weights in one byte (the tiny model's embeddings stay fp32)
    assert (int8_dir / ONNX_FILE).stat().st_size < 0.8 * (fp32_dir / ONNX_FILE).stat().st_size
    info = json.loads((int8_dir / "stage.json").read_text())
    assert info["quantization"]["method"] == "onnx_int8"
    assert info["quantization"]["onnx_file"] == ONNX_FILE
    assert recorded_method(info) == "onnx_int8"


def test_onnx_int8_chosen_folder_loads_and_predicts_through_the_stage_load(
    topic_dir: Path, tmp_path: Path
) -> None:
    cfg = QuantizeConfig(method="onnx_int8", max_metric_drop=0.05, latency_rounds=2)
    out = tmp_path / "topic-q"
    report = quantize_stage(cfg, "topic", topic_dir, _toy_cases(), out)
    assert [c.method for c in report.candidates] == ["none", "onnx_int8"]
    assert report.chosen == "onnx_int8", report.reason
    assert (out / ONNX_FILE).is_file() and (out / "quantize.json").is_file()
    int8 = {c.method: c for c in report.candidates}["onnx_int8"]
    assert 0 < int8.memory_bytes == (out / ONNX_FILE).stat().st_size
    model = topic.load(out)  # the stage's own load reads stage.json and runs the ORT graph
    assert isinstance(model.classifier.model, OnnxSequenceClassifier)
    predictions = model.predict(["refund the order", "payout is late"])
    assert [p.label for p in predictions] == ["refunds", "payouts"]


def test_onnx_is_offered_to_encoders_only_and_named_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert {"onnx", "onnx_int8"} <= set(stage_methods("topic")) & set(stage_methods("retrieve"))
    assert not {"onnx", "onnx_int8"} & set(stage_methods("answer"))
    auto = QuantizeConfig(auto_candidates=("int8_dynamic", "onnx_int8"))
    assert candidate_methods("tone", auto) == ["none", "int8_dynamic"]
    assert candidate_methods("trigger", auto) == ["none", "int8_dynamic", "onnx_int8"]
    with pytest.raises(ValueError, match="does not apply to the answer stage"):
        candidate_methods("answer", QuantizeConfig(method="onnx"))
    with pytest.raises(ValueError, match="ONNX graph"):
        apply_method(object(), "onnx_int8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(OnnxRuntimeMissing, match="make install"):
        require_onnxruntime()


@pytest.mark.slow  # exports and quantizes MiniLM (~20 s)
def test_retrieve_onnx_int8_embedder_keeps_the_ranking(tmp_path: Path) -> None:
    from pipelines.stages import retrieve
    from pipelines.stages.encoder.embedder import load_embedder
    from tests.stages.test_retrieve import CFG, toy_cases, toy_docs

    built = retrieve.train(CFG, toy_cases(), None, tmp_path / "retrieve", docs=toy_docs(),
                           location=":memory:", data_version="toy-onnx")  # fmt: skip
    folder, settings = write_onnx_variant("retrieve", built, tmp_path / "int8", "onnx_int8")
    assert settings["tokenizer"] and settings["max_seq_length"] == 256
    index = retrieve.load(folder, location=":memory:")
    assert isinstance(index.embedder, OnnxEmbedder)
    queries = ["how long does a refund take", "my card is blocked", "where is my payout"]
    fp32 = load_embedder(CFG.embedder, CFG.batch_size).embed(queries)
    vectors = index.embedder.embed(queries)
    assert vectors.shape == fp32.shape and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert (np.sum(vectors * fp32, axis=1) > 0.97).all()  # int8 queries ≈ fp32 queries
    [hits] = index.search(["how long does a refund take"], ["refund_status"])
    assert hits[0].ref_id == "refund_status-2" and hits[0].score > 0.8
