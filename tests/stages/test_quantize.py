"""Quantization behind the accuracy gate: real tiny models, real torch/quanto/GPTQModel, MLflow.

The classifier is a tiny BERT trained a few dozen steps (tests/stages/classifier_kit.py), the
decoder a tiny Llama memorising four replies (tests/stages/generator_kit.py); GPTQ really
quantizes it on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.config import AnswerConfig, QuantizeConfig, TopicConfig
from pipelines.data.contract import write_jsonl
from pipelines.quantize.run import Candidate, choose, judge, quantize_stage
from pipelines.quantize.stages import write_variant
from pipelines.stages import answer, topic
from pipelines.stages.encoder.classifier import build_tiny_encoder
from tests.stages.classifier_kit import _tiny, _toy_cases
from tests.stages.generator_kit import DOCS, TINY, _cases


@pytest.fixture(scope="module")
def topic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quantize-topic")
    words = {w for c in _toy_cases() for w in c.message.split()} | {"agent", ":", "takes"}
    base = build_tiny_encoder(root / "base", sorted(words) + ["five", "days"], hidden=64)
    return topic.train(_tiny(TopicConfig, base), _toy_cases(), _toy_cases(), root / "fp32")


@pytest.fixture(scope="module")
def answer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = AnswerConfig(**TINY, min_confidence=0.5, min_groundedness=0.5)
    return answer.train(cfg, _cases(2), [], tmp_path_factory.mktemp("quantize-answer"), docs=DOCS)


def _candidate(method: str, metric: float, latency_ms: float) -> Candidate:
    return Candidate(method, metric, latency_ms, disk_bytes=1, memory_bytes=1)


def test_gate_picks_the_fastest_candidate_within_the_drop_and_says_why() -> None:
    candidates = [
        _candidate("none", 0.900, 10.0),
        _candidate("bf16", 0.897, 4.0),  # 2.5× and within 0.01
        _candidate("int8_dynamic", 0.850, 2.0),  # fastest, but 5 points lost
        _candidate("quanto_int8", 0.900, 12.0),  # lossless and slower
    ]
    verdicts = judge(candidates, max_metric_drop=0.01)
    assert [v.passed for v in verdicts] == [True, True, False, True]
    assert verdicts[1].speedup == pytest.approx(2.5)
    assert verdicts[2].metric_drop == pytest.approx(0.05)
    chosen, reason = choose(verdicts, "auto")
    assert chosen == "bf16" and "fastest within the gate" in reason
    # Tighter gate: nothing faster survives, fp32 stays and each loser's drop is named.
    chosen, reason = choose(judge(candidates, max_metric_drop=0.001), "auto")
    assert chosen == "none" and "bf16 drop +0.0030 > 0.001" in reason
    # A named method is taken when it passes even if slower (quanto for size), refused otherwise.
    assert choose(verdicts, "quanto_int8")[0] == "quanto_int8"
    chosen, reason = choose(verdicts, "int8_dynamic")
    assert chosen == "none" and "requested int8_dynamic failed the gate" in reason


def test_topic_auto_writes_a_loadable_folder_with_every_candidate(
    topic_dir: Path, tmp_path: Path
) -> None:
    cfg = QuantizeConfig(
        auto_candidates=("bf16", "int8_dynamic", "quanto_int8"), latency_rounds=3, latency_batch=16
    )
    out = tmp_path / "topic-q"
    report = quantize_stage(cfg, "topic", topic_dir, _toy_cases(), out)
    saved = json.loads((out / "quantize.json").read_text())
    assert [c["method"] for c in saved["candidates"]] == [
        "none",
        "bf16",
        "int8_dynamic",
        "quanto_int8",
    ]
    assert all(c["latency_ms"] > 0 and c["disk_bytes"] > 0 for c in saved["candidates"])
    sizes = {c.method: c for c in report.candidates}
    assert sizes["bf16"].disk_bytes < 0.6 * sizes["none"].disk_bytes  # weights stored in bf16
    assert sizes["int8_dynamic"].memory_bytes < 0.6 * sizes["none"].memory_bytes
    # The decision follows the measurements: the fastest candidate among those within the gate.
    passing = [v for v in report.verdicts if v.passed]
    assert report.chosen == max(passing, key=lambda v: v.speedup).method == saved["chosen"]
    stage_info = json.loads((out / "stage.json").read_text())
    assert stage_info["quantization"]["method"] == report.chosen
    assert stage_info["quantization"]["reason"] == report.reason
    model = topic.load(out)  # the stage's own load applies the recorded method
    if report.chosen == "bf16":
        assert next(model.classifier.model.parameters()).dtype.is_floating_point
        assert str(next(model.classifier.model.parameters()).dtype) == "torch.bfloat16"
    predictions = model.predict(["refund the order", "payout is late"])
    assert [p.label for p in predictions] == ["refunds", "payouts"]
    bf16 = write_variant("topic", topic_dir, tmp_path / "bf16", "bf16", {})
    with pytest.raises(ValueError, match="already quantized"):
        quantize_stage(cfg, "topic", bf16, _toy_cases(), tmp_path / "again")
    with pytest.raises(ValueError, match="not 'trigger'"):
        quantize_stage(cfg, "trigger", topic_dir, _toy_cases(), tmp_path / "wrong")


def test_cli_logs_the_candidates_to_mlflow_and_registry_tags_the_choice(
    topic_dir: Path, tmp_path: Path, home
) -> None:
    from mlflow import MlflowClient

    from flows.cli.main import app
    from pipelines.config import load_params
    from pipelines.registry.lineage import stage_lineage
    from pipelines.registry.register import register_stage

    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        yaml.safe_dump({"quantize": {"auto_candidates": ["bf16"], "latency_rounds": 2}})
    )
    val = tmp_path / "val.jsonl"
    write_jsonl(_toy_cases(), val)
    out = tmp_path / "topic-q"
    result = CliRunner().invoke(
        app,
        ["quantize", "topic", "--model", str(topic_dir), "--val", str(val), "--out", str(out),
         "--params", str(params_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    chosen = json.loads((out / "quantize.json").read_text())["chosen"]
    assert f"chose {chosen}" in result.output
    params = load_params(params_file)
    client = MlflowClient(tracking_uri=params.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("casepilot-topic")
    [run] = client.search_runs([experiment.experiment_id], "attributes.run_name = 'quantize-topic'")
    assert run.data.tags["casepilot.quantization"] == chosen
    assert run.data.metrics["quantize.bf16.latency_ms"] > 0
    assert "quantize.none.accuracy" in run.data.metrics
    table = Path(
        client.download_artifacts(run.info.run_id, "quantize_candidates.json", str(tmp_path))
    )
    assert json.loads(table.read_text())["columns"][0] == "method"
    lineage = stage_lineage(params, "topic", data_version="test-data", model_dir=out)
    version = register_stage(params, "topic", out, metrics={"accuracy": 1.0}, lineage=lineage)
    tags = client.get_model_version(version.name, version.version).tags
    assert tags["casepilot.quantization"] == chosen
    assert tags["casepilot.quantization_key_metric"] == "accuracy"
    assert tags["casepilot.quantization_candidates"] == "none,bf16"


def test_cli_names_a_folder_that_is_not_a_stage(tmp_path: Path) -> None:
    from flows.cli.main import app

    val = tmp_path / "val.jsonl"
    write_jsonl(_toy_cases(), val)
    result = CliRunner().invoke(
        app, ["quantize", "topic", "--model", str(tmp_path), "--val", str(val),
              "--out", str(tmp_path / "q"), "--no-mlflow"],
    )  # fmt: skip
    assert result.exit_code == 2 and "casepilot train" in result.output


@pytest.mark.slow  # trains the tiny decoder (shared with the GPTQ test)
def test_gate_keeps_fp32_when_int4_lowers_the_reference_logprob(
    answer_dir: Path, tmp_path: Path
) -> None:
    # A decoder that fits its references sits at a maximum of their log-likelihood: int4
    # weights can only lower it, so a zero-drop gate must refuse them and keep fp32.
    cfg = QuantizeConfig(
        method="quanto_int4", max_metric_drop=0.0, generator_metric="mean_logprob",
        latency_rounds=1, latency_batch=4,
    )  # fmt: skip
    out = tmp_path / "answer-q"
    report = quantize_stage(cfg, "answer", answer_dir, _cases(), out, docs=DOCS, pool=_cases(2))
    verdict = {v.method: v for v in report.verdicts}["quanto_int4"]
    assert report.key_metric == "mean_logprob" and verdict.metric_drop > 0 and not verdict.passed
    assert report.chosen == "none" and "requested quanto_int4 failed the gate" in report.reason
    assert json.loads((out / "stage.json").read_text())["quantization"]["method"] == "none"
    model = answer.load(out)
    inputs = [inp for inp, _ in answer.training_inputs(_cases(), DOCS, pool=_cases(2))]
    assert [p.text for p in model.predict(inputs)] == [c.agent_reply for c in _cases()]


@pytest.mark.slow
def test_gptq_quantizes_a_tiny_trained_decoder_that_still_answers(
    answer_dir: Path, tmp_path: Path
) -> None:
    cfg = QuantizeConfig(method="gptq", gptq_bits=4, latency_rounds=1, latency_batch=4)
    out = tmp_path / "answer-gptq"
    report = quantize_stage(cfg, "answer", answer_dir, _cases(), out, docs=DOCS, pool=_cases(2))
    gptq = {c.method: c for c in report.candidates}["gptq"]
    assert report.chosen == "gptq", report.reason
    assert gptq.settings["bits"] == 4 and gptq.settings["group_size"] == 64  # tiny widths: 64
    assert gptq.disk_bytes < 0.5 * {c.method: c for c in report.candidates}["none"].disk_bytes
    assert (out / "quantize_config.json").is_file() and (out / "model.safetensors").is_file()
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    model = answer.load(out)  # the normal stage load reads the GPTQ checkpoint
    assert any(isinstance(m, BaseQuantLinear) for m in model.model.modules())
    inputs = [inp for inp, _ in answer.training_inputs(_cases(), DOCS, pool=_cases(2))]
    replies = [p.text for p in model.predict(inputs)]
    assert replies == [c.agent_reply for c in _cases()]


@pytest.mark.slow  # loads MiniLM once per candidate
def test_retrieve_quantizes_the_query_embedder_and_keeps_the_index(tmp_path: Path) -> None:
    from pipelines.stages import retrieve
    from tests.stages.test_retrieve import CFG, toy_cases, toy_docs

    built = retrieve.train(CFG, toy_cases(), None, tmp_path / "retrieve", docs=toy_docs(),
                           location=":memory:", data_version="toy-q")  # fmt: skip
    cfg = QuantizeConfig(auto_candidates=("bf16", "int8_dynamic"), latency_rounds=2)
    report = quantize_stage(cfg, "retrieve", built, toy_cases(), tmp_path / "retrieve-q")
    assert report.key_metric == "recall_at_k"
    assert {c.method for c in report.candidates} == {"none", "bf16", "int8_dynamic"}
    index = retrieve.load(tmp_path / "retrieve-q", location=":memory:")
    assert index.info["quantization"]["method"] == report.chosen
    assert index.collection == json.loads((built / "stage.json").read_text())["collection"]
    [hits] = index.search(["how long does a refund take"], ["refund_status"])
    # int8 queries against fp32 vectors score lower (cosine ≈ 0.9); the ranking holds
    assert hits[0].ref_id == "refund_status-2" and hits[0].score > 0.8
