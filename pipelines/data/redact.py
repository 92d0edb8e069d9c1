"""PII redaction (issue 3.4): find e-mails, cards, phones, IBANs and names; replace with `<KIND>`.

Runs before anything is stored in the accepted dataset, indexed or logged. Detection is
Presidio's analyzer with the offline recognizers of `pipelines.data.pii.engine` (Luhn for cards,
mod-97 for IBANs, `phonenumbers` for phones, name lists for people); replacement is
Presidio's anonymizer. Engines are built on first use and cached per process.

Detection runs on a normalised copy of the text (`pipelines.data.pii.normalize`: NFKC, zero-width
characters dropped, "[at]"/"(at)"/" at … dot …" e-mails rewritten); every span is mapped back
to the original characters, so the redacted text is the ORIGINAL text with each PII span
replaced, and everything else unchanged.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipelines.config import PiiConfig
from pipelines.data.contract import LabeledCase, Turn
from pipelines.data.pii.normalize import Normalized, normalize

PiiKind = Literal["EMAIL", "CARD", "PHONE", "IBAN", "PERSON"]
PII_KINDS: tuple[PiiKind, ...] = ("EMAIL", "CARD", "PHONE", "IBAN", "PERSON")
DEFAULT_PII = PiiConfig()


@dataclass(frozen=True)
class PiiSpan:
    """One piece of PII: its kind and character offsets in the text."""

    kind: PiiKind
    start: int
    end: int
    score: float = 1.0


@dataclass(frozen=True)
class RedactedText:
    """A text with every PII span replaced by `<KIND>`, and how many of each kind."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def redacted(self) -> bool:
        """Whether anything was replaced."""
        return bool(self.counts)


@dataclass(frozen=True)
class RedactionStats:
    """What `redact_cases` replaced: cases and texts touched, spans per kind."""

    cases: int
    cases_redacted: int
    texts: int
    texts_redacted: int
    counts: dict[str, int]


def detect_pii(text: str, cfg: PiiConfig = DEFAULT_PII) -> list[PiiSpan]:
    """Return the non-overlapping PII spans in `text`, in order."""
    return _detect(normalize(text), cfg, nlp_artifacts=None)


def has_pii(text: str, cfg: PiiConfig = DEFAULT_PII) -> bool:
    """Whether `text` contains any PII (for the validation PII-rate expectation)."""
    return bool(detect_pii(text, cfg))


def redact_text(text: str, cfg: PiiConfig = DEFAULT_PII) -> RedactedText:
    """Return `text` with PII replaced by `<EMAIL>`, `<CARD>`, `<PHONE>`, `<IBAN>`, `<PERSON>`."""
    return _replace(text, detect_pii(text, cfg))


def redact_texts(texts: Sequence[str], cfg: PiiConfig = DEFAULT_PII) -> list[RedactedText]:
    """Redact many texts: one engine, spaCy tokenizing in batches, repeated texts done once."""
    from pipelines.data.pii.engine import analyzer_engine

    unique = [normalize(text) for text in dict.fromkeys(texts)]
    nlp = analyzer_engine(cfg).nlp_engine
    batches = nlp.process_batch([norm.text for norm in unique], language="en", batch_size=256)
    done = {
        norm.original: _replace(norm.original, _detect(norm, cfg, nlp_artifacts=artifacts))
        for norm, (_, artifacts) in zip(unique, batches, strict=True)
    }
    return [done[text] for text in texts]


def redact_cases(
    cases: Sequence[LabeledCase], cfg: PiiConfig = DEFAULT_PII
) -> tuple[list[LabeledCase], RedactionStats]:
    """Redact every case's message, context turns, agent reply and reply draft."""
    texts = [text for case in cases for text in _case_texts(case)]
    redacted = iter(redact_texts(texts, cfg))
    out, counts, texts_redacted, cases_redacted = [], Counter(), 0, 0
    for case in cases:
        results = [next(redacted) for _ in _case_texts(case)]
        touched = [result for result in results if result.redacted]
        for result in touched:
            counts.update(result.counts)
        texts_redacted += len(touched)
        cases_redacted += bool(touched)
        out.append(case.model_copy(update=_case_update(case, results)) if touched else case)
    stats = RedactionStats(len(cases), cases_redacted, len(texts), texts_redacted, dict(counts))
    return out, stats


def _case_texts(case: LabeledCase) -> Iterable[str]:
    yield case.message
    yield from (turn.text for turn in case.context)
    if case.agent_reply is not None:
        yield case.agent_reply
    if case.reply_draft is not None:
        yield case.reply_draft


def _case_update(case: LabeledCase, results: list[RedactedText]) -> dict:
    texts = iter(result.text for result in results)
    update: dict = {"message": next(texts)}
    update["context"] = tuple(Turn(role=turn.role, text=next(texts)) for turn in case.context)
    if case.agent_reply is not None:
        update["agent_reply"] = next(texts)
    if case.reply_draft is not None:
        update["reply_draft"] = next(texts)
    return update


def _detect(norm: Normalized, cfg: PiiConfig, nlp_artifacts) -> list[PiiSpan]:  # noqa: ANN001
    """Spans found in the normalised text, as offsets into the original text."""
    from pipelines.data.pii.engine import KIND_OF_ENTITY, analyzer_engine, entities_worth_running

    entities = entities_worth_running(norm.text, cfg)
    if not entities or not norm.text:
        return []
    results = analyzer_engine(cfg).analyze(
        norm.text, language="en", entities=entities, nlp_artifacts=nlp_artifacts
    )
    spans = [
        PiiSpan(KIND_OF_ENTITY[r.entity_type], *norm.original_span(r.start, r.end), r.score)
        for r in results
    ]
    return _non_overlapping(spans)


def _non_overlapping(spans: list[PiiSpan]) -> list[PiiSpan]:
    """Keep the strongest span where spans overlap (higher score, then longer)."""
    kept: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (-s.score, s.start - s.end, s.start)):
        if all(span.end <= other.start or span.start >= other.end for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def _replace(text: str, spans: list[PiiSpan]) -> RedactedText:
    if not spans:
        return RedactedText(text, {})
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    result = _anonymizer().anonymize(
        text=text,
        analyzer_results=[RecognizerResult(s.kind, s.start, s.end, s.score) for s in spans],
        operators={
            kind: OperatorConfig("replace", {"new_value": f"<{kind}>"}) for kind in PII_KINDS
        },
    )
    return RedactedText(result.text, dict(Counter(item.entity_type for item in result.items)))


@functools.cache
def _anonymizer():  # noqa: ANN202 - presidio_anonymizer.AnonymizerEngine
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()
