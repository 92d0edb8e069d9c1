"""Presidio engines for casepilot's PII kinds, built once per process and per `PiiConfig`.

Presidio's pattern recognizers do the checking that makes redaction precise: cards are
Luhn-validated (`CreditCardRecognizer`), IBANs mod-97-validated (`IbanRecognizer`), phones
parsed by Google's `phonenumbers` (`PhoneRecognizer`). Two adjustments keep it offline and
complete:

- the NLP engine is a blank spaCy English pipeline (a tokenizer, no model download); PERSON
  comes from `NameListRecognizer` instead of spaCy NER;
- the card recognizer also takes "." between digit groups and IBANs are found in lower case too;
  `pipelines.data.pii.normalize` (NFKC, zero-width characters, "[at]" e-mails) runs before all of
  them;
- the e-mail validator reads tldextract's bundled public-suffix snapshot instead of fetching the
  live list; the card recognizer also knows 2-series Mastercard numbers (still Luhn-checked);
  a phone-shape pattern catches well-formed numbers whose area code
  `phonenumbers` does not know (customers mistype, test data invents).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
)

from pipelines.data.pii.names import NameListRecognizer
from pipelines.data.pii.normalize import offline_tld_extractor

if TYPE_CHECKING:
    from pipelines.config import PiiConfig

# Presidio entity type → casepilot kind (and placeholder `<KIND>`).
KIND_OF_ENTITY = {
    "EMAIL_ADDRESS": "EMAIL",
    "CREDIT_CARD": "CARD",
    "PHONE_NUMBER": "PHONE",
    "IBAN_CODE": "IBAN",
    "PERSON": "PERSON",
}
DIGIT_ENTITIES = ("CREDIT_CARD", "PHONE_NUMBER", "IBAN_CODE")
# Fewer digits than this cannot be a phone, card or IBAN: those recognizers are skipped.
MIN_DIGITS = 7

# Presidio's card pattern predates Mastercard's 2221-2720 range and only knows "-" and " "
# between digit groups; these also take "." (normalisation already dropped zero-width
# characters and folded dashes). Every match is still Luhn-checked.
_CARD_SEPARATORS = [("-", ""), (" ", ""), (".", "")]
_CARD_PATTERNS = [
    Pattern(
        "Cards, any separator",
        r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))"
        r"[-. ]?(\d{3,4})[-. ]?(\d{3,4})[-. ]?(\d{3,5})\b",
        0.3,
    ),
    Pattern("Mastercard 2-series", r"\b2[2-7]\d{2}[-. ]?\d{4}[-. ]?\d{4}[-. ]?\d{4}\b", 0.3),
]
_PHONE_SHAPES = [
    Pattern(
        "NANP phone shape",
        r"(?<![\w.+])(?:\+?1[-. ]?|001[-. ])?(?:\(\d{3}\)\s?|\d{3}[-. ]?)\d{3}[-. ]\d{4}"
        r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?\b",
        0.4,
    ),
    Pattern(
        "International phone shape",
        r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(0\)\s?)?\(?\d{1,5}\)?(?:[\s.-]?\d{2,5}){1,4}\b",
        0.4,
    ),
]


class BlankSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine on `spacy.blank(lang)`: tokens for context words, no model files."""

    def __init__(self, language: str = "en") -> None:
        super().__init__(models=[{"lang_code": language, "model_name": f"blank:{language}"}])
        self.language = language

    def load(self) -> None:
        import spacy

        self.nlp = {self.language: spacy.blank(self.language)}


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating domains against the bundled suffix list.

    An alphabetic but unknown top-level domain still counts: "jo@gmail.con" is a typo that
    identifies a person just as well.
    """

    def validate_result(self, pattern_text: str) -> bool:
        known = offline_tld_extractor()(pattern_text).fqdn != ""
        return known or pattern_text.rsplit(".", 1)[-1].isalpha()


# A calendar date written with dots, slashes or dashes (03.05.2024, 2024/03/05): `phonenumbers`
# reads some as valid numbers ("03.05.2024" is a Berlin number), no customer means one.
_DATE = re.compile(
    r"(?:[0-3]?\d[./-][01]?\d[./-](?:19|20)\d\d|(?:19|20)\d\d[./-][01]?\d[./-][0-3]?\d)"
)


class DateAwarePhoneRecognizer(PhoneRecognizer):
    """Presidio's `phonenumbers`-based phone recognizer, minus matches that are dates."""

    def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001, ANN201
        results = super().analyze(text, entities, nlp_artifacts)
        return [r for r in results if not _DATE.fullmatch(text[r.start : r.end].strip())]


class CaseInsensitiveIbanRecognizer(IbanRecognizer):
    """Presidio's IBAN recognizer (mod-97 checked) that also finds IBANs typed in lower case.

    It matches on an upper-cased copy of the text with the same length (characters whose upper
    case is longer, like "ß", are left as they are), so the offsets are the original ones.
    """

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):  # noqa: ANN001, ANN201
        if text.isascii():
            upper = text.upper()
        else:
            upper = "".join(c.upper() if len(c.upper()) == 1 else c for c in text)
        return super().analyze(upper, entities, nlp_artifacts, regex_flags)


@functools.cache
def analyzer_engine(cfg: PiiConfig) -> AnalyzerEngine:
    """Return the Presidio analyzer for `cfg` (cached: built once per process and config)."""
    nlp_engine = BlankSpacyNlpEngine()
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    recognizers = [
        OfflineEmailRecognizer(),
        CreditCardRecognizer(patterns=_CARD_PATTERNS, replacement_pairs=_CARD_SEPARATORS),
        CaseInsensitiveIbanRecognizer(),
        DateAwarePhoneRecognizer(supported_regions=tuple(cfg.phone_regions), leniency=1),
        PatternRecognizer(
            supported_entity="PHONE_NUMBER", patterns=_PHONE_SHAPES, name="PhoneShape"
        ),
    ]
    if cfg.detect_person:
        recognizers.append(NameListRecognizer())
    for recognizer in recognizers:
        registry.add_recognizer(recognizer)
    engine = AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=["en"],
        default_score_threshold=cfg.min_score,
    )
    for recognizer in recognizers:
        recognizer.load()
    return engine


def entities_worth_running(text: str, cfg: PiiConfig) -> list[str]:
    """Return the Presidio entities `text` could contain at all (skips hopeless recognizers)."""
    entities = ["PERSON"] if cfg.detect_person else []
    if "@" in text:
        entities.append("EMAIL_ADDRESS")
    if sum(char.isdigit() for char in text) >= MIN_DIGITS:
        entities.extend(DIGIT_ENTITIES)
    return entities
