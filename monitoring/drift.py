"""Drift of a current window against the reference (training data), as one Evidently report.

Signals, each tested by Evidently (0.7 API: `Report`, `Dataset`, `DataDefinition`):
- `embedding`: message meaning — MiniLM embeddings through Evidently's classifier embedding-drift
  method (`ModelDriftMethod`: ROC AUC of a model telling reference from current messages; drift
  above `monitor.embedding_drift_threshold`). Its score is stored in the snapshot as a tracked
  value; Evidently's `EmbeddingsDrift` metric itself also fits a t-SNE for its picture (5-70 s
  per window on 2 cores), so it is added only with `monitor.embedding_tsne`.
- text descriptors that need no downloaded corpora (`TextLength`, `WordCount`,
  `NonLetterCharacterPercentage`; the NLTK-based ones call `nltk.download()`), KS test.
- `topic` mix (categorical, total-variation distance with a permutation p-value, which copes with
  topics the reference never saw) and `answerable` (the trigger rate).
- `trigger_score` and `topic_confidence` (KS), when both sides come from the prediction log.

A signal is compared only when both frames have it. The window breaches when the embeddings drift
or the share of drifted column signals reaches `monitor.drift_share`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.config import MonitorConfig
from pipelines.data.contract import LabeledCase

if TYPE_CHECKING:
    import pandas as pd

DESCRIPTORS = ("text_length", "word_count", "non_letter_share")
CATEGORICAL = ("topic", "answerable")
NUMERICAL = ("trigger_score", "topic_confidence")
EMBEDDING = "embedding"
EMBEDDING_SCORE = "embedding_drift_auc"  # tracked in the snapshot as MeanValue of this column


@dataclass(frozen=True)
class SignalDrift:
    """One signal's drift test: its score, the threshold, and whether it drifted."""

    score: float
    threshold: float
    drifted: bool
    method: str  # "ks" / "TVD": score is a p-value (drift below); "model": ROC AUC (drift above)


@dataclass(frozen=True)
class DriftResult:
    """Per-signal drift, the share of drifted column signals, the breach decision and why."""

    signals: dict[str, SignalDrift]
    drifted_share: float  # of the column signals (the embedding is judged on its own)
    breach: bool
    reasons: tuple[str, ...]
    reference_rows: int
    current_rows: int
    snapshot: Any = field(repr=False)  # evidently Snapshot
    tracked: dict[str, float] = field(default_factory=dict)  # extra values in the snapshot

    @property
    def drifted(self) -> list[str]:
        return [name for name, signal in self.signals.items() if signal.drifted]


def drift_frame_from_cases(cases: Sequence[LabeledCase]) -> pd.DataFrame:
    """Labeled cases (training data or a batch) → message, topic label, answerable label."""
    import pandas as pd

    return pd.DataFrame(
        {
            "message": [c.message for c in cases],
            "topic": [c.topic for c in cases],
            "answerable": ["yes" if c.answerable else "no" for c in cases],
        }
    )


def drift_frame_from_window(window: pd.DataFrame) -> pd.DataFrame:
    """A `PredictionLog.window()` frame → message, predicted topic and answerable, scores.

    `answerable` is the calibrated p(answerable) >= 0.5 (the trigger's estimate of the share,
    comparable with the labels), not whether it cleared its high-precision threshold.
    """
    import pandas as pd

    scores = [s if isinstance(s, Mapping) else {} for s in window["scores"]]
    trigger = [s.get("trigger") for s in scores]
    return pd.DataFrame(
        {
            "message": window["message"].tolist(),
            "topic": window["topic"].tolist(),
            "answerable": [None if p is None else ("yes" if p >= 0.5 else "no") for p in trigger],
            "trigger_score": pd.to_numeric(pd.Series(trigger, dtype=object), errors="coerce"),
            "topic_confidence": pd.to_numeric(
                pd.Series([s.get("topic") for s in scores], dtype=object), errors="coerce"
            ),
        }
    )


def _with_embeddings(frame: pd.DataFrame, embedder_name: str) -> tuple[pd.DataFrame, list[str]]:
    import pandas as pd

    from pipelines.stages.encoder.embedder import load_embedder

    vectors = load_embedder(embedder_name).embed(frame["message"].astype(str).tolist())
    columns = [f"emb_{i:03d}" for i in range(vectors.shape[1])]
    embedded = pd.DataFrame(vectors, columns=columns, index=frame.index)
    return pd.concat([frame, embedded], axis=1), columns


