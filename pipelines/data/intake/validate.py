"""Validate one batch: computed checks + the GE suite → a saved, logged `ValidationSummary`.

The reference a batch is judged against is the accepted data so far, or the file named by
`data.validation.reference`; the taxonomy is `data.validation.taxonomy` (else the reference's
topics). Each result is saved as `validation/<batch_id>/summary.json` and `report.html`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Params
from pipelines.data.contract import LabeledCase, read_jsonl, read_parquet
from pipelines.data.intake.checks import Embed, compute_checks, load_taxonomy
from pipelines.data.intake.sources import resolve_under
from pipelines.data.intake.store import IntakePaths, atomic_text, load_accepted
from pipelines.data.intake.suite import ValidationSummary, render_html, run_suite, summarise

log = logging.getLogger("casepilot.intake")


@dataclass
class Judge:
    """What batches are judged against; grows as batches are accepted within one run."""

    params: Params
    paths: IntakePaths
    reference: list[LabeledCase]
    known_case_ids: set[str]
    taxonomy: list[str] | None
    embed: Callable[[], Embed]
    reference_is_accepted: bool = True

    def accept(self, cases: list[LabeledCase]) -> None:
        """Count a newly accepted batch in the reference and the known ids."""
        self.known_case_ids.update(case.case_id for case in cases)
        if self.reference_is_accepted:
            self.reference.extend(cases)


class MemoEncoder:
    """An encoder memoised by text: without it the reference is re-embedded for every batch."""

    def __init__(self, encode: Embed, limit: int = 50_000) -> None:
        self.encode, self.limit = encode, limit
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        found = {text: self.cache[text] for text in texts if text in self.cache}
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            found.update(zip(missing, self.encode(missing), strict=True))
            if len(self.cache) + len(missing) > self.limit:
                self.cache.clear()
            self.cache.update((text, found[text]) for text in missing)
        return np.stack([found[text] for text in texts]) if texts else self.encode([])


@functools.cache
def _shared_encoder(name: str) -> MemoEncoder:
    from pipelines.stages.encoder.embedder import load_embedder

    return MemoEncoder(load_embedder(name).embed)


def default_embed(params: Params) -> Callable[[], Embed]:
    """A factory for the shared, memoised encoder (MiniLM loads on first use, once per process)."""
    return lambda: _shared_encoder(params.data.validation.embedder)


def make_judge(
    params: Params, paths: IntakePaths, embed: Callable[[], Embed] | None = None
) -> Judge:
    """Load the reference, the accepted ids and the taxonomy for this run."""
    cfg = params.data.validation
    accepted = load_accepted(params, paths.accepted)
    reference = accepted
    if cfg.reference:
        reference = read_reference(resolve_under(paths.data, cfg.reference))
    taxonomy = load_taxonomy(resolve_under(paths.data, cfg.taxonomy))
    return Judge(
        params=params,
        paths=paths,
        reference=list(reference),
        known_case_ids={case.case_id for case in accepted},
        taxonomy=taxonomy,
        embed=embed or default_embed(params),
        reference_is_accepted=not cfg.reference,
    )


def read_reference(path: Path) -> list[LabeledCase]:
    """A reference dataset from a `.jsonl` or `.parquet` file of LabeledCase records."""
    if not path.is_file():
        raise FileNotFoundError(
            f"data.validation.reference: {path} does not exist; point it at a JSONL/Parquet file "
            "of LabeledCase records, or set it to null to compare with the accepted data"
        )
    return (
        read_parquet(path, LabeledCase)
        if path.suffix == ".parquet"
        else read_jsonl(path, LabeledCase)
    )


def validate_rows(
    rows: list[dict[str, Any]], judge: Judge, *, batch_id: str, origin: str
) -> tuple[ValidationSummary, str]:
    """Validate raw rows; save and log the result; returns the summary and the report HTML."""
    import pandas as pd

    checks = compute_checks(
        rows,
        judge.params.data.validation,
        reference=judge.reference,
        known_case_ids=judge.known_case_ids,
        taxonomy=judge.taxonomy,
        pii=judge.params.data.pii,
        embed=judge.embed,
    )
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    for name, values in checks.columns.items():
        frame[name] = values
    result = run_suite(frame, checks.parameters)
    summary = summarise(
        result, batch_id=batch_id, origin=origin, rows=len(rows), skipped=checks.skipped
    )
    html = render_html(result)
    folder = judge.paths.validation / batch_id
    atomic_text(judge.paths, folder / "report.html", html)
    atomic_text(judge.paths, folder / "summary.json", summary.to_json())
    verdict = "passed" if summary.passed else f"FAILED {', '.join(summary.failed)}"
    log.info("validated batch %s (%s, %d rows): %s", batch_id, origin, len(rows), verdict)
    return summary, html
