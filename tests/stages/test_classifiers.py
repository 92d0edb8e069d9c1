"""The trigger and topic stages: training, save/load, predictions, CLI, MLflow, behaviour.

Fast tests use a tiny BERT built from a config (word-level vocab) and train a few real steps.
The behavioural tests (slow) fine-tune the real all-MiniLM-L6-v2 on a slice of the synthetic
world once per module and check invariance, direction and minimum functionality.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.config import TopicConfig, TriggerConfig
from pipelines.data.contract import LabeledCase, Turn, write_jsonl
from pipelines.stages import topic, trigger
from pipelines.stages.encoder.classifier import build_tiny_encoder, context_text
from pipelines.stages.encoder.classifier_train import class_weights

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# Fine-tuning MiniLM twice takes ~2 min on 2 idle cores; far longer on a shared, loaded box.
BEHAVIOUR_TIMEOUT_S = 3600
TOPIC_MESSAGES = {
    "refunds": [
        "how do i refund a customer",
        "refund the money back",
        "give a refund please",
        "refund the order",
    ],
    "payouts": [
        "when does my payout arrive",
        "payout to my bank",
        "where is the payout",
        "payout is late",
    ],
    "cards": [
        "my card was declined",
        "card declined again",
        "why was the card declined",
        "declined card payment",
    ],
}
NOT_ANSWERABLE = ["thanks a lot", "hi there", "lol ok", "ok cheers"]


def _case(
    i: int, message: str, topic_name: str | None, context: tuple[Turn, ...] = ()
) -> LabeledCase:
    return LabeledCase(
        case_id=f"t{i}",
        created_at=NOW,
        message=message,
        context=context,
        answerable=topic_name is not None,
        topic=topic_name,
        label_source="human",
    )


def _toy_cases() -> list[LabeledCase]:
    cases = [
        _case(i, m, t)
        for i, (t, m) in enumerate((t, m) for t, ms in TOPIC_MESSAGES.items() for m in ms)
    ]
    cases += [_case(100 + i, m, None) for i, m in enumerate(NOT_ANSWERABLE)]
    follow_up = (Turn(role="agent", text="a refund takes five days"),)
    return [*cases, _case(200, "and for the card", "cards", follow_up)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = {w for c in _toy_cases() for w in c.message.split()} | {
        "agent",
        ":",
        "takes",
        "five",
        "days",
    }
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "base", sorted(words), hidden=64)


def _tiny(cls, base: Path, **overrides):
    settings = {
        "base_model": str(base),
        "max_steps": 60,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
        "early_stopping_patience": 5,
        "max_length": 32,
        "metric_for_best_model": "loss",
        "seed": 1,
        "torch_threads": 1,
    }
    return cls(**settings | overrides)


def test_trigger_overfits_one_tiny_batch(tiny_base: Path, tmp_path: Path) -> None:
    cases = _toy_cases()[:4] + _toy_cases()[12:16]  # one batch of 8: 4 answerable, 4 not
    out = trigger.train(_tiny(TriggerConfig, tiny_base), cases, cases, tmp_path / "trigger")
    model = trigger.load(out)
    losses = model.meta.metrics["train_loss_history"]
    assert losses[-1] < 0.1 < losses[0]
    predictions = model.predict([c.message for c in cases])
    assert [p.label == "answerable" for p in predictions] == [c.answerable for c in cases]
    assert {f.name for f in out.iterdir()} >= {"model.safetensors", "stage.json", "tokenizer.json"}
    assert not (out / "training_args.bin").exists() and not (out / "checkpoints").exists()


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


def test_class_weights_balance_and_keep_the_loss_scale() -> None:
    labels = [0] * 90 + [1] * 10
    weights = class_weights(labels, 3, "balanced")
    assert weights[1] == pytest.approx(9 * weights[0])
    assert weights[np.array(labels)].mean() == pytest.approx(1.0)
    assert class_weights(labels, 2, "sqrt")[1] == pytest.approx(
        3 * class_weights(labels, 2, "sqrt")[0]
    )
    assert (class_weights(labels, 2, "none") == 1).all()


def test_context_text_takes_the_last_turn() -> None:
    turns = (Turn(role="customer", text="hello"), Turn(role="agent", text="how can I help"))
    assert context_text(turns) == "agent: how can I help"
    assert context_text(()) is None and context_text(None) is None and context_text("x") == "x"


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


@pytest.fixture(scope="module")
def synth_models(tmp_path_factory: pytest.TempPathFactory):
    """Trigger and topic fine-tuned from MiniLM on 3 synthetic days (trained once per module)."""
    from pipelines.config import SynthConfig
    from pipelines.data.dataset import split_cases
    from pipelines.data.synth import generate_world

    world = generate_world(SynthConfig(), seed=7, days=3)
    cases = [c for day in world.days for c in day.cases]
    split = split_cases(cases, 0.2, 13)
    root = tmp_path_factory.mktemp("minilm")
    fast = {"max_length": 64, "batch_size": 32, "warmup_ratio": 0.1, "early_stopping_patience": 1}
    trigger_dir = trigger.train(
        TriggerConfig(epochs=3, learning_rate=1e-4, **fast),
        split.train,
        split.val,
        root / "trigger",
    )
    topic_dir = topic.train(
        TopicConfig(epochs=6, learning_rate=3e-4, **fast), split.train, split.val, root / "topic"
    )
    return trigger.load(trigger_dir), topic.load(topic_dir), split.val


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


@pytest.mark.slow
@pytest.mark.timeout(BEHAVIOUR_TIMEOUT_S)
def test_removing_the_question_makes_the_trigger_abstain(synth_models) -> None:
    trigger_model, _, _ = synth_models
    questions = [
        "Hi there! How soon will my payout arrive in my bank account?",
        "Dear support, how do I refund a customer who returned the item?",
        "Hey folks, why was my customer's card declined at checkout?",
        "Hello, how do I change the bank account for payouts?",
    ]
    stripped = ["Hi there!", "Dear support,", "Hey folks,", "Hello,"]
    full, empty = trigger_model.predict(questions), trigger_model.predict(stripped)
    assert all(f.emitted for f in full)
    assert all(e.probability < f.probability for e, f in zip(empty, full, strict=True))
    assert not any(e.emitted for e in empty)


@pytest.mark.slow
@pytest.mark.timeout(BEHAVIOUR_TIMEOUT_S)
def test_a_follow_up_needs_its_context(synth_models) -> None:
    trigger_model, _, val = synth_models
    follow_ups = [c for c in val if c.answerable and c.context]
    assert follow_ups
    with_context = trigger_model.predict(
        [c.message for c in follow_ups], [c.context for c in follow_ups]
    )
    without = trigger_model.predict([c.message for c in follow_ups])
    lower = np.mean(
        [w.probability < c.probability for w, c in zip(without, with_context, strict=True)]
    )
    assert lower >= 0.8


@pytest.mark.slow
@pytest.mark.timeout(BEHAVIOUR_TIMEOUT_S)
def test_an_unrelated_message_is_not_answered(synth_models) -> None:
    trigger_model, _, val = synth_models
    unrelated = [
        "what's a good pizza place",
        "who won the football game last night",
        "can you recommend a movie for tonight",
    ]
    assert not any(p.emitted for p in trigger_model.predict(unrelated))
    metrics, _ = trigger.evaluate(trigger_model, val, figures=False)
    assert metrics["auroc"] >= 0.9
