"""End-to-end evaluation of the cascade on labeled cases: coverage, precision, abstain reasons.

Definitions (the issue-4 goal is precision ≥ 0.90 at coverage ≥ 0.60):
- a suggestion is **correct** when its ROUGE-L F1 against the case's reference `agent_reply`
  reaches `match_threshold` (default 0.8, the same judgement as the online match rate,
  `monitor.match_threshold`); a suggestion on a not-answerable case is always wrong;
- **coverage**: share of answerable cases with a reference reply that got a suggestion;
- **precision**: share of all emitted suggestions that are correct (not-answerable included);
- every abstention must carry a reason (`abstentions_without_reason` must be 0); reasons are
  counted per stage and per kind (the reason with its numbers blanked out).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.data.contract import STAGES, LabeledCase, Suggestion
from pipelines.evaluate.text_metrics import rouge_l

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipelines.cascade import Cascade


def is_correct(suggestion: Suggestion, case: LabeledCase, match_threshold: float) -> bool:
    """True when the suggestion's text matches the case's reference reply (ROUGE-L F1)."""
    if suggestion.text is None or not case.answerable or not case.agent_reply:
        return False
    return rouge_l(suggestion.text, case.agent_reply) >= match_threshold


def reason_kind(reason: str) -> str:
    """The reason with numbers and topic names blanked: 'topic: p(<topic>)=# < #'."""
    reason = re.sub(r"p\((?!answerable\))[^)]+\)", "p(<topic>)", reason)
    return re.sub(r"-?\d+(?:\.\d+)?", "#", reason)


def confidence(suggestion: Suggestion) -> float:
    """One ranking score per suggestion: p(answerable) × p(topic) × the answer's score."""
    scores = suggestion.scores
    return scores.get("trigger", 0.0) * scores.get("topic", 0.0) * scores.get("answer", 0.0)


@dataclass
class CascadeReport:
    """Metrics, the abstain-reason histogram, figures and the per-case outcomes."""

    metrics: dict[str, float]
    abstain_reasons: dict[str, int]
    suggestions: list[Suggestion] = field(repr=False)
    correct: list[bool] = field(repr=False)
    figures: dict[str, Figure] = field(default_factory=dict, repr=False)


