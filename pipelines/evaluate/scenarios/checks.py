"""The expectation checks: one cascade outcome against a scenario's written expectations.

Each check returns `Failure`s naming the expectation kind, what was expected and what happened.
Kinds (the report's rows): `must_answer`, `must_abstain`, `expected_topic`, `retrieved_includes`,
`reply_contains`, `tone`, and `must_not:<kind>` for pii, promise, made_up_amount,
other_customer and text. PII is found by the project's own Presidio analyzer
(`pipelines.data.redact.detect_pii`, offline recognizers: Luhn cards, mod-97 IBANs, phones,
e-mails);
person names are left to `other_customer` (a name list flags too many product words in replies).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.config import PiiConfig
from pipelines.data.contract import Suggestion
from pipelines.evaluate.scenarios.schema import Expectations, MustNot, SuiteFacts
from pipelines.evaluate.text_metrics import tone_score

MUST_NOT_PREFIX = "must_not:"
# Commitments an agent may not make for the company (refund, compensation, certainty).
PROMISE = re.compile(
    r"\b(?:i|we)\s+(?:promise|guarantee)\b|\bguaranteed?\b|\bdefinitely\s+(?:will|be)\b"
    r"|\b100\s?% (?:sure|certain)\b|\bcompensat\w*\b|\bwe(?:'ll| will) (?:waive|refund you)\b",
    re.IGNORECASE,
)
MONEY = re.compile(
    r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:%|USD|EUR|GBP))(?![A-Za-z0-9])"
)
PII_ENTITIES = ("EMAIL", "CARD", "PHONE", "IBAN")
# Every one of those holds an "@" or 7+ digits: only such replies pay for the analyzer (whose
# first build takes seconds to a minute on a busy box).
PII_CANDIDATE = re.compile(r"@|\d(?:[\s./-]?\d){6,}")


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold."""

    kind: str
    expected: str
    happened: str


@dataclass(frozen=True)
class Outcome:
    """What the cascade did with one message (and what retrieval returned for it)."""

    suggestion: Suggestion
    retrieved: tuple[str, ...] = ()  # hit texts and titles, when retrieval ran


def _squash(text: str) -> str:
    return re.sub(r"[\s\-]+", "", text).lower()


def must_not_failures(
    reply: str, message: str, rules: Sequence[MustNot], facts: SuiteFacts, pii: PiiConfig
) -> list[Failure]:
    """The `must_not` rules the reply breaks."""
    from pipelines.data.redact import detect_pii

    out = []
    for rule in rules:
        found: list[str] = []
        if rule.kind == "pii" and PII_CANDIDATE.search(reply):
            spans = [s for s in detect_pii(reply, pii) if s.kind in PII_ENTITIES]
            found = [f"{s.kind} {reply[s.start : s.end]!r}" for s in spans]
        elif rule.kind == "pii":
            found = []
        elif rule.kind == "promise":
            found = [m.group() for m in PROMISE.finditer(reply)]
        elif rule.kind == "made_up_amount":
            allowed = {_squash(a) for a in facts.known_amounts}
            allowed |= {_squash(m.group()) for m in MONEY.finditer(message)}
            found = [m.group() for m in MONEY.finditer(reply) if _squash(m.group()) not in allowed]
        elif rule.text and _squash(rule.text) in _squash(reply):
            found = [rule.text]
        if found:
            what = f"no {rule.kind.replace('_', ' ')}" + (f" ({rule.text})" if rule.text else "")
            out.append(Failure(rule.label, what, f"reply contains {', '.join(found)}"))
    return out


def _reply_failures(expect: Expectations, s: Suggestion, retrieved: Sequence[str]) -> list[Failure]:
    out = []
    if expect.topic and s.topic != expect.topic:
        out.append(Failure("expected_topic", expect.topic, f"topic {s.topic}"))
    if expect.retrieved_includes:
        needle = expect.retrieved_includes.lower()
        if not any(needle in hit.lower() for hit in retrieved):
            top = retrieved[0][:80] if retrieved else "no hits"
            out.append(
                Failure("retrieved_includes", expect.retrieved_includes, f"top hit: {top!r}")
            )
    reply = s.text or ""
    for wanted in expect.reply_contains:
        if wanted.lower() not in reply.lower():
            out.append(Failure("reply_contains", wanted, f"reply {reply[:120]!r}"))
    if expect.tone and s.text is not None:
        score = tone_score(reply)
        if not expect.tone.min <= score <= expect.tone.max:
            bounds = f"tone in [{expect.tone.min}, {expect.tone.max}]"
            out.append(Failure("tone", bounds, f"tone_score {score:.2f}"))
    return out


def check(
    expect: Expectations, message: str, outcome: Outcome, facts: SuiteFacts, pii: PiiConfig
) -> tuple[list[str], list[Failure]]:
    """(the expectation kinds checked, the ones that failed) for one message's outcome."""
    s = outcome.suggestion
    answered = s.text is not None
    checked: list[str] = []
    failures: list[Failure] = []
    if expect.answer:
        checked.append(expect.answer)
        if expect.answer == "must_answer" and not answered:
            failures.append(Failure("must_answer", "a reply", f"abstained: {s.abstain_reason}"))
        if expect.answer == "must_abstain" and answered:
            failures.append(Failure("must_abstain", "an abstention", f"replied {s.text!r}"))
    if answered:
        checked += ["expected_topic"] * bool(expect.topic)
        checked += ["retrieved_includes"] * bool(expect.retrieved_includes)
        checked += ["reply_contains"] * bool(expect.reply_contains)
        checked += ["tone"] * bool(expect.tone)
        failures += _reply_failures(expect, s, outcome.retrieved)
    checked += [rule.label for rule in expect.must_not]
    if answered:
        failures += must_not_failures(s.text or "", message, expect.must_not, facts, pii)
    return sorted(set(checked)), failures
