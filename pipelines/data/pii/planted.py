"""Synthetic support messages with planted PII, for redaction tests and the benchmark.

Each message mixes support phrasing, look-alikes that must survive redaction (amounts, dates,
Luhn-failing order numbers, menu paths) and, with probability `pii_share`, one to three pieces
of real-looking PII made by Faker (cards are Luhn-valid, IBANs mod-97-valid).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Text that looks numeric or name-like but is not PII; every one must come out unchanged.
KEEP = (
    "I was charged $1,200 twice",
    "the refund of €49.99 from 2024-03-05 never arrived",
    "my payout on 03/05/2024 at 10:30 is late",
    "Settings → Payouts shows nothing",
    "order 1234567812345678 is stuck",  # 16 digits, fails Luhn
    "order 4000123412341235 is stuck",  # Visa-like prefix, fails Luhn
    "ticket #48213 was closed",
    "version 2.3.14 of the app crashes",
    "the Instant Transfer fee is 1.5%",
)
# Faker's card types of 13+ digits (Presidio, like most redactors, skips 12-digit Maestro).
CARD_TYPES = ("visa16", "visa13", "mastercard", "amex", "discover", "jcb16", "diners")
TEMPLATES = {
    "EMAIL": "you can reach me at {}",
    "CARD": "my card {} was declined",
    "PHONE": "call me back on {}",
    "IBAN": "please send it to IBAN {}",
    "PERSON": "my name is {}",
}


@dataclass(frozen=True)
class PlantedMessage:
    """A message and the PII values planted in it, as (kind, value) pairs."""

    text: str
    planted: tuple[tuple[str, str], ...]


def planted_messages(n: int, *, seed: int = 0, pii_share: float = 0.5) -> list[PlantedMessage]:
    """Return `n` messages; a `pii_share` of them carry planted PII of random kinds."""
    from faker import Faker

    fake = Faker(["en_US", "en_GB"])
    fake.seed_instance(seed)
    rng = random.Random(seed)
    makers = {
        "EMAIL": fake.email,
        "CARD": lambda: _card(fake.credit_card_number(rng.choice(CARD_TYPES)), rng),
        "PHONE": lambda: _phone(fake.phone_number()),
        "IBAN": lambda: _group(fake["en_GB"].iban(), rng),
        "PERSON": fake.name,
    }
    messages = []
    for _ in range(n):
        parts = [rng.choice(KEEP)]
        planted = []
        if rng.random() < pii_share:
            for kind in rng.sample(list(TEMPLATES), k=rng.randint(1, 3)):
                value = makers[kind]()
                planted.append((kind, value))
                parts.append(TEMPLATES[kind].format(value))
        rng.shuffle(parts)
        messages.append(PlantedMessage("Hello, " + ", and ".join(parts) + ".", tuple(planted)))
    return messages


# How card numbers are printed, by length: Visa-13 4-3-3-3, Diners 4-6-4, Amex 4-6-5, else 4s.
CARD_LAYOUT = {13: (4, 3, 3, 3), 14: (4, 6, 4), 15: (4, 6, 5)}


def _card(digits: str, rng: random.Random) -> str:
    """Write a card number as printed on the card, joined by spaces, dashes or nothing."""
    layout = CARD_LAYOUT.get(len(digits), (4,) * (len(digits) // 4))
    groups, start = [], 0
    for size in layout:
        groups.append(digits[start : start + size])
        start += size
    return rng.choice(["", " ", "-"]).join(groups)


def _group(code: str, rng: random.Random, size: int = 4) -> str:
    """Write an IBAN plain or in groups of four, as banks print it."""
    sep = rng.choice(["", " "])
    return sep.join(code[i : i + size] for i in range(0, len(code), size))


def _phone(number: str) -> str:
    """Faker writes some US numbers as 10 bare digits; customers write those as (415) 555-0132."""
    if number.isdigit() and len(number) == 10:
        return f"({number[:3]}) {number[3:6]}-{number[6:]}"
    return number
