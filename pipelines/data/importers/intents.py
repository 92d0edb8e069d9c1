"""Intent-classification datasets → LabeledCases: Banking77 (all answerable) and CLINC150."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.data.contract import LabeledCase, UnanswerableKind
from pipelines.data.importers.mapping import (
    DEFAULT_CREATED_AT,
    ColumnMapping,
    DataImportError,
    load_mapping,
)
from pipelines.data.importers.table import cases_from_frame, import_table

# CLINC150 splits as published; the trigger benchmark trains on CLINC_TRAIN, tests on CLINC_EVAL.
CLINC_SPLITS = ("train", "val", "oos_train", "oos_val")
CLINC_TRAIN = ("train", "oos_train")
CLINC_EVAL = ("val", "oos_val")
# The domains a banking support copilot should answer; every other domain is not answerable.
CLINC_ANSWERABLE_DOMAINS = ("banking", "credit_cards")
CLINC_OUT_OF_SCOPE = "oos"


def packaged_mapping(name: str) -> ColumnMapping:
    """The ColumnMapping shipped beside this module as `<name>.yaml`."""
    return load_mapping(Path(__file__).with_name(f"{name}.yaml"))


def dataset_file(root: Path, name: str, dataset: str) -> Path:
    """`root/name`, or an error that says which folder to point at."""
    path = Path(root) / name
    if not path.is_file():
        raise DataImportError(
            f"{dataset}: {path} not found; point the source at the {dataset} folder "
            f"that holds {name} (e.g. ../shared/data/{dataset})"
        )
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON file, or fail naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataImportError(f"{path}: not valid JSON ({err}); re-download the file") from err


def import_banking77(root: Path, *, created_at: datetime = DEFAULT_CREATED_AT) -> list[LabeledCase]:
    """Banking77's train.csv (text,category): every row answerable, topic = category."""
    path = dataset_file(root, "train.csv", "banking77")
    return import_table(path, packaged_mapping("banking77"), created_at=created_at)


def clinc_kind(domain: str, intent: str) -> UnanswerableKind:
    """Why a CLINC150 intent outside the answerable domains is not answerable."""
    if domain == "small_talk":
        return "thanks" if intent == "thank_you" else "chit_chat"
    return "out_of_scope"  # other domains, `meta` (assistant commands) and `oos`


def clinc150_mapping(
    domains: dict[str, list[str]],
    answerable_domains: Sequence[str] = CLINC_ANSWERABLE_DOMAINS,
) -> ColumnMapping:
    """The CLINC150 mapping: intents of `answerable_domains` are topics, the rest not answerable."""
    unknown = sorted(set(answerable_domains) - set(domains))
    if unknown:
        raise DataImportError(
            f"clinc150: answerable domains {unknown} are not in domains.json; "
            f"choose from {', '.join(domains)}"
        )
    not_answerable: dict[str, UnanswerableKind | None] = {CLINC_OUT_OF_SCOPE: "out_of_scope"}
    for domain, intents in domains.items():
        if domain not in answerable_domains:
            not_answerable |= {intent: clinc_kind(domain, intent) for intent in intents}
    return ColumnMapping(
        message_column="text",
        case_id_column="case_id",
        topic_column="intent",
        not_answerable_labels=not_answerable,
        label_source="human",
        labeler="clinc150",
    )


def import_clinc150(
    root: Path,
    splits: Sequence[str] | None = None,
    *,
    answerable_domains: Sequence[str] = CLINC_ANSWERABLE_DOMAINS,
    created_at: datetime = DEFAULT_CREATED_AT,
) -> list[LabeledCase]:
    """CLINC150 splits (default: all in the file) as trigger/topic cases; ids `clinc150:split:i`."""
    import pandas as pd

    path = dataset_file(root, "train_val.json", "clinc150")
    data = read_json(path)
    domains = read_json(dataset_file(root, "domains.json", "clinc150"))
    chosen = tuple(data) if splits is None else tuple(splits)
    missing = [split for split in chosen if split not in data]
    if missing or not chosen:
        raise DataImportError(
            f"clinc150: splits {missing or '()'} not in {path}; choose from {', '.join(data)}"
        )
    known = {intent for intents in domains.values() for intent in intents} | {CLINC_OUT_OF_SCOPE}
    rows = []
    for split in chosen:
        for index, (text, intent) in enumerate(data[split]):
            if intent not in known:
                raise DataImportError(
                    f"clinc150: {path} {split}[{index}] has intent {intent!r}, which no domain "
                    "of domains.json lists; add it to its domain there"
                )
            rows.append({"case_id": f"clinc150:{split}:{index}", "text": text, "intent": intent})
    frame = pd.DataFrame(rows, columns=["case_id", "text", "intent"])
    mapping = clinc150_mapping(domains, answerable_domains)
    return cases_from_frame(
        frame, mapping, source=str(path), id_prefix="clinc150", created_at=created_at
    )
