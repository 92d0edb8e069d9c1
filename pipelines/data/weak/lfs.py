"""Labeling functions (Snorkel `LabelingFunction`s) over message text and agent behaviour.

Every LF reads one row of the frame built by `lf_frame` (message, agent_reply, has_context,
the message's word n-grams, the kNN vote) and returns a class of the `LabelSpace` or ABSTAIN:

- `reply_is_macro`: the agent's reply is (rapidfuzz) one of a topic's macros → that topic;
- `reply_is_non_answer`: the reply is one agents send to unanswerable messages → NOT_ANSWERABLE;
- `greeting_or_small_talk`, `thanks_only`, `vague_without_context` → NOT_ANSWERABLE;
- `mined_keywords`: distinctive words / bigrams per class, mined from gold (`mine_keywords`);
- `knn_minilm`: the embedding nearest-neighbour vote (`pipelines.data.weak.knn`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process, utils
from snorkel.labeling import LabelingFunction

from pipelines.config import WeakConfig
from pipelines.data.weak.records import ABSTAIN, LabelSpace

GREETING = re.compile(
    r"^\W*(hi|hello|hey|hiya|yo|howdy|good (morning|afternoon|evening)|happy \w+)\b", re.I
)
SMALL_TALK = re.compile(
    r"\b(how are you|how's your day|how is your day|are you a (bot|robot|real person|human)|"
    r"anyone there|just testing|what's your name|having a good (day|week)|lol|hmm+)\b",
    re.I,
)
THANKS = re.compile(
    r"\b(thanks|thank you|thx|cheers|appreciate\w*|all sorted|that worked|fixed it)\b", re.I
)


def _words(text: str) -> int:
    return len(text.split())


def lf_frame(
    messages: Sequence[str],
    replies: Sequence[str | None],
    has_context: Sequence[bool],
    analyzer,  # noqa: ANN001 - a CountVectorizer analyzer: str -> list[str]
    knn: tuple[np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """The frame every LF reads: one row per message, n-grams and kNN vote precomputed."""
    return pd.DataFrame(
        {
            "message": list(messages),
            "agent_reply": [reply or "" for reply in replies],
            "has_context": list(has_context),
            "grams": [frozenset(analyzer(message)) for message in messages],
            "knn_label": knn[0],
            "knn_score": knn[1],
        }
    )


def mine_keywords(
    messages: Sequence[str], labels: Sequence[int], space: LabelSpace, cfg: WeakConfig
) -> tuple[dict[int, tuple[str, ...]], object]:
    """Per topic, the n-grams whose gold precision and support are high; plus the analyzer."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectorizer = CountVectorizer(
        binary=True, ngram_range=(1, 2), stop_words="english", min_df=cfg.keyword_min_count
    )
    counts = vectorizer.fit_transform(messages)
    vocab = vectorizer.get_feature_names_out()
    labels = np.asarray(labels)
    per_class = np.vstack(
        [np.asarray(counts[labels == c].sum(axis=0)).ravel() for c in range(space.cardinality)]
    )
    total = per_class.sum(axis=0)
    precision = per_class / np.maximum(total, 1)
    keywords: dict[int, tuple[str, ...]] = {}
    # Topics only: the words of unanswerable messages ("hi there", "thanks") also open real
    # questions; the chit-chat LFs judge those with the message's length and shape.
    for c in range(len(space.topics)):
        ok = (precision[c] >= cfg.keyword_min_precision) & (per_class[c] >= cfg.keyword_min_count)
        ranked = sorted(np.flatnonzero(ok), key=lambda j: (-per_class[c, j], vocab[j]))
        if ranked and cfg.keywords_per_topic:
            keywords[c] = tuple(str(vocab[j]) for j in ranked[: cfg.keywords_per_topic])
    return keywords, vectorizer.build_analyzer()


def known_replies(
    replies: Sequence[str | None], labels: Sequence[int], min_count: int = 2, purity: float = 0.9
) -> dict[str, int]:
    """Gold agent replies sent at least `min_count` times, nearly always for one class."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for reply, label in zip(replies, labels, strict=True):
        if reply:
            seen[reply][label] += 1
    known = {}
    for reply, by_class in seen.items():
        label, count = by_class.most_common(1)[0]
        if count >= min_count and count / sum(by_class.values()) >= purity:
            known[reply] = label
    return known


def reply_lf(name: str, choices: dict[str, int], min_score: float) -> LabelingFunction:
    """An LF voting the class of the closest known reply, if it is at least `min_score` alike."""
    texts = list(choices)
    labels = [choices[text] for text in texts]

    def vote(x) -> int:  # noqa: ANN001 - a frame row
        if not x.agent_reply or not texts:
            return ABSTAIN
        best = process.extractOne(
            x.agent_reply,
            texts,
            scorer=fuzz.ratio,
            processor=utils.default_process,
            score_cutoff=min_score,
        )
        return labels[best[2]] if best else ABSTAIN

    return LabelingFunction(name, f=vote)


def keyword_lf(keywords: dict[int, tuple[str, ...]]) -> LabelingFunction:
    """One LF over every class's mined keywords: votes the class with most hits (ties abstain).

    One multi-class LF rather than one per topic: the label model's cost grows with
    (LFs x classes)^2, and 32 per-topic LFs made fitting minutes long on two cores.
    """
    owners: dict[str, int] = {gram: c for c, grams in keywords.items() for gram in grams}

    def vote(x) -> int:  # noqa: ANN001 - a frame row
        hits = Counter(owners[gram] for gram in x.grams if gram in owners).most_common(2)
        if not hits or len(hits) == 2 and hits[0][1] == hits[1][1]:
            return ABSTAIN
        return hits[0][0]

    return LabelingFunction("mined_keywords", f=vote)


def chit_chat_lfs(space: LabelSpace, topic_grams: frozenset[str]) -> list[LabelingFunction]:
    """Short greeting / small talk, bare thanks, and short vague messages → NOT_ANSWERABLE."""
    na = space.not_answerable

    def greeting_or_small_talk(x) -> int:  # noqa: ANN001
        greeting = GREETING.search(x.message)
        rest = x.message[greeting.end() :] if greeting else x.message
        bare_greeting = greeting and _words(rest) <= 2
        small_talk = SMALL_TALK.search(x.message) and _words(x.message) <= 8
        return na if (bare_greeting or small_talk) and not topic_grams & x.grams else ABSTAIN

    def thanks_only(x) -> int:  # noqa: ANN001
        short = _words(x.message) <= 10 and "?" not in x.message
        return na if short and THANKS.search(x.message) and not topic_grams & x.grams else ABSTAIN

    def vague_without_context(x) -> int:  # noqa: ANN001
        vague = _words(x.message) <= 6 and not x.has_context and not topic_grams & x.grams
        return na if vague else ABSTAIN

    return [
        LabelingFunction("greeting_or_small_talk", f=greeting_or_small_talk),
        LabelingFunction("thanks_only", f=thanks_only),
        LabelingFunction("vague_without_context", f=vague_without_context),
    ]


def knn_lf() -> LabelingFunction:
    """The embedding nearest-neighbour vote, precomputed into the frame's `knn_label`."""
    return LabelingFunction("knn_minilm", f=lambda x: int(x.knn_label))
