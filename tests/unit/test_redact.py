"""PII redaction: planted PII is gone by an independent scanner; look-alikes survive."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from pipelines.data.contract import LabeledCase, Turn
from pipelines.data.pii.planted import KEEP, planted_messages
from pipelines.data.redact import detect_pii, has_pii, redact_cases, redact_text, redact_texts

# ---------------------------------------------------------------- an independent scanner

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s().-]*\d")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,3})?\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_ok(code: str) -> bool:
    code = code.replace(" ", "")
    moved = code[4:] + code[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def scan(text: str) -> dict[str, list[str]]:
    """What a reviewer's regexes find: e-mails, Luhn-valid cards, phone-like runs, valid IBANs."""
    found: dict[str, list[str]] = {"EMAIL": EMAIL.findall(text), "CARD": [], "PHONE": []}
    for match in DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            found["CARD"].append(match.group())
        elif 9 <= len(digits) <= 15 and (
            re.search(r"[\s().-]", match.group()) or "+" in match.group()
        ):
            found["PHONE"].append(match.group())
    found["IBAN"] = [m.group() for m in IBAN.finditer(text) if iban_ok(m.group())]
    return found


@pytest.fixture(scope="module")
def planted():
    return planted_messages(1000, seed=11, pii_share=0.6)


@pytest.fixture(scope="module")
def redacted(planted):
    return redact_texts([message.text for message in planted])


# ---------------------------------------------------------------- planted PII


def test_scanner_sees_the_planted_pii_before_redaction(planted):
    raw = [scan(message.text) for message in planted]
    for kind in ("EMAIL", "CARD", "PHONE", "IBAN"):
        planted_count = sum(k == kind for m in planted for k, _ in m.planted)
        seen = sum(len(found[kind]) for found in raw)
        assert planted_count > 50
        assert seen >= 0.9 * planted_count, f"scanner misses raw {kind}: {seen}/{planted_count}"


def test_no_pii_left_after_redaction(planted, redacted):
    leftovers = {kind: [] for kind in ("EMAIL", "CARD", "PHONE", "IBAN")}
    for result in redacted:
        for kind, hits in scan(result.text).items():
            leftovers[kind].extend(hits)
    assert leftovers == {"EMAIL": [], "CARD": [], "PHONE": [], "IBAN": []}
    for message, result in zip(planted, redacted, strict=True):
        for kind, value in message.planted:
            assert value not in result.text, f"{kind} {value!r} survived: {result.text}"
            assert f"<{kind}>" in result.text


def test_counts_match_what_was_planted(planted, redacted):
    for message, result in zip(planted, redacted, strict=True):
        expected = {}
        for kind, _ in message.planted:
            expected[kind] = expected.get(kind, 0) + 1
        assert result.counts == expected, message.text


def test_look_alikes_survive_redaction(planted, redacted):
    for message, result in zip(planted, redacted, strict=True):
        kept = [phrase for phrase in KEEP if phrase in message.text]
        assert kept and all(phrase in result.text for phrase in kept), result.text


# ---------------------------------------------------------------- precise behaviour


@pytest.mark.parametrize(
    "text",
    [
        "Order 1234567812345678 never shipped",  # 16 digits, fails Luhn
        "order 4000 1234 1234 1235 is stuck",  # Visa-like prefix, fails Luhn
        "I was charged $1,200 and then €1.200,50 on 2024-03-05 at 10:30",
        "Go to Settings → Payouts → Schedule and pick May 5",
        "Bill Pay and Instant Transfer are both on, version 2.3.14",
        "IBAN GB00 WEST 1234 5698 7654 32 is what the form shows",  # fails mod-97
        "hi team, thanks a lot!",
    ],
)
def test_non_pii_is_left_alone(text):
    assert redact_text(text).text == text
    assert not has_pii(text)


def test_placeholders_replace_each_kind_in_place():
    text = (
        "Hi, I'm Dana Whitfield. Mail dana.w@example.org, card 4111 1111 1111 1111, "
        "call +44 20 7946 0958, IBAN GB82 WEST 1234 5698 7654 32. Refund $1,200."
    )
    result = redact_text(text)
    assert result.text == (
        "Hi, I'm <PERSON>. Mail <EMAIL>, card <CARD>, call <PHONE>, IBAN <IBAN>. Refund $1,200."
    )
    assert result.counts == {"PERSON": 1, "EMAIL": 1, "CARD": 1, "PHONE": 1, "IBAN": 1}
    kinds = [span.kind for span in detect_pii(text)]
    assert kinds == ["PERSON", "EMAIL", "CARD", "PHONE", "IBAN"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi Sarah, your refund is on its way.", "Hi <PERSON>, your refund is on its way."),
        ("my name is Tom Baxter and I need help", "my name is <PERSON> and I need help"),
        ("Thanks,\nOlivia", "Thanks,\n<PERSON>"),
        ("Please ask Mr Pennington to call", "Please ask Mr <PERSON> to call"),
        ("Mastercard 2221 0000 0000 0009 was declined", "Mastercard <CARD> was declined"),
        ("typo: jo.lee@gmail.con", "typo: <EMAIL>"),
        ("reach me on (415) 555-0132 x12 today", "reach me on <PHONE> today"),
    ],
)
def test_names_and_edge_formats(text, expected):
    assert redact_text(text).text == expected


def test_redact_cases_covers_every_text_field():
    case = LabeledCase(
        case_id="c1",
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        message="My card 4111-1111-1111-1111 got blocked",
        context=(
            Turn(role="customer", text="email is jo@example.com"),
            Turn(role="agent", text="ok"),
        ),
        answerable=True,
        topic="card_blocked",
        agent_reply="Hi Sarah, I unblocked it.",
        reply_draft="Dear Sarah, the card is unblocked.",
        label_source="synthetic",
    )
    clean = case.model_copy(
        update={
            "case_id": "c2",
            "message": "How do payouts work?",
            "context": (),
            "agent_reply": "They arrive in 2 days.",
            "reply_draft": None,
        }
    )
    out, stats = redact_cases([case, clean])
    assert out[0].message == "My card <CARD> got blocked"
    assert [turn.text for turn in out[0].context] == ["email is <EMAIL>", "ok"]
    assert out[0].agent_reply == "Hi <PERSON>, I unblocked it."
    assert out[0].reply_draft == "Dear <PERSON>, the card is unblocked."
    assert out[0].topic == "card_blocked"
    assert out[1] is clean  # nothing to redact: the same record comes back
    assert (stats.cases, stats.cases_redacted, stats.texts, stats.texts_redacted) == (2, 1, 7, 4)
    assert stats.counts == {"CARD": 1, "EMAIL": 1, "PERSON": 2}


def test_synthetic_world_batches_come_out_clean():
    synth = pytest.importorskip(
        "pipelines.data.synth", reason="the synthetic world is not built yet"
    )
    from pipelines.config import SynthConfig

    world = synth.generate_world(SynthConfig(cases_per_day=400, pii_share=0.3), seed=3, days=1)
    cases = [case for day in world.days for case in day.cases]
    with_pii = [case for case in cases if any(scan(case.message).values())]
    out, stats = redact_cases(cases)
    assert stats.cases_redacted >= len(with_pii) > 40
    for case in out:
        texts = [case.message, *(turn.text for turn in case.context), case.agent_reply or ""]
        assert not any(hit for text in texts for hit in scan(text).values()), case.message
