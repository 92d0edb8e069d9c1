"""Redaction after normalisation: each bypass from issue 13 is caught, look-alikes survive."""

from __future__ import annotations

import pytest

from pipelines.data.pii.normalize import normalize
from pipelines.data.redact import detect_pii, has_pii, redact_text, redact_texts

ZWSP, ZWNJ, WJ = "\u200b", "\u200c", "\u2060"


def fullwidth(text: str) -> str:
    """ASCII digits and letters written as their fullwidth forms (U+FF10…)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


# (bypass, text, what the redacted text must be)
BYPASSES = [
    ("zero-width spaces", f"card 4111{ZWSP}1111{ZWSP}1111{ZWSP}1111 ok", "card <CARD> ok"),
    ("zero-width mixed", f"card 4111{ZWNJ}1111{WJ}1111\ufeff1111 ok", "card <CARD> ok"),
    ("soft hyphens", "card 4111\u00ad1111\u00ad1111\u00ad1111 ok", "card <CARD> ok"),
    ("fullwidth digits", f"card {fullwidth('4111 1111 1111 1111')} ok", "card <CARD> ok"),
    ("dots", "card 4111.1111.1111.1111 ok", "card <CARD> ok"),
    ("en dashes", "card 4111–1111–1111–1111 ok", "card <CARD> ok"),
    ("amex dots", "amex 3782.822463.10005 ok", "amex <CARD> ok"),
    ("lower-case IBAN", "iban gb82 west 1234 5698 7654 32 ok", "iban <IBAN> ok"),
    ("lower-case IBAN, no spaces", "to de89370400440532013000 please", "to <IBAN> please"),
    ("fullwidth IBAN", f"IBAN {fullwidth('GB82WEST12345698765432')} ok", "IBAN <IBAN> ok"),
    ("fullwidth at", "mail jo.lee＠example.com now", "mail <EMAIL> now"),
    ("[at]", "mail jo.lee [at] example.com now", "mail <EMAIL> now"),
    ("[at] [dot]", "mail jo.lee[at]example[dot]com now", "mail <EMAIL> now"),
    ("(at)", "mail jo.lee(at)example.com now", "mail <EMAIL> now"),
    ("at … dot …", "mail jo.lee at example dot co dot uk now", "mail <EMAIL> now"),
    ("AT … DOT …", "mail JO AT EXAMPLE DOT COM now", "mail <EMAIL> now"),
    ("fullwidth phone", f"call {fullwidth('+44 20 7946 0958')} now", "call <PHONE> now"),
]


@pytest.mark.parametrize(("bypass", "text", "expected"), BYPASSES, ids=[b[0] for b in BYPASSES])
def test_each_bypass_is_redacted(bypass, text, expected):
    assert redact_text(text).text == expected, bypass


def test_the_same_texts_come_out_the_same_in_batches():
    texts = [text for _, text, _ in BYPASSES]
    assert [r.text for r in redact_texts(texts)] == [expected for _, _, expected in BYPASSES]


@pytest.mark.parametrize(
    "text",
    [
        "I was charged $1.200 on 03.05.2024 at 10.30 and €1.200.000,50 later",
        "version 2.3.14 and build 10.0.19045.3693 crash",
        "order 1234.5678.1234.5678 is stuck",  # dotted, fails Luhn
        "order ４０００１２３４１２３４１２３５ is stuck",  # fullwidth, fails Luhn
        "look at this, we met at home dot later",  # "at … dot" without an address shape
        "Please look (at) the settings [dot] page",
        "iban gb00 west 1234 5698 7654 32 fails mod-97",
        "ticket #48213 was closed at 10:30",
    ],
)
def test_look_alikes_stay(text):
    assert redact_text(text).text == text
    assert not has_pii(text)


def test_spans_map_back_to_the_original_characters():
    text = f"Ｈｉ, card 4111{ZWSP}1111{ZWSP}1111{ZWSP}1111, mail jo [at] example.org."
    spans = detect_pii(text)
    assert [(s.kind, text[s.start : s.end]) for s in spans] == [
        ("CARD", f"4111{ZWSP}1111{ZWSP}1111{ZWSP}1111"),
        ("EMAIL", "jo [at] example.org"),
    ]
    # everything that is not PII is kept as written (fullwidth "Ｈｉ" included)
    assert redact_text(text).text == "Ｈｉ, card <CARD>, mail <EMAIL>."


def test_normalize_maps_every_character():
    norm = normalize(f"a{ZWSP}１ b [at] c")
    assert norm.text == "a1 b@c"
    assert norm.original_span(1, 2) == (2, 3)  # "１" sits after the dropped zero-width space
    assert norm.original_span(4, 5) == (5, 11)  # "@" stands for " [at] "
    assert not normalize("plain text, nothing to do").changed
