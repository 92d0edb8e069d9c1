"""Fixtures the per-stage test files share, each built once per test run (session scope).

`tiny_base` (tests/stages/classifier_kit.py) and `synth_models` serve test_trigger.py and
test_topic.py, as they served the one classifier module before; `answer_dir` serves
test_answer.py and test_tone.py's LoRA test, as it served the one generator module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import AnswerConfig, TopicConfig, TriggerConfig
from pipelines.stages import answer, topic, trigger
from tests.stages.classifier_kit import tiny_base  # noqa: F401 - the tiny BERT, once per run
from tests.stages.generator_kit import DOCS, TINY, _cases


@pytest.fixture(scope="session")
def synth_models(tmp_path_factory: pytest.TempPathFactory):
    """Trigger and topic fine-tuned from MiniLM on 3 synthetic days (trained once per run)."""
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


@pytest.fixture(scope="session")
def answer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # two copies of each case: every case then has a same-topic neighbour with its own reply
    cfg = AnswerConfig(**TINY, min_confidence=0.5, min_groundedness=0.5)
    return answer.train(cfg, _cases(2), [], tmp_path_factory.mktemp("answer"), docs=DOCS)
