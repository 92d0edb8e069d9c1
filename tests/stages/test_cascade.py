"""The cascade with tiny real models: abstention reasons at each stage, batch == single, evaluation.

The trigger and topic here are test models (a scikit-learn logistic regression on frozen MiniLM
embeddings), the retriever is the real index in ':memory:', the answerer is a test model that
returns the best retrieved reply, and the tone model a test rewriter; all satisfy the cascade's
Protocols the real stages implement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest

from pipelines.cascade import Cascade
from pipelines.config import RetrieveConfig
from pipelines.data.contract import Suggestion
from pipelines.evaluate.cascade import evaluate_cascade, reason_kind
from pipelines.evaluate.text_metrics import faithfulness, groundedness, tone_score
from pipelines.stages import retrieve
from pipelines.stages.answer import AnswerInput, AnswerPrediction
from pipelines.stages.encoder.embedder import load_embedder
from pipelines.stages.index.qdrant import EMBED_ROWS
from tests.stages.test_retrieve import MESSAGES, REPLIES, case, toy_cases, toy_docs

CHIT_CHAT = [
    "thanks a lot, have a nice day",
    "hello!",
    "haha ok",
    "lovely weather today",
    "good morning to you",
    "cheers mate",
]


@dataclass(frozen=True)
class ClassifierPredictionForTest:
    label: str
    probability: float
    emitted: bool
    threshold: float


@dataclass
class LogRegTestClassifier:
    """Test model: logistic regression on frozen MiniLM embeddings (trigger or topic)."""

    model: object
    labels: list[str]
    threshold: float
    positive: str | None = None  # binary: the label whose probability is the score

    @classmethod
    def fit(cls, texts, labels, threshold, positive=None):
        from sklearn.linear_model import LogisticRegression

        names = sorted(set(labels))
        model = LogisticRegression(C=100.0, max_iter=2000).fit(
            load_embedder().embed(texts), [names.index(x) for x in labels]
        )
        return cls(model, names, threshold, positive)

    def predict(self, messages, contexts=None):
        probs = self.model.predict_proba(load_embedder().embed(list(messages)))
        out = []
        for row in probs:
            score = row[self.labels.index(self.positive)] if self.positive else row.max()
            out.append(
                ClassifierPredictionForTest(
                    self.labels[int(row.argmax())],
                    float(score),
                    bool(score >= self.threshold),
                    self.threshold,
                )
            )
        return out


@dataclass
class NearestReplyTestAnswerer:
    """Test model: answers with the best retrieved conversation's reply, scored by similarity."""

    min_confidence: float = 0.5

    def predict(self, batch: list[AnswerInput]) -> list[AnswerPrediction]:
        out = []
        for inp in batch:
            best = max(inp.matches, key=lambda m: m.similarity or 0.0, default=None)
            conf = (best.similarity or 0.0) if best else 0.0
            grounded = groundedness(best.reply, inp.passages) if best else 0.0
            ok = best is not None and conf >= self.min_confidence
            out.append(
                AnswerPrediction(
                    text=best.reply if ok else None,
                    confidence=conf,
                    groundedness=grounded,
                    score=float(np.sqrt(conf * grounded)),
                    source="generated" if ok else None,
                    abstained=not ok,
                    reason=None if ok else f"low confidence {conf:.2f} < {self.min_confidence}",
                )
            )
        return out


@dataclass(frozen=True)
class TonePredictionForTest:
    text: str
    kept_draft: bool
    faithfulness: float
    tone_score: float


@dataclass
class ReplaceTestRewriter:
    """Test model: rewrites by phrase replacement; keeps the draft when a fact is lost."""

    replacements: dict[str, str]
    min_faithfulness: float = 0.8

    def predict(self, drafts):
        out = []
        for draft in drafts:
            rewrite = draft
            for old, new in self.replacements.items():
                rewrite = rewrite.replace(old, new)
            faith = faithfulness(draft, rewrite)
            kept = faith < self.min_faithfulness
            text = draft if kept else rewrite
            out.append(TonePredictionForTest(text, kept, faith, tone_score(text)))
        return out


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    cases = toy_cases()
    trigger = LogRegTestClassifier.fit(
        [c.message for c in cases] + CHIT_CHAT,
        ["answerable"] * len(cases) + ["not_answerable"] * len(CHIT_CHAT),
        0.5,
        "answerable",
    )
    topic = LogRegTestClassifier.fit([c.message for c in cases], [c.topic for c in cases], 0.4)
    index, _, _ = retrieve.build(
        RetrieveConfig(top_k=5, min_similarity=0.3),
        cases,
        toy_docs(),
        location=":memory:",
        data_version="cascade-test",
    )
    return Cascade(
        trigger,
        topic,
        index,
        NearestReplyTestAnswerer(0.5),
        ReplaceTestRewriter({"Sorry about that!": "Oh no, sorry about that!"}),
        versions={"trigger": "t-test", "retrieve": index.version},
    )


