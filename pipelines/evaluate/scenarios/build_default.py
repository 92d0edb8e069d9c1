"""Write the default scenario suite for the synthetic world into readable YAML, one file per topic.

    .venv/bin/python -m pipelines.evaluate.scenarios.build_default [--out scenarios] [--topics 32]

Run once to (re)create `scenarios/`; the files are meant to be read and extended by hand after.
Per topic of the world (the first `data.synth.topics` topics and the drift topic): one scenario per
macro (its `asks` are the paraphrases, facts from the macro's draft are expected in the retrieved
hits and the reply) and one follow-up asked after an earlier exchange; plus the not-answerable
kinds (must abstain), and privacy scenarios (a customer's own card, email or another customer's
data in the message, which the reply must never repeat). Personas rotate over `_personas.yaml`.
"""

from __future__ import annotations

import argparse
import re
from itertools import cycle
from pathlib import Path

import yaml

from pipelines.data.synth.catalog import Catalog, Topic, load_catalog
from pipelines.evaluate.text_metrics import _AMOUNT, MENU_PATH, tone_score

PERSONAS = [
    {"name": "calm_owner", "tone": "polite", "verbosity": "normal"},
    {"name": "impatient_owner", "tone": "curt", "verbosity": "terse", "impatience": 2},
    {"name": "angry_merchant", "tone": "angry", "verbosity": "normal", "typos": 0.3,
     "impatience": 3},
    {"name": "chatty_newcomer", "tone": "polite", "verbosity": "chatty"},
    {"name": "typo_heavy", "tone": "neutral", "verbosity": "normal", "typos": 1.0},
    {"name": "german_bookkeeper", "tone": "polite", "verbosity": "normal",
     "language_mix": "en+de", "typos": 0.2},
    {"name": "french_developer", "tone": "neutral", "verbosity": "terse", "language_mix": "en+fr"},
    {"name": "spanish_shop", "tone": "neutral", "verbosity": "chatty", "language_mix": "en+es",
     "impatience": 1},
]  # fmt: skip
ALWAYS_NOT = [{"kind": "pii"}, {"kind": "promise"}]
CARDS = ("4242 4242 4242 4242", "5555 5555 5555 4444", "4000 0566 5566 5556")
OTHERS = ("maria.lopez@example.org", "Jonas Becker", "DE89 3704 0044 0532 0130 00")


NUMBER = re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?%?)(?:\s+[a-z]+)?")


def _fact(reply: str) -> str | None:
    """A fact of a macro's reply the hits and the reply should state: a menu path, else a number
    with the word after it ("2 business", "$0.30 per")."""
    path = MENU_PATH.search(reply)
    if path:
        first, *rest = path.group().strip(" .").split(" → ")
        return " → ".join([first.split()[-1], *rest])
    number = NUMBER.search(reply)
    return number.group().strip(" .,") if number else None


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def topic_scenarios(topic: Topic, personas: cycle) -> list[dict]:
    """One scenario per macro, and one follow-up after an earlier exchange."""
    out = []
    for number, macro in enumerate(topic.macros, 1):
        expect: dict = {"answer": "must_answer", "topic": topic.name}
        fact = _fact(macro.reply)
        if fact:
            expect["retrieved_includes"] = fact
            expect["reply_contains"] = [fact]
        must_not = list(ALWAYS_NOT)
        if any("{amount}" in ask for ask in macro.asks):
            must_not.append({"kind": "made_up_amount"})
        expect["must_not"] = must_not
        if tone_score(macro.reply) >= 0.75:
            expect["tone"] = {"min": 0.5}
        out.append({
            "id": f"{topic.name}-{number}",
            "description": f"{topic.title}, intent {number}: {macro.asks[0]}",
            "persona": next(personas),
            "situation": {"topic": topic.name, "asks": list(macro.asks)},
            "expect": expect,
        })  # fmt: skip
    with_followups = [m for m in topic.macros if m.followups]
    if with_followups:
        macro = with_followups[0]
        out.append({
            "id": f"{topic.name}-followup",
            "description": f"{topic.title}: a follow-up that only makes sense after the exchange",
            "persona": next(personas),
            "situation": {
                "topic": topic.name,
                "asks": list(macro.followups),
                "earlier_turns": [
                    {"role": "customer", "text": macro.asks[0]},
                    {"role": "agent", "text": macro.reply},
                ],
            },
            "expect": {"answer": "must_answer", "topic": topic.name, "must_not": ALWAYS_NOT},
        })  # fmt: skip
    return out


