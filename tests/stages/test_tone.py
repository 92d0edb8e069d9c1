"""The tone stage: a tiny Llama-style rewriter really trained for a few dozen steps.

The LoRA test (slow) puts an adapter on the trained answer decoder (`answer_dir`,
tests/stages/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import ToneConfig
from pipelines.stages import tone
from tests.stages.generator_kit import TINY, WORLD, _cases


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tone.train(ToneConfig(**TINY, lora=False), _cases(), [], tmp_path_factory.mktemp("tone"))


def test_tone_rewrites_drafts_in_house_style(tone_dir: Path):
    model = tone.load(tone_dir)
    preds = model.predict([draft for *_, draft in WORLD])
    assert [p.text for p in preds] == [reply for _, _, reply, _ in WORLD]
    assert all(not p.kept_draft and p.faithfulness == 1.0 for p in preds)
    metrics = tone.evaluate(model, _cases())
    assert (
        metrics["faithfulness"] == 1.0 and metrics["tone_gain"] > 0.2 and metrics["rouge_l"] == 1.0
    )


def test_tone_batched_equals_one_by_one(tone_dir: Path):
    model = tone.load(tone_dir)
    drafts = [draft for *_, draft in WORLD] + ["A fee of $75.25 is charged.", "Hello"]
    batched = model.predict(drafts)
    assert batched == [model.predict([d])[0] for d in drafts]


def test_tone_keeps_the_draft_when_a_fact_would_be_lost(tone_dir: Path):
    model = tone.load(tone_dir)
    draft = (
        "Payouts are credited within 2 business days. Status is available under Balance → Payouts."
    )
    checked = model.check(
        draft, "Hi! Payouts land in a few days. Track them under Balance → Payouts."
    )
    assert checked.kept_draft and checked.text == draft
    assert checked.lost_facts == ("2",) and "lost 2" in checked.reason
    # a draft the model never saw, with an amount it cannot know: the stage keeps it or keeps $75
    unseen = "A fee of $75.25 is charged for chargebacks."
    result = model.predict([unseen])[0]
    assert result.kept_draft or "$75.25" in result.text


@pytest.mark.slow
def test_tone_lora_adapter_on_a_trained_base(answer_dir: Path, tmp_path: Path):
    cfg = ToneConfig(
        **{**TINY, "epochs": 15.0, "learning_rate": 5e-3},
        base_model=str(answer_dir),
        lora=True,
        lora_rank=4,
    )
    out = tone.train(cfg, _cases(), [], tmp_path / "tone-lora")
    meta = json.loads((out / "stage.json").read_text())
    assert meta["fit"]["lora"] is True
    assert meta["fit"]["train_loss_last"] < meta["fit"]["train_loss_first"]
    assert (out / "trainer" / "adapter" / "adapter_model.safetensors").is_file()
    preds = tone.load(out).predict([WORLD[0][3]])
    assert len(preds) == 1 and preds[0].text


def test_product_terms_are_names_the_house_style_keeps():
    pairs = [
        (
            "Refunds go via the Paylane Terminal today. Contact Support.",
            "Hi! The Paylane Terminal does it.",
        ),
        (
            "Use the Paylane Terminal under Settings → Terminal. Ask Support.",
            "Sure, Paylane Terminal it is.",
        ),
    ]
    # "Paylane Terminal" is kept both times; "Support" is dropped; menu items are no names
    assert tone.product_terms(pairs) == ["Paylane Terminal"]
