"""The synthetic support world of Paylane: days of labeled cases, docs, label noise and drift.

Everything derives from the seed: each day has its own `random.Random` seeded with a string
(hashed with SHA-512 by `random`, never Python's `hash()`), so a day's cases do not depend on
how many days are generated, and the clock is a fixed start date, never the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from pipelines.config import SynthConfig
from pipelines.data.contract import KnowledgeDoc, LabeledCase, Record, UnanswerableKind
from pipelines.data.synth.catalog import Catalog, Topic, load_catalog
from pipelines.data.synth.messages import MessageWriter
from pipelines.data.synth.pii import PiiMaker, make_fakers

WORLD_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # day 1, 09:00 UTC: support opens
SUPPORT_SECONDS = 14 * 3600  # cases arrive between 09:00 and 23:00
DOCS_WRITTEN = datetime(2025, 12, 1, tzinfo=UTC)
UNANSWERABLE_MIX: dict[UnanswerableKind, float] = {
    "chit_chat": 0.25,
    "thanks": 0.3,
    "missing_context": 0.25,
    "out_of_scope": 0.2,
}
THANKS_WITH_CONTEXT_SHARE = 0.5  # a "thanks" often closes an earlier exchange
# A "missing context" message is often a real follow-up ("and does that include weekends?")
# that arrived without the exchange it refers to: the same words are answerable only in context.
CONTEXT_FREE_FOLLOWUP_SHARE = 0.5
GENERIC_REPLY_SHARE = 0.7  # agents answer most non-answerable messages with a short line
RELATED_FLIP_SHARE = 0.5  # a noisy label lands on a related topic this often


class LabelFlip(Record):
    """A case whose topic label was flipped by label noise (the truth/ sidecar)."""

    case_id: str = Field(min_length=1)
    true_topic: str
    noisy_topic: str


@dataclass(frozen=True)
class TaxonomyTopic:
    name: str
    title: str
    description: str
    introduced_day: int
    macros: tuple[str, ...]


@dataclass(frozen=True)
class DayBatch:
    day: int
    cases: tuple[LabeledCase, ...]
    flips: tuple[LabelFlip, ...]
    pii_cases: int
    # (case_id, kind, value) of each planted PII value; kept in memory, never written out
    planted: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class World:
    """A generated world: the config it came from, its taxonomy, docs and daily batches."""

    config: SynthConfig
    topics: tuple[TaxonomyTopic, ...]
    docs: tuple[KnowledgeDoc, ...]
    days: tuple[DayBatch, ...]
    drift_day: int | None
    drift_topic: str | None


def day_start(day: int) -> datetime:
    """When support opens on simulated day `day` (1-based)."""
    return WORLD_START + timedelta(days=day - 1)


def resolve_config(
    cfg: SynthConfig, *, seed: int | None = None, days: int | None = None
) -> SynthConfig:
    """`cfg` with the seed and day count overridden (validated like params.yaml)."""
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if days is not None:
        update["days"] = days
    return SynthConfig.model_validate({**cfg.model_dump(), **update}) if update else cfg


def generate_world(
    cfg: SynthConfig,
    *,
    seed: int | None = None,
    days: int | None = None,
    on_day: Callable[[int], None] | None = None,
) -> World:
    """Generate the world for `cfg` (seed and days overridable); `on_day(day)` reports progress."""
    cfg = resolve_config(cfg, seed=seed, days=days)
    catalog = load_catalog()
    base = catalog.base_topics(cfg.topics)
    drift_day = (
        cfg.drift_from_day if cfg.drift_from_day and cfg.drift_from_day <= cfg.days else None
    )
    introduced = [(topic, 1) for topic in base]
    if drift_day is not None:
        introduced.append((catalog.drift_topic, drift_day))
    fakers = make_fakers()
    batches = []
    for day in range(1, cfg.days + 1):
        batches.append(_generate_day(cfg, catalog, base, day, drift_day, fakers))
        if on_day is not None:
            on_day(day)
    return World(
        config=cfg,
        topics=tuple(
            TaxonomyTopic(t.name, t.title, t.description, start, tuple(m.reply for m in t.macros))
            for t, start in introduced
        ),
        docs=tuple(
            KnowledgeDoc(
                doc_id=f"kb-{t.name.replace('_', '-')}",
                topic=t.name,
                title=t.doc.title,
                body=t.doc.body,
                updated_at=DOCS_WRITTEN if start == 1 else day_start(start),
            )
            for t, start in introduced
        ),
        days=tuple(batches),
        drift_day=drift_day,
        drift_topic=catalog.drift_topic.name if drift_day is not None else None,
    )


def _generate_day(
    cfg: SynthConfig,
    catalog: Catalog,
    base: tuple[Topic, ...],
    day: int,
    drift_day: int | None,
    fakers: dict[str, Any],
) -> DayBatch:
    rng = random.Random(f"casepilot-synth:{cfg.seed}:day-{day}")
    drifted = drift_day is not None and day >= drift_day
    writer = MessageWriter(
        catalog, rng, drifted=drifted, typo_rate=cfg.typo_rate, pii=PiiMaker(fakers, rng)
    )
    active = (*base, catalog.drift_topic) if drifted else base
    n = cfg.cases_per_day
    width = max(4, len(str(n)))
    offsets = sorted(rng.randrange(SUPPORT_SECONDS) for _ in range(n))
    unanswerable = set(rng.sample(range(n), round(n * cfg.not_answerable_share)))
    with_pii = set(rng.sample(range(n), round(n * cfg.pii_share)))
    answerable_ids = [i for i in range(n) if i not in unanswerable]
    noisy = set(rng.sample(answerable_ids, round(len(answerable_ids) * cfg.label_noise)))

    cases, flips, planted = [], [], []
    for i in range(n):
        case_id = f"d{day:03d}-{i + 1:0{width}d}"
        created_at = day_start(day) + timedelta(seconds=offsets[i])
        if i in unanswerable:
            fields = _unanswerable_case(writer, rng, base)
        else:
            topic = _pick_topic(rng, base, catalog.drift_topic if drifted else None, cfg)
            fields = _answerable_case(writer, rng, topic, cfg.followup_share)
            if i in noisy:
                noisy_topic = _flip(rng, topic, active)
                flips.append(
                    LabelFlip(case_id=case_id, true_topic=topic.name, noisy_topic=noisy_topic)
                )
                fields["topic"] = noisy_topic
        if i in with_pii:
            fields["message"] = writer.plant_pii(fields["message"])
            planted.append((case_id, *writer.planted[-1]))
        cases.append(
            LabeledCase(
                case_id=case_id,
                created_at=created_at,
                label_source="synthetic",
                labeler="synth",
                **fields,
            )
        )
    return DayBatch(
        day=day,
        cases=tuple(cases),
        flips=tuple(flips),
        pii_cases=len(with_pii),
        planted=tuple(planted),
    )


def _pick_topic(
    rng: random.Random, base: tuple[Topic, ...], drift_topic: Topic | None, cfg: SynthConfig
) -> Topic:
    if drift_topic is not None and rng.random() < cfg.drift_topic_share:
        return drift_topic
    return rng.choices(base, weights=[topic.weight for topic in base])[0]


def _answerable_case(
    writer: MessageWriter, rng: random.Random, topic: Topic, followup_share: float
) -> dict[str, Any]:
    """A resolved case whose reply is the macro of the intent the customer asked about."""
    if rng.random() < followup_share:
        macro = rng.choice([m for m in topic.macros if m.followups])
        earlier = rng.choice([m for m in topic.macros if m is not macro])
        conversation = writer.followup(topic, earlier, macro)
        message, context = conversation.message, conversation.context
    else:
        # each template equally likely, as before intents were tied to macros
        macro = rng.choices(topic.macros, weights=[len(m.asks) for m in topic.macros])[0]
        message, context = writer.question(topic, macro), ()
    return {
        "message": message,
        "context": context,
        "answerable": True,
        "topic": topic.name,
        "agent_reply": macro.reply,
        "reply_draft": macro.draft,
    }


def _unanswerable_case(
    writer: MessageWriter, rng: random.Random, base: tuple[Topic, ...]
) -> dict[str, Any]:
    kind = rng.choices(list(UNANSWERABLE_MIX), weights=list(UNANSWERABLE_MIX.values()))[0]
    earlier = None
    if kind == "thanks" and rng.random() < THANKS_WITH_CONTEXT_SHARE:
        topic = rng.choice(base)
        earlier = (topic, rng.choice(topic.macros))
    if kind == "missing_context" and rng.random() < CONTEXT_FREE_FOLLOWUP_SHARE:
        conversation = writer.context_free_followup(rng.choice(base))
    else:
        conversation = writer.unanswerable(kind, earlier)
    reply = writer.generic_reply(kind) if rng.random() < GENERIC_REPLY_SHARE else None
    return {
        "message": conversation.message,
        "context": conversation.context,
        "answerable": False,
        "topic": None,
        "agent_reply": reply,
        "unanswerable_kind": kind,
    }


def _flip(rng: random.Random, topic: Topic, active: tuple[Topic, ...]) -> str:
    """A wrong topic for a noisy label: often a related one, else any other active topic."""
    names = [t.name for t in active if t.name != topic.name]
    related = [name for name in topic.related if name in names]
    if related and rng.random() < RELATED_FLIP_SHARE:
        return rng.choice(related)
    return rng.choice(names)