def _comparable(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    return [
        c
        for c in (*CATEGORICAL, *NUMERICAL)
        if c in reference
        and c in current
        and reference[c].notna().any()
        and current[c].notna().any()
    ]


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: MonitorConfig,
    *,
    embedder_name: str = "minilm",
    tracked: Mapping[str, float] | None = None,
    timestamp: datetime | None = None,
    tags: Sequence[str] = (),
) -> DriftResult:
    """Run the drift report of `current` against `reference` (frames from `drift_frame_*`).

    `tracked` values (e.g. online metrics) are stored in the same snapshot as `MeanValue`
    metrics of constant columns, so the dashboard plots them over time; NaN values are left out.
    """
    from evidently.metrics.embeddings import ModelDriftMethod

    for name, frame in (("reference", reference), ("current", current)):
        if frame.empty or "message" not in frame:
            raise ValueError(
                f"the {name} frame has no messages; build it with drift_frame_from_cases() "
                "or drift_frame_from_window() from a non-empty source"
            )
    columns = _comparable(reference, current)
    values = {
        k: float(v) for k, v in (tracked or {}).items() if v is not None and not math.isnan(v)
    }
    (reference, emb_columns), (current, _) = (
        _with_embeddings(_report_frame(frame, columns, values), embedder_name)
        for frame in (reference, current)
    )
    method = ModelDriftMethod(threshold=cfg.embedding_drift_threshold)
    auc = _embedding_auc(method, reference[emb_columns], current[emb_columns])
    if not math.isnan(auc):
        values[EMBEDDING_SCORE] = auc
        for frame in (reference, current):
            frame[EMBEDDING_SCORE] = auc
    if not cfg.embedding_tsne:  # 384 columns the report would only carry along
        reference, current = (f.drop(columns=emb_columns) for f in (reference, current))
    report, value_drift = _drift_report(cfg, columns, values, method)
    current_set, reference_set = _datasets(
        (current, reference), columns, values, emb_columns if cfg.embedding_tsne else None
    )
    snapshot = report.run(current_set, reference_set, timestamp=timestamp, tags=list(tags))
    threshold = cfg.embedding_drift_threshold
    results = {EMBEDDING: SignalDrift(auc, threshold, auc > threshold, "model")}
    for column, metric in value_drift.items():
        p_value = float(snapshot.context.get_metric_result(metric).value)
        results[column] = SignalDrift(p_value, metric.threshold, p_value < metric.threshold,
                                      metric.method)  # fmt: skip
    return _decide(results, cfg, len(reference), len(current), snapshot, values)


def _report_frame(
    frame: pd.DataFrame, columns: list[str], values: Mapping[str, float]
) -> pd.DataFrame:
    """The message and the comparable columns, plus one constant column per tracked value."""
    return frame[["message", *columns]].reset_index(drop=True).assign(**values)


def _embedding_auc(method: Any, reference: pd.DataFrame, current: pd.DataFrame) -> float:
    """ROC AUC of a classifier telling current from reference embeddings; NaN when it can't.

    Evidently's classifier drift method, called directly: its metric wrapper also draws a
    t-SNE (seconds to minutes on 2 cores), added only when `monitor.embedding_tsne`.
    """
    try:
        auc, _, _ = method(current.copy(), reference.copy())
    except ValueError:  # a tiny window can leave one side out of the classifier's test half
        return math.nan
    return float(auc)


def _drift_report(
    cfg: MonitorConfig, columns: list[str], values: Mapping[str, float], method: Any
) -> tuple[Any, dict[str, Any]]:
    """The Evidently report, and the per-signal `ValueDrift` metrics to read back."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, EmbeddingsDrift, MeanValue, ValueDrift

    signals = [*DESCRIPTORS, *columns]
    methods = {c: "TVD" if c in CATEGORICAL else "ks" for c in signals}
    threshold = cfg.column_drift_p_value
    value_drift = {c: ValueDrift(column=c, method=methods[c], threshold=threshold) for c in signals}
    embedding_metrics = (
        [EmbeddingsDrift(embeddings_name="message", drift_method=method)]
        if cfg.embedding_tsne
        else []
    )
    report = Report(
        [
            DriftedColumnsCount(
                columns=signals,
                drift_share=cfg.drift_share,
                per_column_method=methods,
                threshold=threshold,
            ),
            *value_drift.values(),
            *embedding_metrics,
            *(MeanValue(column=key) for key in values),
        ]
    )
    return report, value_drift


def _datasets(
    frames: tuple[pd.DataFrame, ...],
    columns: list[str],
    values: Mapping[str, float],
    emb_columns: list[str] | None,
) -> list[Any]:
    """Evidently datasets of `frames`, with the text descriptors computed on the messages."""
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import NonLetterCharacterPercentage, TextLength, WordCount

    definition = DataDefinition(
        text_columns=["message"],
        categorical_columns=[c for c in columns if c in CATEGORICAL],
        numerical_columns=[c for c in columns if c in NUMERICAL] + list(values),
        embeddings={"message": emb_columns} if emb_columns is not None else None,
    )
    descriptors = [
        TextLength("message", alias="text_length"),
        WordCount("message", alias="word_count"),
        NonLetterCharacterPercentage("message", alias="non_letter_share"),
    ]
    return [
        Dataset.from_pandas(frame, data_definition=definition, descriptors=descriptors)
        for frame in frames
    ]


def _decide(
    signals: dict[str, SignalDrift],
    cfg: MonitorConfig,
    reference_rows: int,
    current_rows: int,
    snapshot: Any,
    tracked: dict[str, float],
) -> DriftResult:
    column_signals = {k: v for k, v in signals.items() if k != EMBEDDING}
    drifted = [k for k, v in column_signals.items() if v.drifted]
    share = len(drifted) / len(column_signals) if column_signals else 0.0
    reasons: list[str] = []
    embedding = signals[EMBEDDING]
    if embedding.drifted:
        reasons.append(
            f"embedding drift: a classifier tells current from reference messages with "
            f"ROC AUC {embedding.score:.3f} > {embedding.threshold}"
        )
    for name in drifted:
        signal = column_signals[name]
        reasons.append(
            f"{name} drifted ({signal.method} p={signal.score:.4f} < {signal.threshold})"
        )
    share_breach = share >= cfg.drift_share
    if share_breach:
        reasons.append(
            f"{len(drifted)} of {len(column_signals)} column signals drifted "
            f"(share {share:.2f} >= {cfg.drift_share})"
        )
    return DriftResult(
        signals=signals,
        drifted_share=share,
        breach=embedding.drifted or share_breach,
        reasons=tuple(reasons),
        reference_rows=reference_rows,
        current_rows=current_rows,
        snapshot=snapshot,
        tracked=tracked,
    )
