"""Text metrics for the generator stages: ROUGE-L, groundedness, facts and faithfulness, tone.

ROUGE-L comes from Google's `rouge-score` package (the reference implementation). Groundedness
and faithfulness are token/fact overlaps; the tone score is a small, explainable proxy of the
house style (see `tone_score`), not a learned classifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

_WORD = re.compile(r"<[A-Z_]+>|[a-z0-9]+(?:[.,'][a-z0-9]+)*", re.IGNORECASE)

# Facts a rewrite must keep: placeholders, amounts and numbers, menu paths, product terms.
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*>")
# A number is a whole token: "3D Secure" and "2xx" hold none, "1099-K" holds 1099.
_AMOUNT = re.compile(
    r"(?<![\w.])(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?(?:\s?(?:%|[$€£]|USD|EUR|GBP))?)"
    r"(?![A-Za-z0-9_])"
)
_ARROW = re.compile(r"\s*(?:→|->|»)\s*|\s+>\s+")  # a bare ">" only between spaces: not <EMAIL>
_SEP = r"(?:\s*(?:→|->|»)\s*|\s+>\s+)"
_SEP_RE = re.compile(_SEP)
# Inner segments may hold lower-case words ("Bank accounts →"); the last one is read up to its
# capitalised words only, as the sentence goes on after it ("→ Bank accounts prior to retry").
MENU_PATH = re.compile(
    rf"(?:[A-Z][\w&'-]*(?: [A-Za-z][\w&'-]*){{0,3}}?{_SEP})+[A-Z][\w&'-]*(?: [A-Z][\w&'-]*)*"
)


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of `prediction` against `reference`, in [0, 1] (0 when either is empty)."""
    if not prediction.strip() or not reference.strip():
        return 0.0
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)


def words(text: str) -> list[str]:
    """Lower-case word tokens (numbers kept whole, placeholders such as <EMAIL> kept as is)."""
    return [w if w.startswith("<") else w.lower() for w in _WORD.findall(text)]


def groundedness(reply: str, context: Iterable[str]) -> float:
    """Share of the reply's word tokens that occur in the context (message + retrieved text)."""
    tokens = words(reply)
    if not tokens:
        return 0.0
    known = {w for text in context for w in words(text)}
    return sum(w in known for w in tokens) / len(tokens)


def _norm(text: str) -> str:
    return " ".join(_ARROW.sub(" → ", text).split()).lower()


def has_term(text: str, term: str) -> bool:
    """True when `term` occurs in `text` as whole words, same case ("US" is not in "business")."""
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text) is not None


def strip_menu_paths(text: str) -> str:
    """`text` without its menu paths (the words before a path's first item stay)."""
    return MENU_PATH.sub(lambda m: " ".join(_SEP_RE.split(m.group())[0].split()[:-1]) + " ", text)


def _menu_path(match: str) -> str:
    # The first segment keeps its last word only: "Or Settings → Cards" is "settings → cards".
    first, *rest = _norm(match).split(" → ")
    return " → ".join([first.split()[-1], *rest])


def extract_facts(text: str, product_terms: Sequence[str] = ()) -> set[str]:
    """The facts in `text`, normalised: placeholders, amounts/numbers, menu paths, product terms."""
    facts = set(_PLACEHOLDER.findall(text))
    facts |= {_norm(m.group()).rstrip(".,") for m in _AMOUNT.finditer(text) if m.group().strip()}
    facts |= {_menu_path(m.group()) for m in MENU_PATH.finditer(text)}
    facts |= {term.lower() for term in product_terms if has_term(text, term)}
    return {f for f in facts if f}


def lost_facts(draft: str, rewrite: str, product_terms: Sequence[str] = ()) -> list[str]:
    """Facts of the draft that the rewrite no longer states, sorted."""
    kept = _norm(rewrite)
    facts = extract_facts(draft, product_terms)
    # Whole-token presence: "5" is not kept by "25", "$10" is not kept by "$100".
    return sorted(
        f for f in facts if not re.search(rf"(?<!\w){re.escape(f.lower())}(?![\w])", kept)
    )


def faithfulness(draft: str, rewrite: str, product_terms: Sequence[str] = ()) -> float:
    """Share of the draft's facts that survive in the rewrite (1.0 when the draft states none)."""
    facts = extract_facts(draft, product_terms)
    if not facts:
        return 1.0
    return 1.0 - len(lost_facts(draft, rewrite, product_terms)) / len(facts)


_CONTRACTION = re.compile(r"\b\w+'(?:s|re|ll|ve|d|m|t)\b", re.IGNORECASE)
_FRIENDLY = re.compile(
    r"\b(?:hi|hey|hello|thanks|thank you|happy to help|glad|no worries|sure|great)\b", re.IGNORECASE
)
STIFF_PHRASES = (
    "dear customer",
    "dear valued customer",
    "we regret to inform",
    "please be advised",
    "please be informed",
    "kindly",
    "hereby",
    "in accordance with",
    "do not hesitate",
    "your request has been",
    "we acknowledge receipt",
    "as per",
    "it is required",
    "the user must",
    "the customer must",
    "is not possible",
    "at your earliest convenience",
    "prior to",
    "may be",
    "must be",
    "upon",
    "subsequent",
    "in order to",
    "is available under",
)


def tone_score(text: str, *, target_words: int = 60) -> float:
    """House-style proxy in [0, 1]: the mean of four checks.

    contractions present; a friendly word (hi, thanks, happy to help ...); no stiff phrase from
    `STIFF_PHRASES`; succinct (1 up to `target_words` words, falling linearly to 0 at twice that).
    """
    if not text.strip():
        return 0.0
    lowered = text.lower()
    count = len(text.split())
    succinct = min(1.0, max(0.0, 2.0 - count / target_words))
    checks = (
        1.0 if _CONTRACTION.search(text) else 0.0,
        1.0 if _FRIENDLY.search(text) else 0.0,
        0.0 if any(p in lowered for p in STIFF_PHRASES) else 1.0,
        succinct,
    )
    return sum(checks) / len(checks)


def near_match(prediction: str, reference: str, threshold: float = 0.8) -> bool:
    """True when the prediction's ROUGE-L F1 against the reference reaches `threshold`."""
    return rouge_l(prediction, reference) >= threshold


def exact_match(prediction: str, reference: str) -> bool:
    """True when both texts are equal up to case and whitespace."""
    return " ".join(prediction.lower().split()) == " ".join(reference.lower().split())
