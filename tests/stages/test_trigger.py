"""The trigger stage: training, save/load, predictions, behaviour.

The fast test uses a tiny BERT built from a config (word-level vocab) and trains a few real steps.
The behavioural tests (slow) use the trigger fine-tuned from the real all-MiniLM-L6-v2 on a slice
of the synthetic world once per run (`synth_models`, tests/stages/conftest.py) and check
direction, context and minimum functionality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.config import TriggerConfig
from pipelines.stages import trigger
from tests.stages.classifier_kit import BEHAVIOUR_TIMEOUT_S, _tiny, _toy_cases


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


# ---------------------------------------------------------------- behaviour (real MiniLM)


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