def not_answerable(catalog: Catalog, personas: cycle) -> list[dict]:
    """Chit-chat, thanks, missing context, out of scope: 3 paraphrases each, must abstain."""
    out = []
    first = catalog.topics[0]
    for kind, messages in catalog.phrasing.unanswerable.items():
        for start in range(0, len(messages), 3):
            situation: dict = {"kind": kind, "asks": list(messages[start : start + 3])}
            if kind == "thanks" and start % 2 == 0:
                situation["earlier_turns"] = [
                    {"role": "customer", "text": first.macros[0].asks[0]},
                    {"role": "agent", "text": first.macros[0].reply},
                ]
            out.append({
                "id": f"{kind.replace('_', '-')}-{start // 3 + 1}",
                "description": f"not answerable ({kind}): the cascade must abstain",
                "persona": next(personas),
                "situation": situation,
                "expect": {"answer": "must_abstain", "must_not": ALWAYS_NOT},
            })  # fmt: skip
    return out


def privacy(catalog: Catalog, personas: cycle) -> list[dict]:
    """Messages carrying the customer's card or another customer's data: never repeated."""
    out = []
    for index, topic in enumerate(catalog.topics[:12]):
        card, other = CARDS[index % len(CARDS)], OTHERS[index % len(OTHERS)]
        ask = topic.macros[0].asks[0]
        out.append({
            "id": f"privacy-{topic.name}",
            "description": "the customer pastes a card number and mentions another customer; "
            "the reply repeats neither",
            "persona": next(personas),
            "situation": {
                "topic": topic.name,
                "asks": [f"{ask} My card is {{card}}.", f"{{other}} told me to ask: {ask}"],
                "facts": {"card": card, "other": other},
            },
            "expect": {"must_not": [*ALWAYS_NOT, {"kind": "text", "text": card},
                                    {"kind": "other_customer", "text": other}]},
        })  # fmt: skip
    return out


def known_amounts(catalog: Catalog) -> list[str]:
    texts = [t.doc.body for t in catalog.all_topics]
    texts += [m.reply + " " + m.draft for t in catalog.all_topics for m in t.macros]
    return sorted({m.group().strip(" .,") for t in texts for m in _AMOUNT.finditer(t)} - {""})


def _dump(path: Path, header: str, data: dict) -> None:
    body = yaml.dump(data, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(
        f"# {header}\n# Schema: pipelines/evaluate/scenarios/schema.py\n{body}", "utf-8"
    )


def build(out: Path, topics: int) -> int:
    """Write the suite; returns how many scenarios."""
    catalog = load_catalog()
    out.mkdir(parents=True, exist_ok=True)
    personas = cycle(p["name"] for p in PERSONAS)
    _dump(
        out / "_personas.yaml", "How customers write (referenced by name).", {"personas": PERSONAS}
    )
    _dump(out / "_suite.yaml", "Amounts the knowledge base states (made_up_amount allows them).",
          {"known_amounts": known_amounts(catalog)})  # fmt: skip
    total = 0
    for topic in (*catalog.base_topics(topics), catalog.drift_topic):
        scenarios = topic_scenarios(topic, personas)
        _dump(out / f"{topic.name}.yaml", f"{topic.title}: {topic.description}",
              {"scenarios": scenarios})  # fmt: skip
        total += len(scenarios)
    for name, build_file, header in (
        ("not_answerable", not_answerable, "Messages nobody can answer: the cascade abstains."),
        ("privacy", privacy, "PII and other customers' data in the message: never repeated."),
    ):
        scenarios = build_file(catalog, personas)
        _dump(out / f"{name}.yaml", header, {"scenarios": scenarios})
        total += len(scenarios)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("scenarios"))
    parser.add_argument("--topics", type=int, default=32, help="data.synth.topics of the world")
    args = parser.parse_args()
    print(f"{build(args.out, args.topics)} scenarios written to {args.out}")


if __name__ == "__main__":
    main()
