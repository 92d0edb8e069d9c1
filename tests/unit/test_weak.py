"""Weak supervision: LFs on crafted rows, the kNN vote, the whole pipeline on a synthetic world."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.config import SynthConfig, WeakConfig
from pipelines.data.contract import ContractError, LabeledCase, read_jsonl, write_jsonl
from pipelines.data.weak import LABELER, NOT_ANSWERABLE, LabelSpace, read_unlabeled, weak_label
from pipelines.data.weak import lfs as lf
from pipelines.data.weak.knn import knn_votes
from pipelines.data.weak.records import ABSTAIN, Taxonomy, unlabeled_from_case

SPACE = LabelSpace(("payouts", "refunds"))
NA = SPACE.not_answerable
MACROS = {
    "Hi! Standard payouts land in 2 business days. Track them under Balance → Payouts.": 0,
    "Hi! Open the payment under Payments and click Refund.": 1,
}


def row(message: str, reply: str = "", grams: frozenset[str] = frozenset(), context=False):
    return pd.Series(
        {"message": message, "agent_reply": reply, "has_context": context, "grams": grams}
    )


def test_reply_that_is_a_macro_votes_its_topic():
    macro = lf.reply_lf("reply_is_macro", MACROS, min_score=85)
    personalised = (
        "Hi Sam! Standard payouts land in 2 business days. Track them under Balance → Payouts"
    )
    assert macro(row("when do I get paid?", personalised)) == 0
    assert macro(row("refund?", "Hi! Open the payment under Payments and click Refund.")) == 1
    assert macro(row("hm", "Let me check with the team and get back to you tomorrow.")) == ABSTAIN
    assert macro(row("no reply yet")) == ABSTAIN


@pytest.mark.parametrize(
    ("message", "context", "expected"),
    [
        ("hi there", False, NA),
        ("hey, how's your day going?", False, NA),
        ("thanks, that worked!", False, NA),
        ("any news?", False, NA),
        ("any news?", True, ABSTAIN),  # a follow-up in a conversation may well be answerable
        ("Hi! How do I refund a customer who paid twice for the same order?", False, ABSTAIN),
        ("thanks! and where do I see the refund?", False, ABSTAIN),
    ],
)
def test_chit_chat_lfs_vote_not_answerable(message, context, expected):
    grams = frozenset(message.lower().replace("?", "").replace("!", "").split())
    chit_chat = lf.chit_chat_lfs(SPACE, topic_grams=frozenset({"refund", "payout"}))
    votes = {function(row(message, grams=grams, context=context)) for function in chit_chat}
    assert max(votes) == expected


def test_mined_keywords_are_distinctive_per_class():
    messages = [
        *(f"where is my payout number {i}" for i in range(5)),
        *(f"please refund order {i} to the customer" for i in range(5)),
        *("hello there friend" for _ in range(4)),
    ]
    labels = [0] * 5 + [1] * 5 + [NA] * 4
    keywords, analyzer = lf.mine_keywords(messages, labels, SPACE, WeakConfig(keyword_min_count=3))
    assert "payout" in keywords[0] and "refund" in keywords[1]
    assert NA not in keywords and "order" in keywords[1]  # chit-chat LFs judge NA
    keyword = lf.keyword_lf(keywords)
    assert keyword(row("can you refund it", grams=frozenset(analyzer("can you refund it")))) == 1
    assert keyword(row("what?", grams=frozenset(analyzer("what?")))) == ABSTAIN


def test_knn_votes_weighted_majority_and_abstains_when_far():
    gold = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]
    queries = np.array([[1, 0, 0], [0, 0.96, 0.28], [-1, 0, 0]], dtype=np.float32)
    labels, scores = knn_votes(gold, [0, 0, 1, 2], queries, k=3, min_similarity=0.5)
    assert labels.tolist() == [0, 1, ABSTAIN]
    assert scores[0] == pytest.approx(1.0) and scores[2] == 0.0


def test_read_unlabeled_takes_labeled_case_lines_and_names_bad_lines(tmp_path):
    case = LabeledCase(
        case_id="a",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        message="when is my payout?",
        answerable=True,
        topic="payouts",
        label_source="human",
    )
    path = tmp_path / "in.jsonl"
    write_jsonl([case], path)
    assert read_unlabeled(path) == [unlabeled_from_case(case)]
    path.write_text('{"case_id": "b"}\n', encoding="utf-8")
    with pytest.raises(ContractError, match="in.jsonl:1"):
        read_unlabeled(path)


# ---------------------------------------------------------------- the pipeline, with MiniLM


@pytest.fixture(scope="module")
def world():
    synth = pytest.importorskip(
        "pipelines.data.synth", reason="the synthetic world is not built yet"
    )
    return synth.generate_world(SynthConfig(cases_per_day=220), seed=5, days=2)


@pytest.fixture(scope="module")
def embedder():
    from pipelines.stages.encoder.embedder import load_embedder

    return load_embedder("minilm")


def _truth(day) -> dict[str, str | None]:
    truth = {case.case_id: case.topic for case in day.cases}
    truth.update({flip.case_id: flip.true_topic for flip in day.flips})
    return truth


@pytest.mark.slow
def test_weak_labels_match_the_truth_on_a_synthetic_world(world, embedder):
    taxonomy = Taxonomy(
        tuple(t.name for t in world.topics), {t.name: t.macros for t in world.topics}
    )
    gold, fresh = world.days[0].cases, world.days[1].cases
    result = weak_label(gold, [unlabeled_from_case(c) for c in fresh], taxonomy, embedder=embedder)

    truth = _truth(world.days[1])
    correct = [truth[case.case_id] == case.topic for case in result.cases]
    assert np.mean(correct) >= 0.8
    report = result.report
    assert report.coverage >= 0.8
    assert report.labeled + report.all_abstained == report.unlabeled == len(fresh)
    assert report.holdout_accuracy is not None and report.holdout_accuracy >= 0.8
    assert 0.0 <= report.holdout_majority_accuracy <= 1.0  # the baseline it is judged by
    names = [stats.name for stats in report.lfs]
    assert names[:2] == ["reply_is_macro", "reply_is_non_answer"] and names[-1] == "knn_minilm"
    for stats in report.lfs:
        assert 0.0 <= stats.conflicts <= stats.overlaps <= stats.coverage <= 1.0
    by_name = {stats.name: stats for stats in report.lfs}
    assert by_name["reply_is_macro"].holdout_accuracy >= 0.9
    assert by_name["reply_is_non_answer"].polarity == (NOT_ANSWERABLE,)
    for case in result.cases:
        assert case.label_source == "weak" and case.labeler == LABELER
        assert 0.0 <= case.label_confidence <= 1.0
        assert (case.topic is None) == (not case.answerable)


@pytest.mark.slow
def test_cli_writes_weak_labels_and_prints_the_lf_table(world, embedder, tmp_path):
    from flows.cli.main import app
    from pipelines.data.synth import write_world

    write_world(world, tmp_path / "world")
    gold, unlabeled = sorted((tmp_path / "world" / "batches").glob("day-*.jsonl"))
    out, report = tmp_path / "weak.jsonl", tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "weak-label",
            "--gold",
            str(gold),
            "--unlabeled",
            str(unlabeled),
            "--taxonomy",
            str(tmp_path / "world" / "taxonomy.json"),
            "--out",
            str(out),
            "--report",
            str(report),
            "--params",
            str(tmp_path / "absent.yaml"),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "reply_is_macro" in result.output and "label model: labeled" in result.output
    cases = read_jsonl(out, LabeledCase)
    written = json.loads(report.read_text())
    assert len(cases) == written["labeled"] > 0.8 * written["unlabeled"]
    assert {lf["name"] for lf in written["lfs"]} >= {"mined_keywords", "knn_minilm"}