def test_answerable_message_gets_the_reply_with_every_stage_score(cascade) -> None:
    s = cascade.suggest("my card got blocked at the shop today")
    assert s.stopped_at is None and s.abstain_reason is None and s.topic == "card_blocked"
    assert s.text == REPLIES["card_blocked"].replace(
        "Sorry about that!", "Oh no, sorry about that!"
    )
    assert {"trigger", "topic", "retrieve", "answer", "tone", "tone_faithfulness"} <= set(s.scores)
    assert s.versions["retrieve"].startswith("casepilot-retrieve-cascade-tes")
    assert s.latency_ms > 0 and s.source == "generated"


def test_trigger_abstains_on_chit_chat_with_reason(cascade) -> None:
    s = cascade.suggest("thank you so much, have a great day")
    assert s.text is None and s.stopped_at == "trigger"
    assert s.abstain_reason.startswith("trigger: p(answerable)=") and "< 0.500" in s.abstain_reason
    assert set(s.scores) == {"trigger"}


def test_each_later_stage_abstains_with_its_reason(cascade) -> None:
    message = "where is my refund"
    strict_topic = replace(cascade.topic, threshold=1.01)
    s = Cascade(cascade.trigger, strict_topic, cascade.retrieve, cascade.answer).suggest(message)
    assert s.stopped_at == "topic" and s.abstain_reason.startswith("topic: p(refund_status)=")

    index = cascade.retrieve
    strict_index = retrieve.RetrieveIndex(
        index.client,
        index.collection,
        index.embedder,
        index.cfg.model_copy(update={"min_similarity": 0.999}),
        index.info,
    )
    s = Cascade(cascade.trigger, cascade.topic, strict_index, cascade.answer).suggest(
        "refund still missing, where is it"
    )
    assert s.stopped_at == "retrieve" and s.abstain_reason.startswith("retrieve: best similarity=")

    s = Cascade(cascade.trigger, cascade.topic, index, NearestReplyTestAnswerer(1.01)).suggest(
        message
    )
    assert s.stopped_at == "answer" and s.abstain_reason.startswith("answer: low confidence")
    assert s.topic == "refund_status" and s.text is None


def test_tone_keeps_the_draft_when_a_fact_would_be_lost(cascade) -> None:
    lossy = ReplaceTestRewriter({"5 business days": "a few days"})
    s = Cascade(cascade.trigger, cascade.topic, cascade.retrieve, cascade.answer, lossy).suggest(
        "how long does a refund take"
    )
    assert s.text == REPLIES["refund_status"] and s.stopped_at is None
    assert s.scores["tone_kept_draft"] == 1.0 and s.scores["tone_faithfulness"] < 0.8


def test_a_retrieved_reply_is_not_rewritten_by_tone(cascade) -> None:
    @dataclass
    class RetrievingAnswerer(NearestReplyTestAnswerer):
        def predict(self, batch):
            return [p.model_copy(update={"source": "retrieved"}) for p in super().predict(batch)]

    rewriter = ReplaceTestRewriter({"Sorry about that!": "Oh no, sorry about that!"})
    s = Cascade(
        cascade.trigger, cascade.topic, cascade.retrieve, RetrievingAnswerer(0.5), rewriter
    ).suggest("my card got blocked at the shop today")
    assert s.source == "retrieved" and s.text == REPLIES["card_blocked"]  # an agent's own words
    assert "tone" not in s.scores


