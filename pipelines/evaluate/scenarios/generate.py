"""Persona generation: each scenario → N seeded customer messages with its persona applied.

Deterministic by seed and offline: message i of a scenario draws from
`random.Random(f"{seed}:{scenario.id}:{i}")` (string seeds are hashed with SHA-512 by `random`,
never Python's salted `hash()`), so adding a scenario never changes another one's messages.
A message picks one of the scenario's `asks` templates (the paraphrases), fills its {slot}s from
the scenario's `facts` (else the synthetic world's slot pools), then applies the persona:
verbosity (greeting, background, closer from the world's phrasing), tone, a second language in
the greeting and closer, impatience (a chase after the question) and typos
(`pipelines.data.synth.messages.add_typos`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from pipelines.data.contract import Turn
from pipelines.data.synth.catalog import load_catalog
from pipelines.data.synth.messages import COMPUTED, add_typos
from pipelines.evaluate.scenarios.schema import Persona, Scenario, Suite

SLOT = re.compile(r"\{(\w+)\}")
GREETINGS = {"de": ("Hallo", "Guten Tag"), "fr": ("Bonjour", "Salut"), "es": ("Hola", "Buenas")}
CLOSERS = {"de": ("Danke!", "Vielen Dank."), "fr": ("Merci!", "Merci beaucoup."),
           "es": ("¡Gracias!", "Muchas gracias.")}  # fmt: skip
TONE_OPENERS = {
    "polite": ("Sorry to bother you.", "I hope you can help."),
    "angry": ("This is ridiculous.", "I'm really frustrated with this.", "Not happy at all."),
}
CHASES = ("", "??", "Please answer quickly.", "HELLO?? Is anyone reading this??")


@dataclass(frozen=True)
class ScenarioMessage:
    """One generated customer message of a scenario, with the turns before it."""

    scenario_id: str
    index: int
    message: str
    context: tuple[Turn, ...] = ()

    def as_json(self) -> dict:
        return {
            "scenario_id": self.scenario_id,
            "index": self.index,
            "message": self.message,
            "context": [t.model_dump() for t in self.context],
        }


def fill(template: str, facts: dict[str, str], rng: random.Random) -> str:
    """Replace each {slot}: the scenario's facts first, then the synthetic world's pools."""
    pools = load_catalog().phrasing.slots

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in facts:
            return facts[name]
        if name in COMPUTED:
            return COMPUTED[name](rng)
        if name in pools:
            return rng.choice(pools[name])
        raise KeyError(f"slot {{{name}}} in {template!r}: add `{name}:` to the scenario's facts")

    return SLOT.sub(value, template)


def _second_language(persona: Persona) -> str | None:
    return persona.language_mix.split("+")[1] if "+" in persona.language_mix else None


def apply_persona(question: str, persona: Persona, rng: random.Random) -> str:
    """The question as this persona writes it."""
    phrasing = load_catalog().phrasing
    lang = _second_language(persona)
    parts = [question]
    if persona.verbosity == "chatty":
        parts.insert(0, fill(rng.choice(phrasing.backgrounds), {}, rng))
    if persona.tone in TONE_OPENERS and persona.verbosity != "terse":
        parts.insert(0, rng.choice(TONE_OPENERS[persona.tone]))
    if persona.verbosity != "terse" and persona.tone != "curt":
        greeting = rng.choice(GREETINGS[lang] if lang else phrasing.greetings)
        parts.insert(0, greeting + rng.choice((",", "!")))
        closers = CLOSERS[lang] if lang else phrasing.closers
        if persona.verbosity == "chatty" or lang or persona.tone == "polite":
            parts.append(rng.choice(closers))
    if persona.impatience:
        parts.append(CHASES[persona.impatience])
    text = " ".join(p if p[-1] in ".,!?" else f"{p}." for p in parts[:-1] if p)
    text = f"{text} {parts[-1]}".strip() if parts[-1] else text
    if persona.verbosity == "terse":
        text = text.lower().rstrip("?")
    if persona.tone == "angry" and persona.impatience >= 2:
        text = text.replace("?", "?!")
    if rng.random() < persona.typos:
        text = add_typos(text, rng)
    return text


def scenario_messages(
    scenario: Scenario, persona: Persona, n: int, seed: int
) -> list[ScenarioMessage]:
    """`n` messages for one scenario, deterministic by `seed` and the scenario id."""
    out = []
    for index in range(n):
        rng = random.Random(f"{seed}:{scenario.id}:{index}")
        asks = scenario.situation.asks
        template = asks[index % len(asks)] if index < len(asks) else rng.choice(asks)
        question = fill(template, scenario.situation.facts, rng)
        out.append(
            ScenarioMessage(
                scenario.id,
                index,
                apply_persona(question, persona, rng),
                scenario.situation.earlier_turns,
            )
        )
    return out


def generate_suite(suite: Suite, n: int, seed: int) -> list[ScenarioMessage]:
    """Every scenario's `n` messages, in suite order."""
    if n < 1:
        raise ValueError(f"messages per scenario must be >= 1, got {n}")
    return [
        message
        for scenario in suite.scenarios
        for message in scenario_messages(scenario, suite.personas[scenario.persona], n, seed)
    ]
