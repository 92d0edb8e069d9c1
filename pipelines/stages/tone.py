"""The tone stage: rewrite a reply in house style, and keep the draft when a fact would be lost.

A decoder-only rewriter fine-tuned on (robotic `reply_draft` → house-style `agent_reply`) pairs,
plus a share of (reply → same reply) pairs so text already in house style is left alone. The
suggested deployment is the answer stage's base with its own LoRA adapter (`tone.base_model`
pointing at the trained answer folder, `tone.lora: true`); with `base_model: null` a tiny model
is trained in full. Every rewrite is checked: the facts of the draft (amounts, numbers, menu
paths, placeholders, product terms) must survive (`faithfulness >= min_faithfulness`), or the
draft is kept, with the reason. The tone score is the proxy of `text_metrics.tone_score`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipelines.config import ToneConfig
from pipelines.data.contract import LabeledCase
from pipelines.evaluate.text_metrics import (
    exact_match,
    faithfulness,
    has_term,
    lost_facts,
    rouge_l,
    strip_menu_paths,
    tone_score,
)
from pipelines.stages.decoder import generator
from pipelines.stages.kinds import DecoderStage

_NAME = re.compile(r"\b[A-Z][A-Za-z0-9]+(?: [A-Z][A-Za-z0-9]+)*")


class TonePrediction(BaseModel):
    """The rewrite (or the kept draft) with its faithfulness and tone score."""

    model_config = ConfigDict(frozen=True)
    text: str  # what the cascade shows: the rewrite, or the draft when it was kept
    draft: str
    rewrite: str
    faithfulness: float
    tone_score: float
    kept_draft: bool
    reason: str | None = None
    lost_facts: tuple[str, ...] = ()


def prompt(draft: str) -> str:
    """The rewriter's prompt for one draft."""
    return f"<|draft|>{draft}\n<|rewrite|>"


def tone_pairs(cases: Sequence[LabeledCase]) -> list[tuple[str, str]]:
    """(draft, house-style reply) for each case that has both."""
    return [(c.reply_draft, c.agent_reply) for c in cases if c.reply_draft and c.agent_reply]


def product_terms(
    pairs: Sequence[tuple[str, str]], *, min_count: int = 2, keep_share: float = 0.9
) -> list[str]:
    """Capitalised names inside draft sentences that house-style replies (almost) always keep."""
    seen: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for draft, reply in set(pairs):  # each distinct pair once: macros repeat many times
        names = set()
        for sentence in re.split(r"(?<=[.!?])\s+", strip_menu_paths(draft)):
            _, _, rest = sentence.partition(" ")  # a sentence's first word is capitalised anyway
            names |= set(_NAME.findall(rest))
        for name in names:
            seen[name] += 1
            kept[name] += has_term(reply, name)
    return sorted(
        n for n, count in seen.items() if count >= min_count and kept[n] / count >= keep_share
    )


class ToneModel:
    """A trained rewriter with its faithfulness threshold; `predict` is batched."""

    def __init__(self, model: Any, tokenizer: Any, cfg: ToneConfig, meta: dict[str, Any]):
        self.model, self.tokenizer, self.cfg, self.meta = model, tokenizer, cfg, meta
        self.product_terms: list[str] = list(meta.get("product_terms", []))

    def rewrite(self, drafts: Sequence[str]) -> list[str]:
        """Greedy rewrites of the drafts, unchecked."""
        gens = generator.generate(
            self.model, self.tokenizer, [prompt(d) for d in drafts],
            max_length=self.cfg.max_length, max_new_tokens=self.cfg.max_new_tokens,
            batch_size=self.cfg.batch_size,
        )  # fmt: skip
        return [g.text for g in gens]

    def check(self, draft: str, rewrite: str) -> TonePrediction:
        """Keep the rewrite if the draft's facts survive it, else keep the draft with the reason."""
        faith = faithfulness(draft, rewrite, self.product_terms)
        lost = tuple(lost_facts(draft, rewrite, self.product_terms))
        if not rewrite.strip():
            reason = "empty rewrite"
        elif faith < self.cfg.min_faithfulness:
            limit = self.cfg.min_faithfulness
            reason = f"unfaithful rewrite {faith:.2f} < {limit}: lost {', '.join(lost)}"
        else:
            return TonePrediction(
                text=rewrite, draft=draft, rewrite=rewrite, faithfulness=faith,
                tone_score=tone_score(rewrite), kept_draft=False, lost_facts=lost,
            )  # fmt: skip
        return TonePrediction(
            text=draft, draft=draft, rewrite=rewrite, faithfulness=faith,
            tone_score=tone_score(draft), kept_draft=True, reason=reason, lost_facts=lost,
        )  # fmt: skip

    def predict(self, drafts: Sequence[str]) -> list[TonePrediction]:
        """Checked rewrites for a batch of drafts, in order."""
        return [self.check(d, r) for d, r in zip(drafts, self.rewrite(drafts), strict=True)]