def test_answer_returns_the_near_exact_retrieved_reply_when_generation_is_unsure() -> None:
    from pipelines.config import AnswerConfig
    from pipelines.stages.answer import AnswerModel, RetrievedReply
    from pipelines.stages.decoder.generator import Generated

    model = AnswerModel(None, None, AnswerConfig(retrieved_match_similarity=0.65), {})
    reply = REPLIES["refund_status"]
    # worded differently (a low character ratio) but close in meaning: the retrieval score counts
    near = RetrievedReply(reply=reply, message="hi, refund not back yet?", similarity=0.8)
    asked = AnswerInput(
        message="how long does a refund take", topic="refund_status", passages=(reply,),
        matches=(near,),
    )  # fmt: skip
    sure = Generated(text=reply, mean_logprob=-0.05, tokens=12)
    wrong = Generated(text="Payouts arrive in 2 business days.", mean_logprob=-0.05, tokens=8)
    unsure = Generated(text=reply, mean_logprob=-5.0, tokens=12)
    agreed, contradicted, doubted = (model.decide(asked, g) for g in (sure, wrong, unsure))
    assert agreed.source == "generated" and agreed.text == reply
    assert contradicted.source == "retrieved" and contradicted.text == reply
    assert "contradicts a near-exact retrieved reply" in contradicted.reason
    assert doubted.source == "retrieved" and "low confidence" in doubted.reason
    far = asked.model_copy(update={"matches": (near.model_copy(update={"similarity": 0.5}),)})
    alone = model.decide(far, unsure)
    assert alone.abstained and alone.text is None and alone.reason.startswith("low confidence")


def test_batch_equals_single(cascade) -> None:
    messages = ["my card got blocked", "hello!", "how do I change my address", "where is my refund"]
    # more than EMBED_ROWS messages of varied length: the query embedder runs on
    # length-sorted chunks, which must not change a hit
    messages += [
        "my debit card is frozen and I am standing at the till with a full trolley of shopping",
        "refund?",
        "thanks a lot, have a nice day",
        "i moved house last month, how do I update the address on my account please",
        "card blocked",
        "when will the refund for my returned order reach my bank account",
        "new address",
        "why was my card declined",
    ]
    assert len(messages) > EMBED_ROWS
    batch = cascade.suggest_batch(messages)
    single = [cascade.suggest(m) for m in messages]
    strip = lambda s: s.model_dump(exclude={"latency_ms", "scores"})  # noqa: E731
    assert [strip(s) for s in batch] == [strip(s) for s in single]
    for b, s in zip(batch, single, strict=True):
        assert b.scores == pytest.approx(s.scores, abs=1e-4)
    assert [s.stopped_at for s in batch][:4] == [None, "trigger", None, None]


def test_end_to_end_evaluation_every_abstention_has_a_reason(cascade) -> None:
    val = [
        case(f"v{i}", m, t, REPLIES[t])
        for i, (t, ms) in enumerate(MESSAGES.items())
        for m in ms[:1]
    ]
    val += [case("n1", "thanks, bye!", None, None), case("n2", "hello there", None, None)]
    report = evaluate_cascade(cascade, val, match_threshold=0.8, figures=True)
    m = report.metrics
    assert m["abstentions_without_reason"] == 0 and m["n"] == 5 and m["n_answerable"] == 3
    assert m["coverage"] == pytest.approx(1.0) and m["false_emit_rate"] == 0.0
    assert 0 < m["precision"] <= 1 and m["trigger.recall"] == 1.0
    assert report.abstain_reasons == {"trigger: p(answerable)=# < #": 2}
    assert set(report.figures) == {"precision_coverage", "abstain_reasons"}
    assert reason_kind("answer: low confidence 0.21 < 0.35") == "answer: low confidence # < #"
    assert all(isinstance(s, Suggestion) for s in report.suggestions)


