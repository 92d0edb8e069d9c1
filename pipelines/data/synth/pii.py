"""Planted PII for synthetic messages: emails, Luhn-valid cards, phones, mod-97-valid IBANs, names.

Values come from Faker instances seeded from the day's RNG (never Faker's shared class-level
random), so a world is byte-identical for a seed with the pinned Faker version. Phone numbers
use fictional ranges (US 555-01xx, UK 020 7946 0xxx, FR 01 99 00) in formats customers type.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pipelines.data.synth.catalog import PiiKind

PII_KINDS: tuple[PiiKind, ...] = ("email", "card", "phone", "iban", "name")
LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR")
NAME_LOCALES = ("en_US", "en_GB")
IBAN_LOCALES = ("de_DE", "en_GB", "fr_FR")
CARD_TYPES = ("visa16", "mastercard", "amex", "discover")
# How card numbers are printed, by length: Amex 4-6-5, the rest in fours.
CARD_LAYOUT = {15: (4, 6, 5), 16: (4, 4, 4, 4)}
US_AREAS = ("415", "212", "312", "617", "503", "206", "512", "303")
PHONE_FORMATS = (
    "+1 {area} 555 01{d2}",
    "({area}) 555-01{d2}",
    "{area}-555-01{d2}",
    "+1 ({area}) 555-01{d2}",
    "(020) 7946 0{d3}",
    "+44 20 7946 0{d3}",
    "020 7946 0{d3}",
    "+33 1 99 00 {d2} {d2b}",
    "+49 30 90182{d3}",
)


def make_fakers() -> dict[str, Any]:
    """One Faker per locale (Faker imports lazily; it is only needed while generating)."""
    from faker import Faker

    return {locale: Faker(locale) for locale in LOCALES}


class PiiMaker:
    """Makes PII values of each kind from one RNG; reseeds the given Fakers from it."""

    def __init__(self, fakers: dict[str, Any], rng: random.Random) -> None:
        self.fakers = fakers
        self.rng = rng
        for locale in LOCALES:
            fakers[locale].seed_instance(rng.getrandbits(64))

    def value(self, kind: PiiKind) -> str:
        return getattr(self, kind)()

    def name(self) -> str:
        fake = self.fakers[self.rng.choice(NAME_LOCALES)]
        return f"{fake.first_name()} {fake.last_name()}"

    def email(self) -> str:
        first, last = (re.sub(r"[^a-z]", "", part.lower()) for part in self.name().split(" ", 1))
        fake = self.fakers["en_US"]
        domain = fake.free_email_domain() if self.rng.random() < 0.7 else fake.domain_name()
        local = self.rng.choice(
            (f"{first}.{last}", f"{first[0]}{last}", f"{first}{self.rng.randint(1, 99)}", first)
        )
        return f"{local}@{domain}"

    def card(self) -> str:
        digits = self.fakers["en_US"].credit_card_number(self.rng.choice(CARD_TYPES))
        layout = CARD_LAYOUT.get(len(digits), (len(digits),))
        groups, start = [], 0
        for size in layout:
            groups.append(digits[start : start + size])
            start += size
        return self.rng.choice(("", " ", " ", "-")).join(groups)

    def phone(self) -> str:
        digits = self.rng.randrange
        return self.rng.choice(PHONE_FORMATS).format(
            area=self.rng.choice(US_AREAS),
            d2=f"{digits(100):02d}",
            d2b=f"{digits(100):02d}",
            d3=f"{digits(1000):03d}",
        )

    def iban(self) -> str:
        code = self.fakers[self.rng.choice(IBAN_LOCALES)].iban()
        if self.rng.random() < 0.4:
            return code
        return " ".join(code[i : i + 4] for i in range(0, len(code), 4))