def _rate(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def stage_metrics(
    cases: Sequence[LabeledCase], suggestions: Sequence[Suggestion]
) -> dict[str, float]:
    """Per-stage metrics from the cascade's own decisions (reached, abstained, accuracy)."""
    metrics: dict[str, float] = {}
    order = {stage: i for i, stage in enumerate(STAGES)}
    for stage in STAGES:
        reached = [
            s for s in suggestions if s.stopped_at is None or order[s.stopped_at] >= order[stage]
        ]
        stopped = sum(s.stopped_at == stage for s in suggestions)
        metrics[f"{stage}.reached"] = float(len(reached))
        metrics[f"{stage}.abstain_rate"] = _rate(stopped, len(reached))
    passed = [s.stopped_at != "trigger" for s in suggestions]
    answerable = [c.answerable for c in cases]
    true_pos = sum(p and a for p, a in zip(passed, answerable, strict=True))
    metrics["trigger.precision"] = _rate(true_pos, sum(passed))
    metrics["trigger.recall"] = _rate(true_pos, sum(answerable))
    topical = [
        (c, s)
        for c, s in zip(cases, suggestions, strict=True)
        if c.answerable and c.topic and s.topic is not None
    ]
    metrics["topic.accuracy"] = _rate(sum(c.topic == s.topic for c, s in topical), len(topical))
    emitted_topic = [(c, s) for c, s in topical if s.stopped_at not in ("trigger", "topic")]
    metrics["topic.precision"] = _rate(
        sum(c.topic == s.topic for c, s in emitted_topic), len(emitted_topic)
    )
    emitted = [s for s in suggestions if s.text is not None]
    metrics["answer.retrieved_share"] = _rate(
        sum(s.source == "retrieved" for s in emitted), len(emitted)
    )
    toned = [s for s in emitted if "tone_kept_draft" in s.scores]
    metrics["tone.kept_draft_rate"] = _rate(
        sum(s.scores["tone_kept_draft"] for s in toned), len(toned)
    )
    metrics["tone.mean_score"] = float(np.mean([s.scores["tone"] for s in toned])) if toned else 0.0
    return metrics


def evaluate_cascade(
    cascade: Cascade,
    cases: Sequence[LabeledCase],
    *,
    match_threshold: float = 0.8,
    batch_size: int = 64,
    figures: bool = True,
) -> CascadeReport:
    """Run the cascade over `cases` in batches and judge every suggestion (see module docstring)."""
    if not cases:
        raise ValueError("evaluate_cascade: no cases given")
    suggestions: list[Suggestion] = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        suggestions.extend(
            cascade.suggest_batch([c.message for c in chunk], [c.context for c in chunk])
        )
    correct = [is_correct(s, c, match_threshold) for s, c in zip(suggestions, cases, strict=True)]
    wanted = [c.answerable and bool(c.agent_reply) for c in cases]
    emitted = [s.text is not None for s in suggestions]
    latencies = np.array([s.latency_ms for s in suggestions])
    metrics: dict[str, float] = {
        "n": float(len(cases)),
        "n_answerable": float(sum(wanted)),
        "coverage": _rate(sum(e and w for e, w in zip(emitted, wanted, strict=True)), sum(wanted)),
        "precision": _rate(sum(correct), sum(emitted)),
        "emit_rate": _rate(sum(emitted), len(cases)),
        "false_emit_rate": _rate(
            sum(e and not c.answerable for e, c in zip(emitted, cases, strict=True)),
            sum(not c.answerable for c in cases),
        ),
        "correct_share": _rate(sum(correct), sum(wanted)),
        "abstentions_without_reason": float(
            sum(s.text is None and not s.abstain_reason for s in suggestions)
        ),
        "match_threshold": match_threshold,
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p95": float(np.percentile(latencies, 95)),
    }
    for source in ("generated", "retrieved"):
        picked = [ok for ok, s in zip(correct, suggestions, strict=True) if s.source == source]
        metrics[f"precision_{source}"] = _rate(sum(picked), len(picked))
    metrics |= stage_metrics(cases, suggestions)
    reasons = Counter(reason_kind(s.abstain_reason) for s in suggestions if s.abstain_reason)
    report = CascadeReport(metrics, dict(reasons.most_common()), suggestions, correct)
    if figures:
        report.figures = {
            "precision_coverage": plot_cascade_precision_coverage(suggestions, correct, wanted),
            "abstain_reasons": plot_abstentions(suggestions),
        }
    return report


def cascade_curve(
    suggestions: Sequence[Suggestion], correct: Sequence[bool], wanted: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, precision) if only the most confident emitted suggestions were kept."""
    from pipelines.evaluate.evaluation import precision_coverage_curve

    kept = [i for i, s in enumerate(suggestions) if s.text is not None]
    if not kept:
        return np.zeros(0), np.zeros(0)
    _, share, precision = precision_coverage_curve(
        [confidence(suggestions[i]) for i in kept], [correct[i] for i in kept]
    )
    scale = _rate(sum(wanted[i] for i in kept), sum(wanted))  # emitted share → coverage
    return share * scale, precision


def plot_cascade_precision_coverage(
    suggestions: Sequence[Suggestion], correct: Sequence[bool], wanted: Sequence[bool]
) -> Figure:
    """Return the end-to-end precision–coverage curve, with the goal region marked."""
    from matplotlib.figure import Figure

    coverage, precision = cascade_curve(suggestions, correct, wanted)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(coverage, precision, label="cascade (ranked by confidence)")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(0.6, color="grey", linestyle="--", linewidth=0.8)
    ax.set(
        xlabel="coverage of answerable cases",
        ylabel="precision of emitted",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title="cascade precision vs coverage",
    )
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def plot_abstentions(suggestions: Sequence[Suggestion]) -> Figure:
    """Return a bar chart of where the cascade stopped (per stage, plus 'emitted')."""
    from matplotlib.figure import Figure

    counts = Counter(s.stopped_at or "emitted" for s in suggestions)
    names = [*STAGES, "emitted"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.bar(names, [counts.get(n, 0) for n in names], color="tab:blue")
    ax.set(ylabel="cases", title="where the cascade stopped")
    fig.tight_layout()
    return fig


def log_to_mlflow(
    report: CascadeReport,
    params: Any,
    *,
    run_name: str = "cascade",
    logged: dict[str, Any] | None = None,
) -> str:
    """Log metrics, figures and the abstain-reason histogram to MLflow; returns the run id."""
    import mlflow

    from pipelines.registry.tracking import log_evaluation, mlflow_run

    with mlflow_run(params, "casepilot-cascade", run_name) as run:
        log_evaluation(report.metrics, report.figures, logged)
        mlflow.log_dict(report.abstain_reasons, "abstain_reasons.json")
        return run.info.run_id
