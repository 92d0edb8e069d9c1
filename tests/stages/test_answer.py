"""The answer stage: a tiny Llama-style model really trained for a few dozen steps.

The trained model (`answer_dir`) is built once per run in tests/stages/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import AnswerConfig
from pipelines.stages import answer
from pipelines.stages.answer import AnswerInput, RetrievedReply
from tests.stages.generator_kit import DOCS, TINY, WORLD, _cases


def test_answer_overfits_one_batch_and_saves_safetensors(answer_dir: Path):
    meta = json.loads((answer_dir / "stage.json").read_text())
    assert meta["fit"]["train_loss_last"] < 0.25 * meta["fit"]["train_loss_first"]
    assert (answer_dir / "model.safetensors").is_file() and (
        answer_dir / "tokenizer.json"
    ).is_file()
    model = answer.load(answer_dir)
    pairs = answer.training_inputs(_cases(), DOCS, pool=_cases(2))
    preds = model.predict([inp for inp, _ in pairs])
    assert [p.text for p in preds] == [reply for _, reply in pairs]
    assert all(p.source == "generated" and not p.abstained and p.groundedness == 1.0 for p in preds)
    assert all(0.5 < p.confidence <= 1.0 and 0 < p.score <= 1 for p in preds)


def _transformers_greedy(model: answer.AnswerModel, prompt: str) -> tuple[str, int]:
    """transformers' own greedy `generate` on one prompt: the reference the stages must match."""
    import torch

    from pipelines.stages.decoder.generator import prompt_ids

    cfg = model.cfg
    ids = prompt_ids(model.tokenizer, prompt, max(cfg.max_length - cfg.max_new_tokens, 8))
    with torch.inference_mode():
        out = model.model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=cfg.max_new_tokens, do_sample=False,
            pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id,
        )  # fmt: skip
    new = out[0, len(ids) :].tolist()
    return model.tokenizer.decode(new, skip_special_tokens=True).strip(), len(new)


def test_batched_generation_equals_one_by_one_and_transformers_greedy(answer_dir: Path):
    """Length buckets, one shared cache and rows leaving at EOS change nothing in a reply."""
    # prefill buckets of 2 rows (batch_size): 7 prompts make 4 buckets merged into one cache
    model = answer.load(answer_dir, AnswerConfig(**{**TINY, "batch_size": 2}))
    seen = [inp for inp, _ in answer.training_inputs(_cases(), DOCS, pool=_cases(2))]
    unseen = [
        AnswerInput(message="hello?", topic="payouts"),
        AnswerInput(message="fees " * 30, topic="refunds", passages=("A long passage. " * 12,)),
        AnswerInput(message="is the payout late, where is my money now", topic="payouts"),
    ]
    inputs = [unseen[0], *seen[:2], unseen[1], *seen[2:], unseen[2]]
    batched = model.generate(inputs)
    single = [model.generate([inp])[0] for inp in inputs]
    assert [(g.text, g.tokens) for g in batched] == [(g.text, g.tokens) for g in single]
    assert [g.mean_logprob for g in batched] == pytest.approx(
        [g.mean_logprob for g in single], abs=1e-4
    )
    # rows end at different steps (some at EOS, some at max_new_tokens) and prompts differ in
    # length, so the buckets and the shrinking batch were both exercised
    assert len({g.tokens for g in batched}) > 1
    reference = [
        _transformers_greedy(model, answer.prompt(i, model.cfg.max_passages)) for i in inputs
    ]
    assert [(g.text, g.tokens) for g in batched] == reference


def test_training_context_never_holds_the_case_own_reply():
    cases = _cases()  # one case per reply: a neighbour's reply always differs from the case's
    for inp, reply in answer.training_inputs(cases, DOCS):
        assert reply not in inp.passages
        assert any(p.startswith(inp.topic.capitalize()) for p in inp.passages)  # the topic's doc


def test_answer_abstains_with_a_reason_when_unsure(answer_dir: Path):
    strict = AnswerConfig(**TINY, min_confidence=0.999, min_groundedness=0.5)
    model = answer.load(answer_dir, strict)
    unsure = model.predict([AnswerInput(message="how do I refund a customer?", topic="refunds")])[0]
    assert unsure.abstained and unsure.text is None
    assert "low confidence" in unsure.reason and "ungrounded" in unsure.reason  # no context at all


def test_answer_returns_a_near_exact_retrieved_reply_when_unsure(answer_dir: Path):
    strict = AnswerConfig(**TINY, min_confidence=0.999, retrieved_match_similarity=0.9)
    model = answer.load(answer_dir, strict)
    stored = RetrievedReply(
        message="how do I refund a customer ?", reply="Stored reply for refunds."
    )
    far = RetrievedReply(message="something else entirely", reply="Other reply.")
    near_input = AnswerInput(
        message="How do I refund a customer?", topic="refunds", matches=(far, stored)
    )
    far_input = AnswerInput(message="How do I refund a customer?", topic="refunds", matches=(far,))
    near, no_match = model.predict([near_input, far_input])
    assert (
        near.source == "retrieved"
        and near.text == "Stored reply for refunds."
        and not near.abstained
    )
    assert "retrieved reply" in near.reason and near.score >= 0.9
    assert no_match.abstained and no_match.source is None


def test_answer_evaluate_reports_text_metrics(answer_dir: Path):
    metrics = answer.evaluate(answer.load(answer_dir), _cases(), DOCS, pool=_cases(2))
    assert metrics["n"] == len(WORLD)
    assert metrics["rouge_l"] == pytest.approx(1.0) and metrics["exact_match_rate"] == 1.0
    assert metrics["coverage"] == 1.0 and metrics["abstain_rate"] == 0.0
    assert metrics["coverage_at_precision_0.9"] == 1.0


def test_missing_stage_folder_names_the_fix(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="casepilot train"):
        answer.load(tmp_path)


@pytest.mark.slow
def test_cli_trains_and_evaluates_answer(tmp_path: Path, home):
    from typer.testing import CliRunner

    from flows.cli.main import app
    from pipelines.data.contract import write_jsonl

    write_jsonl(_cases(2), tmp_path / "cases.jsonl")
    write_jsonl(DOCS, tmp_path / "docs.jsonl")
    (tmp_path / "params.yaml").write_text(json.dumps({"answer": TINY}))  # JSON is YAML
    common = ["--params", str(tmp_path / "params.yaml"), "--no-mlflow"]
    files = ["--cases", str(tmp_path / "cases.jsonl"), "--docs", str(tmp_path / "docs.jsonl")]
    trained = CliRunner().invoke(
        app, ["train", "answer", *files, "--val", str(tmp_path / "cases.jsonl"),
              "--out", str(tmp_path / "answer"), *common],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "answer" / "model.safetensors").is_file()
    evaluated = CliRunner().invoke(
        app, ["evaluate", "answer", "--model", str(tmp_path / "answer"), *files,
              "--json-out", str(tmp_path / "m.json"), *common],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 2 * len(WORLD)
