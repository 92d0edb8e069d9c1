"""The trigger and topic tests' toy data and tiny BERT, shared with the tests that reuse them.

tests/stages/test_trigger.py, test_topic.py and test_classifier_common.py use them, and so do
test_quantize.py, test_quantize_onnx.py and tests/unit/test_quiet.py. `tiny_base` is a fixture:
tests/stages/conftest.py provides it to the stage tests (built once per run); a module elsewhere
imports it to have its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.data.contract import LabeledCase, Turn
from pipelines.stages.encoder.classifier import build_tiny_encoder

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


@pytest.fixture(scope="session")
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
