"""The known public datasets by name (`DATASETS`), one entry point, and an import summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.data.importers.abcd import import_abcd_docs
from pipelines.data.importers.bitext import import_bitext
from pipelines.data.importers.dialogues import TWEETSUMM_SPLITS, import_tweetsumm
from pipelines.data.importers.intents import CLINC_SPLITS, import_banking77, import_clinc150
from pipelines.data.importers.mapping import DEFAULT_CREATED_AT, DataImportError


@dataclass(frozen=True)
class ImportResult:
    """What an import produced: labeled cases and help-centre docs (either may be empty)."""

    cases: list[LabeledCase] = field(default_factory=list)
    docs: list[KnowledgeDoc] = field(default_factory=list)


Loader = Callable[[Path, Sequence[str] | None, datetime], ImportResult]


@dataclass(frozen=True)
class Dataset:
    """A public dataset casepilot knows how to import."""

    name: str
    load: Loader
    licence: str
    about: str
    splits: tuple[str, ...] = ()  # empty: the dataset has no selectable splits


DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            "banking77",
            lambda root, _, at: ImportResult(import_banking77(root, created_at=at)),
            "CC BY 4.0",
            "banking queries, 77 topics, all answerable",
        ),
        Dataset(
            "clinc150",
            lambda root, splits, at: ImportResult(import_clinc150(root, splits, created_at=at)),
            "CC BY 3.0",
            "150 intents + oos; banking & credit_cards answerable, the rest not",
            splits=CLINC_SPLITS,
        ),
        Dataset(
            "bitext",
            lambda root, _, at: ImportResult(*import_bitext(root, created_at=at)),
            "CDLA-Sharing-1.0",
            "questions with agent replies (27 intents) + one doc per intent",
        ),
        Dataset(
            "tweetsumm",
            lambda root, splits, at: ImportResult(import_tweetsumm(root, splits, created_at=at)),
            "CC BY-NC-SA 4.0 (research/evaluation only)",
            "real Twitter support dialogues: customer turn → agent reply",
            splits=TWEETSUMM_SPLITS,
        ),
        Dataset(
            "abcd_policies",
            lambda root, _, at: ImportResult(docs=import_abcd_docs(root, created_at=at)),
            "MIT",
            "ABCD agent guidelines as help-centre docs (one per subflow)",
        ),
    )
}


def import_dataset(
    name: str,
    root: Path,
    *,
    splits: Sequence[str] | None = None,
    created_at: datetime = DEFAULT_CREATED_AT,
) -> ImportResult:
    """Import the known dataset `name` from its folder `root` (splits only where it has them)."""
    dataset = DATASETS.get(name)
    if dataset is None:
        raise DataImportError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if splits and not dataset.splits:
        raise DataImportError(f"dataset {name} has no splits; drop the split selection (--split)")
    if not Path(root).exists():
        raise DataImportError(f"{name}: source folder {root} not found; check the path")
    return dataset.load(Path(root), tuple(splits) if splits else None, created_at)


@dataclass(frozen=True)
class ImportSummary:
    """Counts that say whether an import looks right."""

    cases: int
    docs: int
    answerable: int
    topics: Counter[str]
    unanswerable_kinds: Counter[str]
    label_sources: Counter[str]

    @property
    def not_answerable_share(self) -> float:
        return (self.cases - self.answerable) / self.cases if self.cases else 0.0


def summarize(result: ImportResult) -> ImportSummary:
    """Count cases, docs, topics and the not-answerable share of an import."""
    cases = result.cases
    return ImportSummary(
        cases=len(cases),
        docs=len(result.docs),
        answerable=sum(case.answerable for case in cases),
        topics=Counter(case.topic for case in cases if case.topic is not None),
        unanswerable_kinds=Counter(
            case.unanswerable_kind or "unspecified" for case in cases if not case.answerable
        ),
        label_sources=Counter(case.label_source for case in cases),
    )
