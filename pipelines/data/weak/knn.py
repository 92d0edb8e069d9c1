"""The embedding nearest-neighbour labeler: MiniLM cosine similarity to gold-labeled examples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipelines.data.contract import Turn
from pipelines.data.weak.records import ABSTAIN


def knn_text(message: str, context: Sequence[Turn]) -> str:
    """What is embedded: the last customer turn before the message (if any), then the message.

    A follow-up like "and can I undo that later?" only has a topic through what came before.
    """
    earlier = [turn.text for turn in context if turn.role == "customer"]
    return f"{earlier[-1]} {message}" if earlier else message


def knn_votes(
    gold_vectors: np.ndarray,
    gold_labels: Sequence[int],
    query_vectors: np.ndarray,
    *,
    k: int,
    min_similarity: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (label, score) per query: the similarity-weighted vote of its k nearest gold rows.

    Rows are L2-normalized, so cosine similarity is a dot product. Neighbours below
    `min_similarity` do not vote; a query with no voter, or whose winner has less than half of
    the vote weight, abstains (label -1). The score is the winner's share of the weight.
    """
    labels = np.full(len(query_vectors), ABSTAIN, dtype=int)
    scores = np.zeros(len(query_vectors), dtype=float)
    if len(gold_vectors) == 0 or len(query_vectors) == 0:
        return labels, scores
    gold_labels = np.asarray(gold_labels)
    k = min(k, len(gold_vectors))
    similarity = query_vectors @ gold_vectors.T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    for row, columns in enumerate(nearest):
        sims = similarity[row, columns]
        voters = sims >= min_similarity
        if not voters.any():
            continue
        weights: dict[int, float] = {}
        for label, sim in zip(gold_labels[columns][voters], sims[voters], strict=True):
            weights[int(label)] = weights.get(int(label), 0.0) + float(sim)
        winner = max(weights, key=weights.get)
        share = weights[winner] / sum(weights.values())
        if share >= 0.5:
            labels[row], scores[row] = winner, share
    return labels, scores
