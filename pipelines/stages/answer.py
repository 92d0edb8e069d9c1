"""The answer stage: a decoder-only LM writes the reply from the message and the retrieved context.

Input: the message, its topic and the retrieved context (resolved replies and doc passages,
best first). Output: the reply with its confidence (exp of the mean token log-probability),
groundedness (share of its words found in the context) and their combined score, or an
abstention with its reason. When generation is unsure — below a threshold, or contradicting
the reply — and a retrieved conversation is a near-exact match for the message (similarity ≥
`retrieved_match_similarity`: the retrieval's embedding cosine, or a character-level ratio when
no score came with it), the stage returns that conversation's reply as is, marked
`source="retrieved"`. Training builds the context from the training data itself (the most
similar other resolved cases of the same topic plus the topic's doc), never the case's own reply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.config import AnswerConfig
from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.evaluate.text_metrics import exact_match, groundedness, near_match, rouge_l
from pipelines.stages.answer_inputs import (
    AnswerInput,
    AnswerPrediction,
    RetrievedReply,
    prompt,
    training_inputs,
)
from pipelines.stages.decoder import generator


def _similarity(message: str, match: RetrievedReply) -> float:
    """How near-exact a retrieved conversation is: its retrieval score, else a text ratio.

    The embedding cosine sees through what varies between two askings of the same question
    (greetings, amounts, dates, typos) where a character ratio does not; the ratio is the
    fallback for matches that come without a score (training-time context).
    """
    from rapidfuzz import fuzz, utils

    if match.similarity is not None:
        return match.similarity
    if match.message is not None:
        return fuzz.ratio(message, match.message, processor=utils.default_process) / 100.0
    return 0.0


class AnswerModel:
    """A trained answer generator with its thresholds; `predict` is batched."""

    def __init__(self, model: Any, tokenizer: Any, cfg: AnswerConfig, meta: dict[str, Any]):
        self.model, self.tokenizer, self.cfg, self.meta = model, tokenizer, cfg, meta

    def generate(self, batch: Sequence[AnswerInput]) -> list[generator.Generated]:
        """Greedy replies for the batch, before any threshold is applied."""
        prompts = [prompt(inp, self.cfg.max_passages) for inp in batch]
        return generator.generate(
            self.model, self.tokenizer, prompts,
            max_length=self.cfg.max_length, max_new_tokens=self.cfg.max_new_tokens,
            batch_size=self.cfg.batch_size,
        )  # fmt: skip

    def decide(self, inp: AnswerInput, gen: generator.Generated) -> AnswerPrediction:
        """Apply the thresholds to one generated reply; fall back to a near-exact retrieved one.

        A generation that contradicts a near-exact retrieved reply (what an agent sent for
        the same question) counts as unsure too, so the agent's words win.
        """
        cfg = self.cfg
        confidence = gen.confidence
        grounded = groundedness(gen.text, [inp.message, *inp.passages])
        score = math.sqrt(confidence * grounded)
        scored = [(_similarity(inp.message, m), m) for m in inp.matches]
        best_sim, best = max(scored, key=lambda pair: pair[0], default=(0.0, None))
        near = best if best is not None and best_sim >= cfg.retrieved_match_similarity else None
        doubts = []
        if not gen.text:
            doubts.append("empty generation")
        if confidence < cfg.min_confidence:
            doubts.append(f"low confidence {confidence:.2f} < {cfg.min_confidence}")
        if grounded < cfg.min_groundedness:
            doubts.append(f"ungrounded {grounded:.2f} < {cfg.min_groundedness}")
        if near is not None and gen.text and not near_match(gen.text, near.reply):
            doubts.append("contradicts a near-exact retrieved reply")
        if not doubts:
            return AnswerPrediction(
                text=gen.text, confidence=confidence, groundedness=grounded, score=score,
                source="generated", abstained=False,
            )  # fmt: skip
        if near is not None:
            return AnswerPrediction(
                text=near.reply, confidence=confidence, groundedness=1.0, score=best_sim,
                source="retrieved", abstained=False,
                reason=f"{'; '.join(doubts)}; returned a retrieved reply ({best_sim:.2f} similar)",
            )  # fmt: skip
        return AnswerPrediction(
            text=None, confidence=confidence, groundedness=grounded, score=score,
            source=None, abstained=True, reason="; ".join(doubts),
        )  # fmt: skip

    def predict(self, batch: Sequence[AnswerInput]) -> list[AnswerPrediction]:
        """Replies or abstentions for a batch of inputs, in order."""
        return [self.decide(inp, gen) for inp, gen in zip(batch, self.generate(batch), strict=True)]


def train(
    cfg: AnswerConfig,
    train_cases: Sequence[LabeledCase],
    val_cases: Sequence[LabeledCase],
    out_dir: Path,
    *,
    docs: Sequence[KnowledgeDoc] = (),
    callbacks: Sequence[Any] = (),
) -> Path:
    """Fine-tune the answer generator; save weights, tokenizer and stage.json to out_dir."""
    out_dir = Path(out_dir)
    pairs = training_inputs(
        train_cases, docs, max_passages=cfg.max_passages, passage_chars=cfg.passage_chars
    )
    val_pairs = training_inputs(
        val_cases,
        docs,
        pool=train_cases,
        max_passages=cfg.max_passages,
        passage_chars=cfg.passage_chars,
    )
    corpus = (
        [c.message for c in train_cases]
        + [r for _, r in pairs]
        + [f"{d.title}. {d.body}" for d in docs]
    )
    model, tokenizer, base = generator.load_base(cfg, corpus)
    to_example = lambda pair: generator.Example(prompt(pair[0], cfg.max_passages), pair[1])  # noqa: E731
    model, report = generator.fine_tune(
        cfg, model, tokenizer, [to_example(p) for p in pairs], [to_example(p) for p in val_pairs],
        out_dir / "trainer", base=base, callbacks=callbacks,
    )  # fmt: skip
    meta = {
        "stage": "answer",
        "config": cfg.model_dump(mode="json"),
        "fit": report.__dict__,
        "n_train": len(pairs),
        "n_val": len(val_pairs),
        "versions": generator.versions(),
    }
    return generator.save_generator(model, tokenizer, out_dir, meta)


def load(model_dir: Path, cfg: AnswerConfig | None = None) -> AnswerModel:
    """Load a saved answer stage; `cfg` overrides the thresholds saved with it."""
    model, tokenizer, meta = generator.load_generator(model_dir)
    return AnswerModel(model, tokenizer, cfg or AnswerConfig.model_validate(meta["config"]), meta)


def evaluate(
    model: AnswerModel,
    cases: Sequence[LabeledCase],
    docs: Sequence[KnowledgeDoc] = (),
    *,
    pool: Sequence[LabeledCase] | None = None,
    near_threshold: float = 0.8,
) -> dict[str, float]:
    """ROUGE-L, exact / near match, groundedness, coverage and abstain rate on resolved cases.

    Context comes from `pool` (e.g. the training cases) as in training. Rates over emitted
    replies are the stage's precision; `rouge_l_all` counts an abstention as 0.
    """
    pairs = training_inputs(
        cases,
        docs,
        pool=pool,
        max_passages=model.cfg.max_passages,
        passage_chars=model.cfg.passage_chars,
    )
    if not pairs:
        raise ValueError(
            "no resolved cases (answerable, with topic and agent_reply) to evaluate on"
        )
    inputs = [inp for inp, _ in pairs]
    generated = model.generate(inputs)
    preds = [model.decide(inp, gen) for inp, gen in zip(inputs, generated, strict=True)]
    refs = [ref for _, ref in pairs]
    emitted = [(p, r) for p, r in zip(preds, refs, strict=True) if not p.abstained]
    raw_near = [near_match(g.text, r, near_threshold) for g, r in zip(generated, refs, strict=True)]
    raw_scores = [
        math.sqrt(g.confidence * groundedness(g.text, [i.message, *i.passages]))
        for i, g in zip(inputs, generated, strict=True)
    ]
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
    return {
        "n": float(len(pairs)),
        "coverage": len(emitted) / len(pairs),
        "abstain_rate": 1 - len(emitted) / len(pairs),
        "rouge_l": mean([rouge_l(p.text, r) for p, r in emitted]),
        "rouge_l_all": mean(
            [
                rouge_l(p.text, r) if not p.abstained else 0.0
                for p, r in zip(preds, refs, strict=True)
            ]
        ),
        "rouge_l_generated": mean(
            [rouge_l(g.text, r) for g, r in zip(generated, refs, strict=True)]
        ),
        "exact_match_rate": mean([exact_match(p.text, r) for p, r in emitted]),
        "near_match_rate": mean([near_match(p.text, r, near_threshold) for p, r in emitted]),
        "near_match_generated": mean(raw_near),
        "groundedness": mean([p.groundedness for p, _ in emitted]),
        "retrieved_rate": mean([p.source == "retrieved" for p in preds]),
        "mean_confidence": mean([g.confidence for g in generated]),
        "coverage_at_precision_0.9": _coverage_at_precision(raw_scores, raw_near, 0.9),
    }


def _coverage_at_precision(scores: list[float], correct: list[bool], precision: float) -> float:
    """Coverage the generator alone would reach at `precision` near-match precision, by score."""
    from pipelines.evaluate.evaluation import selective_metrics

    coverage = 0.0
    for cut in sorted(set(scores), reverse=True):
        sel = selective_metrics(scores, correct, cut)
        if sel["selective_precision"] >= precision:
            coverage = sel["coverage"]
    return coverage


# The answer stage's `Stage` implementation (pipelines.stages.base), found by the registry.
from pipelines.stages.kinds import DecoderStage  # noqa: E402

STAGE_IMPL = DecoderStage(
    "answer",
    "rouge_l_generated",  # raw generations vs the agent's reply, before thresholds
    train=lambda cfg, tr, va, out, inputs: train(
        cfg, tr, va, out, docs=inputs.docs, callbacks=inputs.callbacks
    ),
    load=load,
    evaluate=lambda model, cases, inputs: evaluate(model, cases, inputs.docs, pool=inputs.pool),
    pairs=lambda cfg, cases, inputs: [
        (prompt(inp, cfg.max_passages), ref)
        for inp, ref in training_inputs(
            cases,
            inputs.docs,
            pool=inputs.pool,
            max_passages=cfg.max_passages,
            passage_chars=cfg.passage_chars,
        )  # fmt: skip
    ],
    record_input=lambda record: AnswerInput.model_validate({"topic": "", **record}),
)
