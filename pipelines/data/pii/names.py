"""Person-name detection without an NER model: Faker's name lists plus cue phrases.

No spaCy NER model can be installed here (spaCy's models are not on PyPI under their own
names), so names are found the way a deny-list recognizer finds them, restricted to spans a
human reader would also call a name:

- a capitalised known first name followed by a capitalised known last name ("Dana Whitfield");
- a capitalised known first name after a cue: "my name is", "this is", "I'm", a greeting
  ("Hi", "Dear") or a sign-off ("Thanks,", "Regards,") — "Hi Sarah," becomes "Hi <PERSON>,";
- any capitalised word(s) after a title ("Mr", "Ms", "Dr") or "my name is".

The name lists are Faker's per-locale person providers (a maintained, versioned data source).
"""

from __future__ import annotations

import functools
import importlib
import re

from presidio_analyzer import LocalRecognizer, RecognizerResult

NAME_LOCALES = ("en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
# Capitalised words that are in Faker's lists but are, in support messages, almost never names.
_NOT_NAMES = (
    "April August June May March Will Chase Bill Mark Page Case Grace Hope Joy Price Rich "
    "Long Love Best Young King Green Bond Ward Hall Frank Jordan Card Pay Transfer Bank Cash "
    "Sterling Paris London Sunday Monday Settings Support Team Thanks Hello"
)
NOT_NAMES = frozenset(_NOT_NAMES.split())
_WORD = r"[A-Z][a-zà-ÿ]+(?:[-'’][A-Z]?[a-zà-ÿ]+)?"
_CUE = (
    r"(?:[Mm]y name is|[Tt]his is|I'm|I am|[Hh]i|[Hh]ello|[Hh]ey|[Dd]ear|[Tt]hanks,?|"
    r"[Tt]hank you,?|[Rr]egards,?|[Cc]heers,?|[Bb]est,?|[Ss]incerely,?)"
)
# a lookahead, so "Hi Dana Whitfield" still tries the pair starting at "Dana"
_PAIR = re.compile(rf"(?=\b({_WORD})\s+({_WORD})\b)")
_CUED = re.compile(rf"\b{_CUE}\s+({_WORD})\b")
_TITLED = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+({_WORD}(?:\s+{_WORD})?)")
_INTRODUCED = re.compile(rf"\b[Mm]y name is\s+({_WORD}(?:\s+{_WORD})?)")


@functools.cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """Return (first names, last names) from Faker's person providers, minus common words."""
    first: set[str] = set()
    last: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr, bucket in (("first_names", first), ("last_names", last)):
            bucket.update(name for name in getattr(provider, attr, ()) if name.isalpha())
    return frozenset(first - NOT_NAMES), frozenset(last - NOT_NAMES)


def find_names(text: str) -> list[tuple[int, int]]:
    """Return (start, end) spans of person names in `text` (overlaps are merged by the caller)."""
    first, last = name_lists()
    spans = []
    for match in _PAIR.finditer(text):
        if match.group(1) in first and match.group(2) in last:
            spans.append((match.start(1), match.end(2)))
    for match in _CUED.finditer(text):
        if match.group(1) in first:
            spans.append(_extend_surname(text, match.span(1)))
        elif match.group(1) in NOT_NAMES:  # "Thanks, Grace Thompson": a known surname decides
            follow = re.match(rf"[ \t]+({_WORD})\b", text[match.end(1) :])
            if follow and follow.group(1) in last:
                spans.append((match.start(1), match.end(1) + follow.end()))
    for pattern in (_TITLED, _INTRODUCED):
        spans.extend(match.span(1) for match in pattern.finditer(text))
    return spans


def _extend_surname(text: str, span: tuple[int, int]) -> tuple[int, int]:
    """After a cued first name, a capitalised word on the same line is taken as the surname."""
    follow = re.match(rf"[ \t]+({_WORD})\b", text[span[1] :])
    if follow and follow.group(1) not in NOT_NAMES:
        return span[0], span[1] + follow.end()
    return span


class NameListRecognizer(LocalRecognizer):
    """A Presidio recognizer for PERSON built on `find_names` (no NER model needed)."""

    SCORE = 0.6

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], supported_language="en", name="NameList")

    def load(self) -> None:
        name_lists()

    def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001 - Presidio's signature
        return [
            RecognizerResult(
                "PERSON",
                start,
                end,
                self.SCORE,
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for start, end in find_names(text)
        ]
