"""The scenario suite's schema: personas, situations and written expectations, loaded from YAML.

A suite is a folder of YAML files (`scenarios/` at the repo root is the default suite):
`_personas.yaml` holds the personas by name, `_suite.yaml` the suite-wide facts (the amounts the
knowledge base knows, for the `made_up_amount` check), and every other `*.yaml` file a list of
`scenarios:`. Every model forbids unknown keys, and a bad file fails with
`ScenarioError("<file>:<line>: <key>: <problem> — <fix>")`: the line comes from the YAML node
marks, so a person can fix the file without reading this module.

Schema of one scenario (see scenarios/README.md for a walk-through):

    - id: payouts-first-payout-timing        # unique in the suite
      persona: impatient_owner               # a name from _personas.yaml
      situation:
        topic: payouts                       # the taxonomy topic, or null (not answerable)
        kind: answerable                     # or chit_chat|thanks|missing_context|out_of_scope
        asks: ["when will my payout of {amount} arrive?"]   # templates, {slot}s from facts
        facts: {amount: "$1,250.00"}         # slot values (and what the customer told us)
        earlier_turns: []                    # [{role: customer|agent, text: ...}] before it
      expect:
        answer: must_answer                  # or must_abstain (omit: either is fine)
        topic: payouts                       # the topic stage's label when it answers
        retrieved_includes: "Payouts: when"  # a retrieved hit's text or title contains this
        reply_contains: ["business days"]    # every string, case-insensitive
        must_not: [{kind: pii}, {kind: promise}, {kind: made_up_amount},
                   {kind: other_customer, text: "jane@example.com"}, {kind: text, text: "..."}]
        tone: {min: 0.2, max: 1.0}           # bounds on text_metrics.tone_score of the reply
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.data.contract import Turn

Kind = Literal["answerable", "chit_chat", "thanks", "missing_context", "out_of_scope"]
MustNotKind = Literal["pii", "promise", "made_up_amount", "other_customer", "text"]
PERSONAS_FILE, SUITE_FILE = "_personas.yaml", "_suite.yaml"


class ScenarioError(ValueError):
    """A scenario file that does not load: the message names the file, line, key and fix."""


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Persona(Strict):
    """How a customer writes: applied to every message generated for a scenario."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="referenced by scenarios")
    tone: Literal["polite", "neutral", "curt", "angry"] = "neutral"
    verbosity: Literal["terse", "normal", "chatty"] = "normal"
    typos: float = Field(0.0, ge=0.0, le=1.0, description="share of messages with typos")
    language_mix: Literal["en", "en+de", "en+fr", "en+es"] = Field(
        "en", description="a second language mixed into greetings and closers"
    )
    impatience: int = Field(0, ge=0, le=3, description="0 calm … 3 chases a reply in caps")


class Situation(Strict):
    """What the customer is in: the topic, what they say and know, and earlier turns."""

    topic: str | None = Field(None, description="taxonomy topic; null for not-answerable kinds")
    kind: Kind = "answerable"
    asks: tuple[str, ...] = Field(min_length=1, description="message templates with {slot}s")
    facts: dict[str, str] = Field(default_factory=dict, description="values for the {slot}s")
    earlier_turns: tuple[Turn, ...] = ()

    @model_validator(mode="after")
    def _topic_matches_kind(self) -> Situation:
        if self.kind == "answerable" and not self.topic:
            raise ValueError("an answerable situation needs `topic:` (a taxonomy topic name)")
        return self


class MustNot(Strict):
    """One thing the reply must never contain."""

    kind: MustNotKind
    text: str | None = Field(None, description="the string, for kinds other_customer and text")

    @model_validator(mode="after")
    def _text_when_needed(self) -> MustNot:
        if self.kind in ("other_customer", "text") and not self.text:
            raise ValueError(f"must_not kind {self.kind!r} needs `text:` (the string to refuse)")
        return self

    @property
    def label(self) -> str:
        return f"must_not:{self.kind}"


class ToneBounds(Strict):
    min: float = Field(0.0, ge=0.0, le=1.0)
    max: float = Field(1.0, ge=0.0, le=1.0)


class Expectations(Strict):
    """What must (and must not) happen, per stage; an omitted key is not checked."""

    answer: Literal["must_answer", "must_abstain"] | None = None
    topic: str | None = None
    retrieved_includes: str | None = None
    reply_contains: tuple[str, ...] = ()
    must_not: tuple[MustNot, ...] = ()
    tone: ToneBounds | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Expectations:
        reply_checks = self.topic or self.retrieved_includes or self.reply_contains or self.tone
        if self.answer == "must_abstain" and reply_checks:
            raise ValueError(
                "must_abstain cannot also expect a topic, retrieval, reply text or tone; "
                "drop those keys or expect must_answer"
            )
        return self


