"""Online metrics of a prediction-log window: match rate, acceptance, coverage, abstains, accuracy.

- match rate: share of cases with feedback whose champion suggestion matches the reply the agent
  sent (`monitoring.decisions.promotion.suggestion_matches`; an abstention is a miss). Champion and
  shadow
  are also compared on the *same* cases (`shadow_stats_from_window`).
- acceptance: of the cases shown a suggestion that have feedback, the share the agent used.
- coverage: share of requests that got a suggestion; abstain rate: share stopped at each stage.
- estimated accuracy, label-free (Average Confidence, "AC"; Hendrycks & Gimpel 2017, Guillory
  et al. 2021): the trigger and topic stages are temperature-scaled on validation data, so the
  mean calibrated probability of the predicted class estimates accuracy on unlabeled traffic —
  trigger: mean of max(p, 1 - p) of p(answerable); topic: mean top-topic probability over the
  requests that reached the topic stage. It drifts down when traffic moves away from what the
  model was calibrated on (it over-estimates under strong shift, so it is a warning light).
- before/after a promotion (`rollback_stats`): the old champion's match outcomes before it and the
  new champion's since, told apart by the stage version each request logged — the inputs of
  the automatic rollback (`monitoring.decisions.promotion.should_roll_back`,
  flows/lifecycle/rollback.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitoring.decisions.promotion import ShadowStats, shadow_stats_from_window, suggestion_matches
from pipelines.data.contract import STAGES

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd


@dataclass(frozen=True)
class OnlineMetrics:
    """Online metrics of one window; NaN where a metric has no cases yet."""

    requests: int
    cases_with_feedback: int
    match_rate: float  # champion, all cases with feedback
    paired_cases: int  # cases with feedback and a shadow suggestion
    champion_match_rate_paired: float
    shadow_match_rate: float
    acceptance: float
    coverage: float
    abstain_rate: dict[str, float] = field(default_factory=dict)  # stage -> share of requests
    estimated_accuracy: dict[str, float] = field(default_factory=dict)  # trigger, topic

    def as_values(self) -> dict[str, float]:
        """Flat name -> value, the names the dashboard plots (`abstain_<stage>`, `est_acc_<s>`)."""
        values = {
            "match_rate": self.match_rate,
            "champion_match_rate_paired": self.champion_match_rate_paired,
            "shadow_match_rate": self.shadow_match_rate,
            "acceptance": self.acceptance,
            "coverage": self.coverage,
        }
        values.update({f"abstain_{k}": v for k, v in self.abstain_rate.items()})
        values.update({f"est_acc_{k}": v for k, v in self.estimated_accuracy.items()})
        return values


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def estimated_accuracy(window: pd.DataFrame) -> dict[str, float]:
    """Average-confidence accuracy estimates for the trigger and topic stages (see module doc)."""
    scores = [s for s in window["scores"] if isinstance(s, Mapping)]
    trigger = [float(s["trigger"]) for s in scores if s.get("trigger") is not None]
    topic = [float(s["topic"]) for s in scores if s.get("topic") is not None]
    return {
        "trigger": _mean([max(p, 1.0 - p) for p in trigger]),
        "topic": _mean(topic),
    }


def online_metrics(window: pd.DataFrame, match_threshold: float) -> OnlineMetrics:
    """Compute `OnlineMetrics` from a `PredictionLog.window()` frame."""
    requests = len(window)
    # feedback is per case: a case served twice counts once, with its latest request
    cases = window.drop_duplicates("case_id", keep="last")
    answered = cases[cases["sent_reply"].notna()]
    matches = suggestion_matches(
        answered["champion_text"].tolist(), answered["sent_reply"].tolist(), match_threshold
    )
    flags = [bool(m) for m in matches if m is not None]
    shown = answered[answered["champion_text"].notna()]
    champion, shadow = shadow_stats_from_window(window, match_threshold)
    stopped = window["stopped_at"].tolist()
    return OnlineMetrics(
        requests=requests,
        cases_with_feedback=len(answered),
        match_rate=_mean([float(f) for f in flags]),
        paired_cases=champion.cases,
        champion_match_rate_paired=champion.match_rate,
        shadow_match_rate=shadow.match_rate,
        acceptance=_mean([float(bool(u)) for u in shown["used_suggestion"]]),
        coverage=float(window["champion_text"].notna().mean()) if requests else math.nan,
        abstain_rate={
            stage: (sum(s == stage for s in stopped) / requests if requests else math.nan)
            for stage in STAGES
        },
        estimated_accuracy=estimated_accuracy(window),
    )


def rollback_stats(
    window: pd.DataFrame,
    stage: str,
    *,
    version: str,
    previous: str,
    promoted_at: datetime,
    match_threshold: float,
    before_cases: int | None = None,
) -> tuple[ShadowStats, ShadowStats]:
    """(before, after) match outcomes around a promotion, for `should_roll_back`.

    `before`: cases the previous champion (`previous`) served before `promoted_at`, the latest
    `before_cases` of them; `after`: cases the new champion (`version`) served since. A row
    counts for a version when its `versions[stage]` is that version — rows that carry no version
    for the stage (a log written without registry versions) are placed by time alone, and rows
    of any other version (a service that had not reloaded yet) are left out. Only cases with the
    agent's reply count; a case served twice on one side keeps its latest request.
    """
    import pandas as pd

    def served_by(expected: str) -> pd.Series:
        def check(versions: object) -> bool:
            found = versions.get(stage) if isinstance(versions, Mapping) else None
            return found is None or str(found) == str(expected)

        return window["versions"].map(check).astype(bool)

    answered = window["sent_reply"].notna()
    when = pd.Timestamp(promoted_at)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    before_rows = window[answered & (window["created_at"] < when) & served_by(previous)]
    after_rows = window[answered & (window["created_at"] >= when) & served_by(version)]
    before_rows = before_rows.sort_values("created_at").drop_duplicates("case_id", keep="last")
    if before_cases is not None:
        before_rows = before_rows.tail(before_cases)

    def stats(rows: pd.DataFrame, name: str, of: str) -> ShadowStats:
        rows = rows.drop_duplicates("case_id", keep="last")
        flags = suggestion_matches(
            rows["champion_text"].tolist(), rows["sent_reply"].tolist(), match_threshold
        )
        cases = rows["case_id"].tolist()
        return ShadowStats(name, dict(zip(cases, (bool(f) for f in flags), strict=True)), of)

    return (
        stats(before_rows, f"{stage} v{previous} before promotion", previous),
        stats(after_rows, f"{stage} v{version} since promotion", version),
    )
