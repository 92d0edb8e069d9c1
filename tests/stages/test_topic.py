"""The topic stage: training, save/load, calibrated predictions, CLI, MLflow, behaviour.

Fast tests use a tiny BERT built from a config (word-level vocab) and train a few real steps.
The behavioural test (slow) uses the topic model fine-tuned from the real all-MiniLM-L6-v2 on a
slice of the synthetic world once per run (`synth_models`, tests/stages/conftest.py) and checks
invariance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.config import TopicConfig
from pipelines.data.contract import write_jsonl
from pipelines.stages import topic, trigger
from tests.stages.classifier_kit import BEHAVIOUR_TIMEOUT_S, _tiny, _toy_cases


def test_topic_round_trip_predicts_calibrated_decisions(tiny_base: Path, tmp_path: Path) -> None:
    cases = _toy_cases()
    out = topic.train(_tiny(TopicConfig, tiny_base), cases, cases, tmp_path / "topic")
    model = topic.load(out)
    assert model.meta.labels == ["cards", "payouts", "refunds"]
    assert model.meta.temperature > 0 and 0 < model.meta.threshold <= 1
    contexts = [None, cases[-1].context, None]  # prior turns as in training
    predictions = model.predict(
        ["refund the order", "and for the card", "payout is late"], contexts
    )
    assert [p.label for p in predictions] == ["refunds", "cards", "payouts"]
    for p in predictions:
        assert 0 <= p.probability <= 1 and p.emitted == (p.probability >= p.threshold)
        assert (p.abstain_reason is None) == p.emitted
    metrics, figures = topic.evaluate(model, cases)
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 13
    assert set(figures) == {"confusion_matrix", "reliability", "precision_coverage"}
    with pytest.raises(ValueError, match="expected a trigger model"):
        trigger.load(out)


def test_mean_pooled_topic_saves_its_own_type_and_loads_padded_and_quantized(
    tiny_base: Path, tmp_path: Path
) -> None:
    import json

    import torch

    from pipelines.quantize.methods import load_sequence_classifier
    from pipelines.stages.encoder.pooled import MODEL_TYPE

    cases = _toy_cases()
    out = topic.train(_tiny(TopicConfig, tiny_base, max_steps=4), cases, cases, tmp_path / "t")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE  # never silently loaded as a [CLS] classifier
    assert {"probe_val_accuracy_C1", "probe_val_accuracy_C10"} <= set(
        json.loads((out / "stage.json").read_text())["metrics"]
    )
    model = topic.load(out)
    texts = ["refund", "why was the card declined again and again"]
    batched = model.classifier.logits(texts, None)
    model.classifier.batch_size = 1  # one text per batch: no padding
    alone = model.classifier.logits(texts, None)
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # padding is masked out of the mean
    int8 = load_sequence_classifier(out, {"quantization": {"method": "int8_dynamic"}})
    assert any(type(m).__module__.startswith("torch.ao") for m in int8.modules())
    batch = model.classifier.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert int8(**batch).logits.shape == (2, 3)


def test_linear_probe_head_starts_where_the_probe_is(tiny_base: Path) -> None:
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer

    from pipelines.stages.encoder.pooled import build_classifier, fit_linear_probe, head_features

    cases = _toy_cases()
    labels = topic.topic_labels(cases)
    data = topic.examples(cases, labels)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    batch = tokenizer(list(data.texts), padding=True, return_tensors="pt")
    for pooling in ("mean", "cls"):
        torch.manual_seed(0)
        model = build_classifier(str(tiny_base), labels, pooling)
        x = head_features(model, [batch])
        scores = fit_linear_probe(model, (x, list(data.labels)), (x, list(data.labels)), {})
        best = max((1.0, 10.0, 100.0), key=lambda c: scores[f"probe_val_accuracy_C{c:g}"])
        probe = LogisticRegression(C=best, max_iter=2000).fit(x.numpy(), list(data.labels))
        with torch.no_grad():
            logits = model.eval()(**batch).logits.numpy()
        np.testing.assert_allclose(logits, probe.decision_function(x.numpy()), atol=1e-4)


def test_load_names_a_folder_that_is_not_a_stage(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="casepilot train"):
        topic.load(tmp_path)


@pytest.mark.slow
def test_cli_trains_evaluates_and_logs_to_mlflow(tiny_base: Path, tmp_path: Path, home) -> None:
    import mlflow
    from typer.testing import CliRunner

    from flows.cli.main import app
    from pipelines.config import load_params

    cases = tmp_path / "cases.jsonl"
    write_jsonl(_toy_cases(), cases)
    params = tmp_path / "params.yaml"
    settings = _tiny(TopicConfig, tiny_base).model_dump(exclude_defaults=True)
    params.write_text(yaml.safe_dump({"topic": settings}), encoding="utf-8")
    out = tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            "topic",
            "--cases",
            str(cases),
            "--val",
            str(cases),
            "--out",
            str(out),
            "--params",
            str(params),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "stage.json").is_file()
    metrics_file = tmp_path / "metrics.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "topic",
            "--model",
            str(out),
            "--cases",
            str(cases),
            "--params",
            str(params),
            "--json-out",
            str(metrics_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in metrics_file.read_text()
    mlflow.set_tracking_uri(load_params(params).mlflow_tracking_uri)
    runs = mlflow.search_runs(experiment_names=["casepilot-topic"])
    assert set(runs["tags.mlflow.runName"]) == {"train-topic", "evaluate-topic"}
    train_run = runs[runs["tags.mlflow.runName"] == "train-topic"].iloc[0]
    assert "metrics.val_ece_uncalibrated" in runs and train_run["params.learning_rate"] == "0.003"
    artifacts = mlflow.artifacts.list_artifacts(run_id=train_run["run_id"])
    assert {"confusion_matrix.png", "reliability.png", "stage.json"} <= {a.path for a in artifacts}


# ---------------------------------------------------------------- behaviour (real MiniLM)


def _typo(message: str) -> str:
    """Swap two inner letters of the longest word ('declined' → 'delcined')."""
    words = message.split()
    i = max(range(len(words)), key=lambda k: len(words[k]))
    w = words[i]
    if len(w) >= 5:
        words[i] = w[:2] + w[3] + w[2] + w[4:]
    return " ".join(words)


@pytest.mark.slow
@pytest.mark.timeout(BEHAVIOUR_TIMEOUT_S)
def test_a_typo_does_not_change_the_topic(synth_models) -> None:
    _, topic_model, val = synth_models
    answerable = [c for c in val if c.answerable and not c.context]
    clean = topic_model.predict([c.message for c in answerable])
    confident = [
        (c, p)
        for c, p in zip(answerable, clean, strict=True)
        if p.label == c.topic and p.probability >= 0.5
    ]
    assert len(confident) >= 20, "the topic model should be right and sure on most clean cases"
    typos = topic_model.predict([_typo(c.message) for c, _ in confident])
    same = np.mean([t.label == p.label for (_, p), t in zip(confident, typos, strict=True)])
    assert same >= 0.9
