"""Customer messages of the synthetic world: templates with slot fillers, typos, context, PII."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.data.contract import Turn, UnanswerableKind
from pipelines.data.synth.catalog import Catalog, Macro, Topic
from pipelines.data.synth.pii import PII_KINDS, PiiMaker

SLOT = re.compile(r"\{(\w+)\}")
MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CURRENCY_SIGNS = ("$", "$", "$", "€", "€", "£")
# Per message: a greeting, a background sentence, a closer, an all-lowercase message, a
# dropped final "?"; and, for a follow-up sent without its context, a generic one.
GREETING_SHARE, BACKGROUND_SHARE, CLOSER_SHARE = 0.5, 0.35, 0.2
LOWERCASE_SHARE, DROP_QUESTION_MARK_SHARE, GENERIC_FOLLOWUP_SHARE = 0.15, 0.2, 0.3


@dataclass(frozen=True)
class Conversation:
    """A customer message and the turns before it."""

    message: str
    context: tuple[Turn, ...] = ()


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _money(rng: random.Random, low: float, high: float) -> str:
    sign = rng.choice(CURRENCY_SIGNS)
    value = rng.uniform(low, high)
    text = f"{value:,.2f}" if rng.random() < 0.5 or value < 10 else f"{round(value):,}"
    return f"{sign}{text}"


def _date(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"{rng.choice(MONTH_ABBR)} {rng.randint(1, 28)}"
    if style == 1:
        return f"last {rng.choice(('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday'))}"
    if style == 2:
        return rng.choice(("yesterday", "this morning", "the weekend"))
    return f"the {ordinal(rng.randint(1, 28))}"


def _time_ago(rng: random.Random) -> str:
    n = rng.randint(2, 6)
    return rng.choice((f"{n} days", f"{n} weeks", "a week", "a month", f"{n} hours", "two weeks"))


# Slots computed rather than drawn from a list in phrasing.yaml.
COMPUTED: dict[str, Callable[[random.Random], str]] = {
    "amount": lambda rng: _money(rng, 5, 2500),
    "small_amount": lambda rng: _money(rng, 0.3, 15),
    "big_amount": lambda rng: _money(rng, 20_000, 900_000),
    "date": _date,
    "time_ago": _time_ago,
    "n": lambda rng: str(rng.randint(2, 40)),
    "nth": lambda rng: ordinal(rng.randint(1, 28)),
    "invoice": lambda rng: f"INV-{rng.randint(1000, 9999)}",
    "order": lambda rng: f"#{rng.randint(10000, 99999)}",
    "payout_id": lambda rng: "po_" + "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", k=10)),
    "last4": lambda rng: f"{rng.randrange(10000):04d}",
    "risk": lambda rng: str(rng.randint(40, 98)),
}


class MessageWriter:
    """Writes one day's customer messages from the catalog with the day's RNG."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random,
        *,
        drifted: bool,
        typo_rate: float,
        pii: PiiMaker,
    ) -> None:
        self.phrasing = catalog.phrasing
        self.rng = rng
        self.drifted = drifted
        self.typo_rate = typo_rate
        self.pii = pii
        self.planted: list[tuple[str, str]] = []  # (kind, value) per `plant_pii` call

    def fill(self, template: str) -> str:
        """Replace each {slot}; an unknown slot raises naming the template."""
        return SLOT.sub(lambda match: self._slot(match.group(1), template), template)

    def _slot(self, name: str, template: str) -> str:
        if name in COMPUTED:
            return COMPUTED[name](self.rng)
        pool = self.phrasing.slots.get(name)
        if pool is None:
            raise KeyError(
                f"slot {{{name}}} in {template!r} is neither computed nor in phrasing.yaml"
            )
        drift = self.phrasing.drift
        if self.drifted and name in drift.slots and self.rng.random() < drift.slot_share:
            pool = drift.slots[name]
        return self.rng.choice(pool)

    def question(self, topic: Topic, macro: Macro | None = None) -> str:
        """A first message on `topic` (asking what `macro` answers, when given): maybe a
        greeting and background, the question, a closer."""
        rng, phrasing = self.rng, self.phrasing
        question = self.fill(rng.choice(macro.asks if macro is not None else topic.templates))
        if rng.random() < 0.55:
            question = question[0].upper() + question[1:]
        parts = [question]
        if rng.random() < BACKGROUND_SHARE:
            parts.insert(0, self.fill(rng.choice(phrasing.backgrounds)))
        if self.drifted and rng.random() < phrasing.drift.sentence_share:
            parts.insert(rng.randint(0, len(parts)), rng.choice(phrasing.drift.sentences))
        if rng.random() < GREETING_SHARE:
            parts.insert(0, rng.choice(phrasing.greetings) + rng.choice((",", ",", "!")))
        if rng.random() < CLOSER_SHARE:
            parts.append(rng.choice(phrasing.closers))
        # a sentence followed by another needs its full stop ("… 8 buyers. I only use the app")
        sentences = [part if part[-1] in ".,!?" else f"{part}." for part in parts[:-1]]
        return self._customer_style(" ".join([*sentences, parts[-1]]))

    def followup(self, topic: Topic, earlier: Macro, macro: Macro) -> Conversation:
        """A follow-up answered by `macro`, after an exchange on `topic` answered by `earlier`."""
        context = (
            Turn(role="customer", text=self.question(topic, earlier)),
            Turn(role="agent", text=earlier.reply),
        )
        message = self.fill(self.rng.choice(macro.followups))
        return Conversation(self._customer_style(message), context)

    def context_free_followup(self, topic: Topic) -> Conversation:
        """A follow-up sent without the exchange it refers to: nobody can answer it."""
        pool = self.phrasing.generic_followups
        if self.rng.random() >= GENERIC_FOLLOWUP_SHARE:
            pool = topic.followups
        return Conversation(self._customer_style(self.fill(self.rng.choice(pool))))

    def unanswerable(
        self, kind: UnanswerableKind, earlier: tuple[Topic, Macro] | None = None
    ) -> Conversation:
        """A message nobody can answer; `earlier` (topic, macro) gives a "thanks" its context."""
        message = self._customer_style(self.fill(self.rng.choice(self.phrasing.unanswerable[kind])))
        if earlier is None:
            return Conversation(message)
        topic, macro = earlier
        context = (
            Turn(role="customer", text=self.question(topic, macro)),
            Turn(role="agent", text=macro.reply),
        )
        return Conversation(message, context)

    def generic_reply(self, kind: UnanswerableKind) -> str:
        return self.rng.choice(self.phrasing.generic_replies[kind])

    def plant_pii(self, message: str) -> str:
        """Add one sentence carrying an email, card, phone, IBAN or person name."""
        kind = self.rng.choice(PII_KINDS)
        template = self.rng.choice(self.phrasing.pii_sentences[kind])
        value = self.pii.value(kind)
        self.planted.append((kind, value))  # in memory only: what a PII scan must not find
        sentence = self.fill(template.replace("{value}", value))
        if self.rng.random() < 0.7 or kind == "name" and template.startswith("Thanks"):
            return f"{message} {sentence}"
        return f"{sentence} {message}"

    def _customer_style(self, text: str) -> str:
        rng = self.rng
        if rng.random() < LOWERCASE_SHARE:
            text = text.lower()
        if text.endswith("?") and rng.random() < DROP_QUESTION_MARK_SHARE:
            text = text[:-1]
        if rng.random() < self.typo_rate:
            text = add_typos(text, rng)
        return text


def add_typos(text: str, rng: random.Random) -> str:
    """Swap, drop or double a letter inside one or two words of four letters or more."""
    tokens = re.split(r"(\s+)", text)
    candidates = [i for i, token in enumerate(tokens) if token.isalpha() and len(token) >= 4]
    if not candidates:
        return text
    for index in rng.sample(candidates, min(len(candidates), rng.choice((1, 1, 2)))):
        word = tokens[index]
        at = rng.randrange(1, len(word) - 2)
        operation = rng.randrange(3)
        if operation == 0:
            word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        elif operation == 1:
            word = word[:at] + word[at + 1 :]
        else:
            word = word[:at] + word[at] + word[at:]
        tokens[index] = word
    return "".join(tokens)