@pytest.mark.slow
def test_cascade_loads_every_real_stage_from_dirs(tmp_path) -> None:
    """Tiny real trigger/topic/answer/tone (a few steps) and the index, loaded from one folder."""
    from pipelines.cascade import load_cascade_from_dirs
    from pipelines.config import AnswerConfig, ToneConfig, TopicConfig, TriggerConfig
    from pipelines.stages import answer, tone, topic, trigger
    from pipelines.stages.encoder.classifier import build_tiny_encoder

    cases = [
        c.model_copy(update={"reply_draft": c.agent_reply.replace("I've", "I have")})
        for c in toy_cases()
    ]
    cases += [case(f"n{i}", m, None, None) for i, m in enumerate(CHIT_CHAT)]
    words = {w for c in cases for w in c.message.split()}
    base = build_tiny_encoder(tmp_path / "encoder", sorted(words))
    fast = {
        "base_model": str(base),
        "max_steps": 6,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
        "max_length": 32,
        "metric_for_best_model": "loss",
    }
    tiny = {
        "tiny_layers": 1,
        "tiny_hidden": 32,
        "tiny_heads": 2,
        "vocab_size": 300,
        "max_length": 160,
        "max_new_tokens": 12,
        "epochs": 2.0,
        "batch_size": 8,
    }
    models = tmp_path / "models"
    trigger.train(TriggerConfig(**fast), cases, cases, models / "trigger")
    topic.train(TopicConfig(**fast), cases, cases, models / "topic")
    retrieve.train(
        RetrieveConfig(top_k=5),
        cases,
        None,
        models / "retrieve",
        docs=toy_docs(),
        location=":memory:",
        data_version="dirs-test",
    )
    answer.train(AnswerConfig(**tiny), cases, [], models / "answer", docs=toy_docs())
    tone.train(ToneConfig(**tiny, lora=False), cases, [], models / "tone")

    cascade = load_cascade_from_dirs(models, qdrant_location=":memory:")
    assert set(cascade.versions) == {"trigger", "topic", "retrieve", "answer", "tone"}
    assert cascade.versions["retrieve"].startswith("casepilot-retrieve-dirs-test-")
    messages = [c.message for c in cases]
    suggestions = cascade.suggest_batch(messages)
    assert len(suggestions) == len(messages)
    assert all(s.text is not None or s.abstain_reason for s in suggestions)
    assert all(
        s.stopped_at is None or s.abstain_reason.startswith(f"{s.stopped_at}:") for s in suggestions
    )
    # a few-step tiny model scores every message about the same, right at its threshold, so
    # batch vs single is compared on the scores (padding noise ~1e-10), not on the decisions
    single = [cascade.suggest(m).scores["trigger"] for m in messages]
    assert [s.scores["trigger"] for s in suggestions] == pytest.approx(single, abs=1e-6)

    from typer.testing import CliRunner

    from flows.cli.main import app
    from pipelines.data.contract import write_jsonl

    write_jsonl(cases, tmp_path / "val.jsonl")
    runner = CliRunner()
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            "cascade",
            "--models",
            str(models),
            "--cases",
            str(tmp_path / "val.jsonl"),
            "--location",
            ":memory:",
            "--no-mlflow",
            "--json-out",
            str(tmp_path / "e2e.json"),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads((tmp_path / "e2e.json").read_text())
    assert result["metrics"]["abstentions_without_reason"] == 0 and result["metrics"]["n"] == 15
    shown = runner.invoke(
        app, ["predict", "where is my refund", "--models", str(models), "--location", ":memory:"]
    )
    assert shown.exit_code == 0, shown.output
    assert "trigger" in shown.output and "cascade decision" in shown.output


@pytest.mark.slow
def test_cascade_evaluation_is_logged_to_mlflow(cascade, home) -> None:
    import mlflow

    from pipelines.config import params_from_mapping
    from pipelines.evaluate.cascade import log_to_mlflow

    params = params_from_mapping({}, home=home, env={})
    val = [
        case("v1", "where is my refund", "refund_status", REPLIES["refund_status"]),
        case("n1", "thanks, bye!", None, None),
    ]
    report = evaluate_cascade(cascade, val)
    run_id = log_to_mlflow(report, params, logged={"cases": "toy"})
    run = mlflow.MlflowClient(params.mlflow_tracking_uri).get_run(run_id)
    assert run.data.metrics["coverage"] == 1.0 and run.data.metrics["precision"] == 1.0
    artifacts = {
        a.path for a in mlflow.MlflowClient(params.mlflow_tracking_uri).list_artifacts(run_id)
    }
    assert {"abstain_reasons.json", "precision_coverage.png", "abstain_reasons.png"} <= artifacts
