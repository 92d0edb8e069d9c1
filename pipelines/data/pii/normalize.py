"""Text normalisation before PII detection, with a map back to the original characters.

Customers (and people hiding data from filters) write PII in ways a recognizer tuned to clean
text misses: fullwidth digits and `＠` (undone by Unicode NFKC), zero-width or other invisible
format characters inside a card number (dropped), and e-mails spelled "jo [at] example [dot] com",
"jo(at)example.com" or "jo at example dot com" (rewritten to `jo@example.com`). Digit groups
joined by dots are handled by the recognizers themselves (`pipelines.data.pii.engine`), because a
dot between digits is also how amounts, dates and versions are written.

`normalize` returns the normalised text together with, for every character of it, the span of
original characters it came from, so a span found in the normalised text maps back onto the
original exactly (`Normalized.original_span`): redaction replaces original characters and
leaves everything that is not PII byte-for-byte unchanged.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# "[at]", "(at)", "{at}", "<at>" with optional spaces around; likewise "dot".
_BRACKETED_AT = re.compile(r"\s*[\[({<]\s*at\s*[\])}>]\s*", re.IGNORECASE)
_BRACKETED_DOT = re.compile(r"\s*[\[({<]\s*dot\s*[\])}>]\s*", re.IGNORECASE)
# "jo.lee at example dot com": the bare words need at least one " dot " and a real domain suffix
# at the end to count as an e-mail, so "look at this" and "met at home dot later" stay prose.
_SPELLED_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+(\s+at\s+)[\w-]+((?:\s+dot\s+[\w-]+)+)\b", re.IGNORECASE
)
_SPELLED_DOT = re.compile(r"\s+dot\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Normalized:
    """Normalised text; `starts[i]:ends[i]` is the original span its character `i` came from."""

    original: str
    text: str
    starts: Sequence[int]
    ends: Sequence[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters behind normalised `text[start:end]` (end exclusive)."""
        if start >= end:
            position = self.starts[start] if start < len(self.starts) else len(self.original)
            return position, position
        return self.starts[start], self.ends[end - 1]

    @property
    def changed(self) -> bool:
        """Whether normalisation changed anything (the common case is clean text: no)."""
        return self.text != self.original


def normalize(text: str) -> Normalized:
    """NFKC per character, invisible format characters dropped, obfuscated e-mails rewritten."""
    if text.isascii():  # the common case: nothing to fold, characters map one to one
        return _rewrite_emails(Normalized(text, text, range(len(text)), range(1, len(text) + 1)))
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for index, char in enumerate(text):
        if unicodedata.category(char) == "Cf":  # zero-width space/joiners, BOM, soft hyphen
            continue
        folded = _fold(char) if ord(char) > 127 else char
        for piece in folded:
            chars.append(piece)
            starts.append(index)
            ends.append(index + 1)
    normalized = Normalized(text, "".join(chars), tuple(starts), tuple(ends))
    return _rewrite_emails(normalized)


def normalized_text(text: str) -> str:
    """The normalised text alone, without the offset map: the fast path for scanning files."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text.translate(_format_and_dashes()))
    edits = _email_edits(text)
    if not edits:
        return text
    pieces, position = [], 0
    for start, end, repl in _without_overlaps(edits):
        pieces += [text[position:start], repl]
        position = end
    return "".join([*pieces, text[position:]])


@functools.cache
def _format_and_dashes() -> dict[int, str | None]:
    """A `str.translate` table: format characters (Cf) dropped, dashes (Pd) made "-"."""
    table: dict[int, str | None] = {}
    # every Cf and Pd character lies below U+30000 or in the tag block U+E0000–U+E007F
    for code in [*range(128, 0x30000), *range(0xE0000, 0xE0080)]:
        category = unicodedata.category(chr(code))
        if category == "Cf":
            table[code] = None
        elif category == "Pd":
            table[code] = "-"
    return table


def _fold(char: str) -> str:
    """NFKC of one character; any dash (en dash, non-breaking hyphen, …) becomes "-"."""
    if unicodedata.category(char) == "Pd":
        return "-"
    return unicodedata.normalize("NFKC", char)


def _rewrite_emails(norm: Normalized) -> Normalized:
    """Turn "[at]"/"(at)"/" at … dot …" spellings into `@` and `.` (mapped to what they replace)."""
    edits = _email_edits(norm.text)
    return _apply(norm, edits) if edits else norm


def _email_edits(text: str) -> list[tuple[int, int, str]]:
    """The `(start, end, replacement)` edits that turn spelled-out e-mails into addresses."""
    lowered = text.lower()
    if "at" not in lowered:
        return []
    edits: list[tuple[int, int, str]] = []
    for pattern, repl in ((_BRACKETED_AT, "@"), (_BRACKETED_DOT, ".")):
        edits.extend((m.start(), m.end(), repl) for m in pattern.finditer(text))
    for match in _SPELLED_EMAIL.finditer(text):
        if not _is_suffix(match.group(0).rsplit(maxsplit=1)[-1]):
            continue  # "met at home dot later": no address ends in a word that is no domain
        edits.append((match.start(1), match.end(1), "@"))
        offset = match.start(2)
        for dot in _SPELLED_DOT.finditer(match.group(2)):
            edits.append((offset + dot.start(), offset + dot.end(), "."))
    return edits


def _without_overlaps(edits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Edits in order, dropping any that overlaps an earlier one."""
    kept: list[tuple[int, int, str]] = []
    for edit in sorted(edits):
        if not kept or edit[0] >= kept[-1][1]:
            kept.append(edit)
    return kept


def _is_suffix(label: str) -> bool:
    """Whether `label` is a public domain suffix ("com", "uk", "io"), from tldextract's snapshot."""
    return offline_tld_extractor()(f"example.{label.lower()}").suffix == label.lower()


@functools.cache
def offline_tld_extractor():  # noqa: ANN201 - tldextract.TLDExtract
    """tldextract on the public-suffix snapshot shipped in its wheel (no download, no cache dir)."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _apply(norm: Normalized, edits: list[tuple[int, int, str]]) -> Normalized:
    """Replace non-overlapping `(start, end, replacement)` ranges of the normalised text."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    for start, end, repl in _without_overlaps(edits):
        chars.extend(norm.text[position:start])
        starts.extend(norm.starts[position:start])
        ends.extend(norm.ends[position:start])
        for piece in repl:
            chars.append(piece)
            starts.append(norm.starts[start])
            ends.append(norm.ends[end - 1])
        position = end
    chars.extend(norm.text[position:])
    starts.extend(norm.starts[position:])
    ends.extend(norm.ends[position:])
    return Normalized(norm.original, "".join(chars), tuple(starts), tuple(ends))