def train(
    cfg: ToneConfig,
    train_cases: Sequence[LabeledCase],
    val_cases: Sequence[LabeledCase],
    out_dir: Path,
    *,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Fine-tune the rewriter on draft → reply pairs and save it (with stage.json) to out_dir."""
    out_dir = Path(out_dir)
    pairs = tone_pairs(train_cases)
    if not pairs:
        raise ValueError("no training pairs: no case has both reply_draft and agent_reply")
    rng = random.Random(cfg.seed)
    replies = [reply for _, reply in pairs]
    identity = [(r, r) for r in rng.sample(replies, round(cfg.identity_share * len(replies)))]
    examples = [generator.Example(prompt(d), r) for d, r in pairs + identity]
    val = [generator.Example(prompt(d), r) for d, r in tone_pairs(val_cases)]
    corpus = [text for pair in pairs for text in pair]
    model, tokenizer, base = generator.load_base(cfg, corpus)
    model, report = generator.fine_tune(
        cfg, model, tokenizer, examples, val, out_dir / "trainer", base=base, callbacks=callbacks
    )
    meta = {
        "stage": "tone",
        "config": cfg.model_dump(mode="json"),
        "fit": report.__dict__,
        "n_train": len(examples),
        "n_val": len(val),
        "product_terms": product_terms(pairs),
        "versions": generator.versions(),
    }
    return generator.save_generator(model, tokenizer, out_dir, meta)


def load(model_dir: Path, cfg: ToneConfig | None = None) -> ToneModel:
    """Load a saved tone stage; `cfg` overrides the threshold saved with it."""
    model, tokenizer, meta = generator.load_generator(model_dir)
    return ToneModel(model, tokenizer, cfg or ToneConfig.model_validate(meta["config"]), meta)


def evaluate(model: ToneModel, cases: Sequence[LabeledCase]) -> dict[str, float]:
    """Faithfulness, kept-draft rate, tone score gain and ROUGE-L against the house-style reply."""
    pairs = tone_pairs(cases)
    if not pairs:
        raise ValueError(
            "no case has both reply_draft and agent_reply to evaluate the tone stage on"
        )
    preds = model.predict([d for d, _ in pairs])
    refs = [r for _, r in pairs]
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
    draft_tone = mean([tone_score(d) for d, _ in pairs])
    out_tone = mean([p.tone_score for p in preds])
    return {
        "n": float(len(pairs)),
        "faithfulness": mean([p.faithfulness for p in preds]),
        "kept_draft_rate": mean([p.kept_draft for p in preds]),
        "tone_score": out_tone,
        "tone_score_draft": draft_tone,
        "tone_score_reference": mean([tone_score(r) for r in refs]),
        "tone_gain": out_tone - draft_tone,
        "rouge_l": mean([rouge_l(p.text, r) for p, r in zip(preds, refs, strict=True)]),
        "rouge_l_rewrite": mean([rouge_l(p.rewrite, r) for p, r in zip(preds, refs, strict=True)]),
        "rouge_l_draft": mean([rouge_l(d, r) for d, r in pairs]),
        "exact_match_rate": mean(
            [exact_match(p.text, r) for p, r in zip(preds, refs, strict=True)]
        ),
    }


STAGE_IMPL = DecoderStage(
    "tone",
    "rouge_l_rewrite",
    train=lambda cfg, tr, va, out, inputs: train(cfg, tr, va, out, callbacks=inputs.callbacks),
    load=load,
    evaluate=lambda model, cases, inputs: evaluate(model, cases),
    pairs=lambda cfg, cases, inputs: [(prompt(d), r) for d, r in tone_pairs(cases)],
)