class Scenario(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    persona: str
    situation: Situation
    expect: Expectations


class ScenarioFile(Strict):
    scenarios: tuple[Scenario, ...] = Field(min_length=1)


class PersonasFile(Strict):
    personas: tuple[Persona, ...] = Field(min_length=1)


class SuiteFacts(Strict):
    known_amounts: tuple[str, ...] = Field(
        default=(), description="amounts the knowledge base states (made_up_amount allows them)"
    )


@dataclass(frozen=True)
class Suite:
    """A loaded, validated suite: scenarios in file order, personas by name, suite facts."""

    scenarios: tuple[Scenario, ...]
    personas: dict[str, Persona]
    facts: SuiteFacts
    sources: dict[str, str]  # scenario id → "file:line"


# ------------------------------------------------------------------ loading with line numbers


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[loader.construct_object(key_node)] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("__lines__", "__line__")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _line_of(raw: Any, loc: tuple[Any, ...]) -> int:
    """The line of the deepest node of `loc` that the YAML had (the key's line when present)."""
    line, node = 1, raw
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(part, node.get("__line__", line))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if isinstance(node, dict):
                line = node.get("__line__", line)
        else:
            break
    return line


_FIXES = {
    "extra_forbidden": "remove it, or check its spelling against the schema in "
    "pipelines/evaluate/scenarios/schema.py",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
}


def _explain(path: Path, raw: Any, err: ValidationError) -> ScenarioError:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not str(p).startswith("function-after"))
        key = ".".join(str(p) for p in loc) or "(top level)"
        fix = _FIXES.get(e["type"], "fix the value")
        problems.append(f"{path}:{_line_of(raw, loc)}: {key}: {e['msg']} — {fix}")
    return ScenarioError("\n".join(problems))


def _read(path: Path) -> Any:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ScenarioError(f"{path}{line}: not valid YAML ({err}) — fix the syntax") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}:1: the top level must be a mapping — start with `scenarios:`")
    return raw


def _validate(path: Path, model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(_strip(raw))
    except ValidationError as err:
        raise _explain(path, raw, err) from None


def load_suite(folder: Path, *, topics: set[str] | None = None) -> Suite:
    """Load and cross-check every YAML file of `folder`; raises ScenarioError naming the fix.

    `topics`, when given, is the taxonomy: a scenario naming another topic is refused.
    """
    folder = Path(folder)
    if not (folder / PERSONAS_FILE).is_file():
        raise ScenarioError(
            f"{folder}: no {PERSONAS_FILE}; a suite folder holds the personas there "
            "(see scenarios/ at the repo root)"
        )
    personas = _validate(folder / PERSONAS_FILE, PersonasFile, _read(folder / PERSONAS_FILE))
    by_name = {p.name: p for p in personas.personas}
    facts = SuiteFacts()
    if (folder / SUITE_FILE).is_file():
        facts = _validate(folder / SUITE_FILE, SuiteFacts, _read(folder / SUITE_FILE))
    scenarios, sources = [], {}
    files = sorted(p for p in folder.glob("*.yaml") if p.name not in (PERSONAS_FILE, SUITE_FILE))
    if not files:
        raise ScenarioError(f"{folder}: no scenario files (*.yaml with a `scenarios:` list)")
    for path in files:
        raw = _read(path)
        parsed = _validate(path, ScenarioFile, raw)
        for index, scenario in enumerate(parsed.scenarios):
            where = f"{path}:{_line_of(raw, ('scenarios', index))}"
            _cross_check(scenario, where, by_name, topics, sources)
            sources[scenario.id] = where
            scenarios.append(scenario)
    return Suite(tuple(scenarios), by_name, facts, sources)


def _cross_check(
    scenario: Scenario,
    where: str,
    personas: dict[str, Persona],
    topics: set[str] | None,
    seen: dict[str, str],
) -> None:
    if scenario.id in seen:
        raise ScenarioError(
            f"{where}: id: {scenario.id!r} is also at {seen[scenario.id]} — give it a unique id"
        )
    if scenario.persona not in personas:
        raise ScenarioError(
            f"{where}: persona: {scenario.persona!r} is not in {PERSONAS_FILE} — use one of "
            f"{', '.join(sorted(personas))} or add it there"
        )
    for key, topic in (("situation.topic", scenario.situation.topic), ("expect.topic",
                       scenario.expect.topic)):  # fmt: skip
        if topics is not None and topic is not None and topic not in topics:
            raise ScenarioError(
                f"{where}: {key}: {topic!r} is not a taxonomy topic — use one of the "
                "taxonomy's names (pipelines/data/synth/topics.yaml)"
            )
