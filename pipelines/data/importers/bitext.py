"""Bitext customer support → answerable LabeledCases with replies, and a KnowledgeDoc per intent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pipelines.data.contract import KnowledgeDoc, LabeledCase
from pipelines.data.importers.intents import packaged_mapping
from pipelines.data.importers.mapping import DEFAULT_CREATED_AT, DataImportError
from pipelines.data.importers.table import cases_from_frame, clean_text, read_table


def bitext_file(root: Path) -> Path:
    """The Bitext CSV: `root` itself, or the one *.csv file inside it."""
    root = Path(root)
    if root.is_file():
        return root
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise DataImportError(
            f"bitext: expected exactly one .csv in {root}, found {len(found)}; "
            "point the source at the Bitext CSV file itself"
        )
    return found[0]


def import_bitext(
    root: Path, *, created_at: datetime = DEFAULT_CREATED_AT
) -> tuple[list[LabeledCase], list[KnowledgeDoc]]:
    """Bitext's question/response rows as cases (topic = intent) and one help doc per intent."""
    path = bitext_file(root)
    mapping = packaged_mapping("bitext")
    frame = read_table(path)
    cases = cases_from_frame(
        frame, mapping, source=str(path), id_prefix="bitext", created_at=created_at
    )
    category = "category" if "category" in frame.columns else None
    docs = []
    for intent, group in frame.groupby(mapping.topic_column, sort=True):
        responses = [text for text in map(clean_text, group[mapping.agent_reply_column]) if text]
        if not responses:
            continue
        title = str(intent).replace("_", " ").capitalize()
        if category:
            title += f" ({group[category].iloc[0].strip().replace('_', ' ').lower()})"
        docs.append(
            KnowledgeDoc(
                doc_id=f"bitext:{intent}",
                topic=str(intent),
                title=title,
                body=responses[most_typical(responses)],
                updated_at=created_at,
            )
        )
    return cases, docs


def most_typical(texts: Sequence[str]) -> int:
    """Index of the medoid text: highest mean TF-IDF cosine to the others (first on ties)."""
    if len(texts) < 3:
        return 0
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(sublinear_tf=True).fit_transform(texts)
    similarity = (vectors @ vectors.T).toarray()
    return int(similarity.sum(axis=1).argmax())
