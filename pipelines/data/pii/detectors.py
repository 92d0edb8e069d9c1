"""Fast PII detectors for scanning stored files: checksums and shapes, plus exact planted values.

The redactor (`pipelines.data.redact`, Presidio) decides what to replace in a message; this module
answers a different question over whole files — "is any PII left on disk?" — so it is plain
regular expressions with the same checks that make it precise, on normalised text
(`pipelines.data.pii.normalize`):

- cards: 13–19 digits, contiguous or in groups (space, dot, hyphen), a card-network prefix and
  length, Luhn-valid;
- IBANs: country code + check digits + the country's exact format (Presidio's per-country
  table), mod-97-valid, any letter case;
- e-mails: `local@domain.suffix` with an alphabetic suffix;
- phones: international (`+CC …`), `(area) …` or NANP `555-555-5555` shapes with 9–15 digits.

`PlantedIndex` finds exact known values (a synthetic world's planted PII) however they are
spaced, grouped or cased.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pipelines.data.pii.normalize import normalized_text

_CARD = re.compile(
    r"(?<![\w.,+-])(?:\d{13,19}|\d{4}(?P<sep>[ .-])\d{3,6}(?:(?P=sep)\d{3,6}){1,3})(?![\w]|[.,-]\d)"
)
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,24}(?![\w-])")
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(0\)\s?)?\(?\d{1,5}\)?(?:[ .-]?\d{2,5}){1,4}"
    r"|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r"|\d{3}-\d{3}-\d{4})(?![\w]|[.-]\d)"
)
# (prefix regex, allowed lengths) of the card networks a customer would paste
_CARD_NETWORKS = (
    (re.compile(r"4"), (13, 16, 19)),  # Visa
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), (16,)),  # Mastercard
    (re.compile(r"3[47]"), (15,)),  # American Express
    (re.compile(r"3(?:0[0-5]|[68])"), (14, 16, 19)),  # Diners Club
    (re.compile(r"35"), (16, 17, 18, 19)),  # JCB
    (re.compile(r"6(?:011|5|4[4-9]|22)"), (16, 17, 18, 19)),  # Discover
    (re.compile(r"62"), (16, 17, 18, 19)),  # UnionPay
)
_SQUEEZE = re.compile(r"[\s.()+/-]")
# digits with separators, or an IBAN-like letters-digits start followed by alphanumeric groups
_NUMBER_RUN = re.compile(
    r"(?<![A-Za-z0-9])(?:[+(]?\d[\d \t.()/-]*\d|[A-Za-z]{2}\d{2}(?:[ .-]?[A-Za-z0-9]{1,4})+)"
    r"(?![A-Za-z0-9])",
    re.ASCII,
)
KINDS = ("card", "iban", "email", "phone")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_valid(code: str) -> bool:
    """Mod-97 check digits and the exact format of the IBAN's country."""
    from presidio_analyzer.predefined_recognizers.generic.iban_patterns import regex_per_country

    code = re.sub(r"[ -]", "", code).upper()
    pattern = regex_per_country.get(code[:2])
    if pattern is None or not re.fullmatch(pattern.replace("[ ]?", ""), code):
        return False
    moved = code[4:] + code[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def _card_valid(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if len(set(digits)) == 1 or not luhn_valid(digits):
        return False
    return any(
        prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_NETWORKS
    )


def _phone_valid(candidate: str) -> bool:
    return 9 <= sum(char.isdigit() for char in candidate) <= 15


_CHECKS = (
    ("card", _CARD, _card_valid),
    ("iban", _IBAN, iban_valid),
    ("email", _EMAIL, lambda _: True),
    ("phone", _PHONE, _phone_valid),
)


def detect(text: str) -> Counter[str]:
    """Counts of PII items by kind in `text` (normalised first); an item is counted once."""
    text = normalized_text(text)
    found: Counter[str] = Counter()
    taken: list[tuple[int, int]] = []
    for kind, pattern, valid in _CHECKS:
        for match in pattern.finditer(text):
            span = match.span()
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue  # a card is not also a phone
            if valid(match.group()):
                found[kind] += 1
                taken.append(span)
    return found


@dataclass(frozen=True)
class PlantedValue:
    """A PII value known to be planted (a synthetic world's), and where it was planted."""

    kind: str  # email, card, phone, iban, name
    value: str
    case_id: str = ""

    @property
    def key(self) -> str:
        """How the value is matched: e-mails and names by lower case, numbers by alphanumerics."""
        if self.kind in ("email", "name"):
            return " ".join(self.value.lower().split())
        return _SQUEEZE.sub("", self.value).upper()


class PlantedIndex:
    """Find exact planted values in text, however they are grouped, spaced or cased.

    E-mails and names are matched as lower-case substrings. Numbers (cards, phones, IBANs) are
    matched inside runs of digits and separators, squeezed to their alphanumerics: a run that
    holds a planted number with at most `SLACK` characters around it (a country prefix, an
    extension) counts, a long run of unrelated digits that merely contains it does not.
    """

    SLACK = 8

    def __init__(self, values: Iterable[PlantedValue]) -> None:
        keyed = {value.key: value for value in values if len(value.key) >= 6}
        self.values = keyed
        self.spaced = [v for v in keyed.values() if v.kind in ("email", "name")]
        self.numbers = {k: v for k, v in keyed.items() if v.kind not in ("email", "name")}
        self.lengths = sorted({len(key) for key in self.numbers})

    def __len__(self) -> int:
        return len(self.values)

    def find(self, text: str) -> list[PlantedValue]:
        """The planted values that occur in `text` (each once)."""
        if not self.values:
            return []
        text = normalized_text(text)
        lowered = " ".join(text.lower().split())
        hits = {value.key: value for value in self.spaced if value.key in lowered}
        if self.numbers:
            for run in _NUMBER_RUN.finditer(text):
                squeezed = _SQUEEZE.sub("", run.group()).upper()
                hits.update((key, self.numbers[key]) for key in self._keys_in(squeezed))
        return list(hits.values())

    def _keys_in(self, squeezed: str) -> Iterable[str]:
        for length in self.lengths:
            if length > len(squeezed) or len(squeezed) - length > self.SLACK:
                continue
            for start in range(len(squeezed) - length + 1):
                if squeezed[start : start + length] in self.numbers:
                    yield squeezed[start : start + length]


@functools.cache
def empty_index() -> PlantedIndex:
    """An index of nothing (scans without a planted list)."""
    return PlantedIndex(())
