"""The frozen-embedding floor of the cascade benchmark (`bench_cascade_synth.py --frozen`).

trigger and topic are logistic regressions on frozen MiniLM embeddings (the baseline issue 4 asks
every benchmark to report), with their abstain thresholds chosen on validation by the project's
own `threshold_for_precision`; retrieve is the real Qdrant index; answer is the real answer stage's
decision rule with no generation (a near-exact retrieved reply, else an abstention with its
reason). Minutes instead of the hour the fine-tuned stages take on a loaded 2-core machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.evaluate.calibration import threshold_for_precision
from pipelines.stages.encoder.classifier import context_text


def _text(message: str, context: Any) -> str:
    """What the frozen classifiers embed: the last earlier turn, then the message."""
    before = context_text(context)
    return f"{before}\n{message}" if before else message


@dataclass(frozen=True)
class FrozenPrediction:
    label: str
    probability: float
    emitted: bool
    threshold: float


class FrozenClassifier:
    """Logistic regression on frozen embeddings; score = p(positive) or the top probability."""

    def __init__(self, embed, labels: Sequence[str], positive: str | None, regularization: float):
        from sklearn.linear_model import LogisticRegression

        self.embed, self.positive = embed, positive
        self.labels = sorted(set(labels))
        self.model = LogisticRegression(C=regularization, max_iter=3000, class_weight="balanced")
        self.threshold = 0.5

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> FrozenClassifier:
        self.model.fit(self.embed(list(texts)), [self.labels.index(x) for x in labels])
        return self

    def _scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        probs = self.model.predict_proba(self.embed(list(texts)))
        if self.positive is not None:
            return probs[:, self.labels.index(self.positive)], probs.argmax(1)
        return probs.max(1), probs.argmax(1)

    def calibrate(self, texts: Sequence[str], truth: Sequence[str], target: float) -> dict:
        """Choose the abstain threshold on validation; returns what it achieved there."""
        scores, top = self._scores(texts)
        if self.positive is not None:
            correct = [t == self.positive for t in truth]
        else:
            correct = [self.labels[i] == t for i, t in zip(top, truth, strict=True)]
        choice = threshold_for_precision(scores, correct, target, floor=1 / len(self.labels))
        self.threshold = choice.threshold
        return choice.__dict__

    def predict(self, messages: Sequence[str], contexts=None) -> list[FrozenPrediction]:
        contexts = contexts if contexts is not None else [None] * len(messages)
        scores, top = self._scores([_text(m, c) for m, c in zip(messages, contexts, strict=True)])
        label = (lambda i: self.positive) if self.positive is not None else self.labels.__getitem__
        return [
            FrozenPrediction(label(int(i)), float(s), bool(s >= self.threshold), self.threshold)
            for s, i in zip(scores, top, strict=True)
        ]


class RetrievalOnlyAnswer:
    """The answer stage's own decision rule without a generator: retrieved reply or abstain."""

    def __init__(self, cfg) -> None:
        from pipelines.stages.answer import AnswerModel

        self.stage = AnswerModel(None, None, cfg, {"stage": "answer", "generator": "none"})

    def predict(self, batch):
        from pipelines.stages.decoder.generator import Generated

        silent = Generated(text="", mean_logprob=float("-inf"), tokens=0)
        return [self.stage.decide(inp, silent) for inp in batch]


def build_frozen_cascade(params, train, val, docs, work) -> tuple[Any, dict]:
    """The frozen-embedding cascade and the thresholds it chose on `val`."""
    from pipelines.cascade import Cascade
    from pipelines.stages import retrieve
    from pipelines.stages.encoder.embedder import load_embedder

    embed = load_embedder(params.retrieve.embedder).embed
    trigger = FrozenClassifier(embed, ["answerable", "not"], "answerable", 10.0)
    trigger.fit(
        [_text(c.message, c.context) for c in train],
        ["answerable" if c.answerable else "not" for c in train],
    )
    fitted = {
        "trigger": trigger.calibrate(
            [_text(c.message, c.context) for c in val],
            ["answerable" if c.answerable else "not" for c in val],
            params.trigger.target_precision,
        )
    }
    topical = [c for c in train if c.answerable and c.topic]
    topic = FrozenClassifier(embed, [c.topic for c in topical], None, 10.0)
    topic.fit([_text(c.message, c.context) for c in topical], [c.topic for c in topical])
    val_topical = [c for c in val if c.answerable and c.topic]
    fitted["topic"] = topic.calibrate(
        [_text(c.message, c.context) for c in val_topical],
        [c.topic for c in val_topical],
        params.topic.target_precision,
    )
    retrieve.train(
        params.retrieve,
        train,
        val,
        work / "models" / "retrieve",
        docs=docs,
        location=str(work / "qdrant"),
        data_version=f"frozen-{work.name}",
    )
    index = retrieve.load(work / "models" / "retrieve", location=str(work / "qdrant"))
    cascade = Cascade(
        trigger,
        topic,
        index,
        RetrievalOnlyAnswer(params.answer),
        tone=None,
        versions={"trigger": "frozen-logreg", "topic": "frozen-logreg", "answer": "retrieval-only"},
    )
    return cascade, fitted
