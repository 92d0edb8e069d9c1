"""The Paylane catalog: topics.yaml and phrasing.yaml loaded into validated, frozen models."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.data.contract import UnanswerableKind

PiiKind = Literal["email", "card", "phone", "iban", "name"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Macro(Frozen):
    """One intent of a topic: its canonical reply, a stiff draft, and what customers say.

    The reply is determined by what the customer asked, as in real support: each first message
    template (`asks`) and each follow-up belongs to exactly one macro.
    """

    reply: str = Field(min_length=1)
    draft: str = Field(min_length=1)
    asks: tuple[str, ...] = Field(min_length=1)
    followups: tuple[str, ...] = ()


class Doc(Frozen):
    title: str = Field(min_length=1)
    body: str = Field(min_length=1)


class Topic(Frozen):
    """One topic of the taxonomy with its help article and its macros (intents)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    description: str
    weight: float = Field(1.0, gt=0)
    related: tuple[str, ...] = ()
    doc: Doc
    macros: tuple[Macro, ...] = Field(min_length=2, max_length=4)

    @property
    def templates(self) -> tuple[str, ...]:
        """Every first-message template of the topic, macro by macro."""
        return tuple(ask for macro in self.macros for ask in macro.asks)

    @property
    def followups(self) -> tuple[str, ...]:
        """Every follow-up template of the topic, macro by macro."""
        return tuple(text for macro in self.macros for text in macro.followups)

    @model_validator(mode="after")
    def _enough_distinct_messages(self) -> Topic:
        templates, followups = self.templates, self.followups
        if len(templates) < 8 or len(set(templates)) != len(templates):
            raise ValueError(
                f"topics.yaml: {self.name} needs at least 8 distinct `asks` over its macros, "
                f"got {len(set(templates))} distinct of {len(templates)}"
            )
        if len(followups) < 2:
            raise ValueError(f"topics.yaml: {self.name} needs at least 2 `followups`")
        return self


class Drift(Frozen):
    slot_share: float = Field(ge=0, le=1)
    sentence_share: float = Field(ge=0, le=1)
    slots: dict[str, tuple[str, ...]]
    sentences: tuple[str, ...] = Field(min_length=1)


class Phrasing(Frozen):
    """Everything around the question: greetings, non-answerable messages, PII carriers, slots."""

    greetings: tuple[str, ...] = Field(min_length=1)
    backgrounds: tuple[str, ...] = Field(min_length=1)
    closers: tuple[str, ...] = Field(min_length=1)
    generic_followups: tuple[str, ...] = Field(min_length=1)
    unanswerable: dict[UnanswerableKind, tuple[str, ...]]
    generic_replies: dict[UnanswerableKind, tuple[str, ...]]
    pii_sentences: dict[PiiKind, tuple[str, ...]]
    slots: dict[str, tuple[str, ...]]
    drift: Drift

    @model_validator(mode="after")
    def _every_kind_covered(self) -> Phrasing:
        kinds = set(UnanswerableKind.__args__)
        for name in ("unanswerable", "generic_replies"):
            missing = kinds - set(getattr(self, name))
            if missing:
                raise ValueError(f"phrasing.yaml: {name} lacks {sorted(missing)}")
        missing_pii = set(PiiKind.__args__) - set(self.pii_sentences)
        if missing_pii:
            raise ValueError(f"phrasing.yaml: pii_sentences lacks {sorted(missing_pii)}")
        unknown = set(self.drift.slots) - set(self.slots)
        if unknown:
            raise ValueError(f"phrasing.yaml: drift.slots {sorted(unknown)} have no base pool")
        return self


class Catalog(Frozen):
    """The base topics (in traffic order), the topic launched at the drift day, and phrasing."""

    topics: tuple[Topic, ...] = Field(min_length=1)
    drift_topic: Topic
    phrasing: Phrasing

    @model_validator(mode="after")
    def _names_unique_and_related_known(self) -> Catalog:
        names = [topic.name for topic in self.all_topics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"topics.yaml: duplicate topic names {duplicates}")
        for topic in self.all_topics:
            unknown = [name for name in topic.related if name not in names]
            if unknown:
                raise ValueError(f"topics.yaml: {topic.name}.related names unknown {unknown}")
        return self

    @property
    def all_topics(self) -> tuple[Topic, ...]:
        return (*self.topics, self.drift_topic)

    def base_topics(self, count: int) -> tuple[Topic, ...]:
        """The first `count` base topics; raises when the catalog has fewer."""
        if count > len(self.topics):
            raise ValueError(
                f"data.synth.topics: asked for {count} topics but the Paylane catalog has "
                f"{len(self.topics)}; set data.synth.topics to at most {len(self.topics)} "
                "or add topics to pipelines/data/synth/topics.yaml"
            )
        return self.topics[:count]


def _load_yaml(name: str) -> dict:
    return yaml.safe_load(files("pipelines.data.synth").joinpath(name).read_text(encoding="utf-8"))


@cache
def load_catalog() -> Catalog:
    """Read and validate the packaged catalog (once per process)."""
    return Catalog.model_validate(
        {**_load_yaml("topics.yaml"), "phrasing": _load_yaml("phrasing.yaml")}
    )
