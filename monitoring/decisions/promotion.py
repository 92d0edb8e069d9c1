"""Promotion and rollback decisions on shadow traffic: match rate, a paired test, stage checks.

The online metric is the *match rate*: the share of cases where a suggestion is close enough to
the reply the agent actually sent (rapidfuzz token-set ratio). A challenger is promoted only
when it beats the champion on the same cases with a one-sided exact McNemar test, over enough
cases, with no stage regressing by more than the configured margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.config import PromoteConfig

if TYPE_CHECKING:
    import pandas as pd


def suggestion_matches(
    suggestions: Sequence[str | None], sent_replies: Sequence[str | None], threshold: float
) -> list[bool | None]:
    """Per case: does the suggestion match the sent reply? None where no reply was sent.

    An abstention (suggestion None) is a miss: the match rate is a lower bound on accuracy.
    """
    from rapidfuzz import fuzz, utils

    if len(suggestions) != len(sent_replies):
        raise ValueError(
            f"{len(suggestions)} suggestions but {len(sent_replies)} sent replies; "
            "pass one per case"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"match threshold must be in (0, 1], got {threshold}")
    out: list[bool | None] = []
    for suggestion, sent in zip(suggestions, sent_replies, strict=True):
        if sent is None or (isinstance(sent, float) and math.isnan(sent)):
            out.append(None)
        elif not suggestion or (isinstance(suggestion, float) and math.isnan(suggestion)):
            out.append(False)
        else:
            score = fuzz.token_set_ratio(suggestion, sent, processor=utils.default_process)
            out.append(score / 100 >= threshold)
    return out


def match_rate(
    suggestions: Sequence[str | None], sent_replies: Sequence[str | None], threshold: float
) -> float:
    """Share of cases with a sent reply whose suggestion matches it; NaN when there are none."""
    flags = [m for m in suggestion_matches(suggestions, sent_replies, threshold) if m is not None]
    return sum(flags) / len(flags) if flags else math.nan


@dataclass(frozen=True)
class ShadowStats:
    """One model's shadow-traffic outcomes: case id -> did its suggestion match the sent reply."""

    name: str
    matches: Mapping[str, bool]
    version: str | None = None

    @property
    def cases(self) -> int:
        return len(self.matches)

    @property
    def match_rate(self) -> float:
        return sum(self.matches.values()) / self.cases if self.cases else math.nan


def shadow_stats_from_window(
    frame: pd.DataFrame, threshold: float
) -> tuple[ShadowStats, ShadowStats]:
    """Champion and shadow `ShadowStats` from a `PredictionLog.window()` frame.

    Only cases with feedback and a shadow suggestion count (the same cases for both); a case
    served more than once keeps its latest request.
    """
    rows = frame[frame["sent_reply"].notna() & frame["shadow"].notna()]
    rows = rows.drop_duplicates("case_id", keep="last")
    sent = rows["sent_reply"].tolist()
    champion = suggestion_matches(rows["champion_text"].tolist(), sent, threshold)
    shadow = suggestion_matches(rows["shadow_text"].tolist(), sent, threshold)
    cases = rows["case_id"].tolist()
    return (
        ShadowStats("champion", dict(zip(cases, champion, strict=True))),
        ShadowStats("challenger", dict(zip(cases, shadow, strict=True))),
    )


@dataclass(frozen=True)
class PromotionDecision:
    """Promote or not, the reasons, and the statistics behind them."""

    promote: bool
    reasons: tuple[str, ...]
    cases: int
    champion_match_rate: float
    challenger_match_rate: float
    challenger_only: int  # paired cases only the challenger matched
    champion_only: int  # paired cases only the champion matched
    p_value: float
    stage_deltas: dict[str, float] = field(default_factory=dict)  # challenger - champion

    def as_dict(self) -> dict[str, Any]:
        """A flat JSON-able dict, e.g. for MLflow tags or a flow artifact."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("reasons", "stage_deltas")}
        out["reasons"] = list(self.reasons)
        out.update({f"stage_delta.{k}": v for k, v in self.stage_deltas.items()})
        return out


def mcnemar_exact_greater(challenger_only: int, champion_only: int) -> float:
    """One-sided exact McNemar p-value that the challenger matches more often than the champion."""
    from scipy.stats import binomtest

    discordant = challenger_only + champion_only
    if discordant == 0:
        return 1.0
    return float(binomtest(challenger_only, discordant, 0.5, alternative="greater").pvalue)


def decide_promotion(
    champion: ShadowStats,
    challenger: ShadowStats,
    per_stage: dict[str, tuple[float, float]],
    cfg: PromoteConfig,
) -> PromotionDecision:
    """Decide whether the challenger replaces the champion, from shadow traffic.

    `per_stage` maps a stage to (champion metric, challenger metric), higher is better (e.g.
    online accuracy from reviewed samples). All three conditions must hold: at least
    `cfg.min_cases` paired cases; a significantly higher match rate on those same cases;
    no stage worse by more than `cfg.max_stage_regression`.
    """
    paired = sorted(set(champion.matches) & set(challenger.matches))
    champ = [bool(champion.matches[c]) for c in paired]
    chall = [bool(challenger.matches[c]) for c in paired]
    challenger_only = sum(b and not a for a, b in zip(champ, chall, strict=True))
    champion_only = sum(a and not b for a, b in zip(champ, chall, strict=True))
    p_value = mcnemar_exact_greater(challenger_only, champion_only)
    champ_rate = sum(champ) / len(paired) if paired else math.nan
    chall_rate = sum(chall) / len(paired) if paired else math.nan
    ok, reasons = _match_rate_verdict(len(paired), champ_rate, chall_rate, p_value, cfg)
    deltas = {stage: after - before for stage, (before, after) in sorted(per_stage.items())}
    regressions = _stage_regressions(deltas, cfg.max_stage_regression)
    return PromotionDecision(
        promote=ok and not regressions,
        reasons=(*reasons, *regressions),
        cases=len(paired),
        champion_match_rate=champ_rate,
        challenger_match_rate=chall_rate,
        challenger_only=challenger_only,
        champion_only=champion_only,
        p_value=p_value,
        stage_deltas=deltas,
    )


def _match_rate_verdict(
    cases: int, champ_rate: float, chall_rate: float, p_value: float, cfg: PromoteConfig
) -> tuple[bool, list[str]]:
    """Whether the paired match rates support promotion: enough cases, and a significant win."""
    ok, reasons = True, []
    if cases < cfg.min_cases:
        ok = False
        reasons.append(f"only {cases} paired shadow cases, need {cfg.min_cases}")
    if not cases or chall_rate <= champ_rate:
        ok = False
        reasons.append(
            f"challenger match rate {chall_rate:.3f} does not beat champion {champ_rate:.3f}"
        )
    elif p_value >= cfg.significance:
        ok = False
        reasons.append(
            f"match rate {chall_rate:.3f} vs {champ_rate:.3f} is not significant "
            f"(McNemar exact p={p_value:.4f} >= {cfg.significance})"
        )
    else:
        reasons.append(
            f"match rate {chall_rate:.3f} vs {champ_rate:.3f} on {cases} cases, "
            f"McNemar exact p={p_value:.4f} < {cfg.significance}"
        )
    return ok, reasons


def _stage_regressions(deltas: Mapping[str, float], allowed: float) -> list[str]:
    """A reason for every stage whose metric fell by more than `allowed`."""
    # a small epsilon so a drop of exactly the allowed margin is not blocked by float error
    return [
        f"stage {stage} regresses by {-delta:.3f} > {allowed} allowed"
        for stage, delta in deltas.items()
        if -delta > allowed + 1e-12
    ]


@dataclass(frozen=True)
class RollbackDecision:
    """Roll back or not, why, and the match rates compared."""

    roll_back: bool
    reason: str
    before_match_rate: float
    after_match_rate: float
    after_cases: int
    p_value: float  # one-sided Fisher exact test that `after` is worse; reported, not gating


def should_roll_back(
    before: ShadowStats, after: ShadowStats, cfg: PromoteConfig
) -> RollbackDecision:
    """Roll back when the new champion's match rate fell `cfg.rollback_drop` below the old one's.

    `before` is the previous champion's window, `after` the new champion's (different cases, so
    unpaired). Needs `cfg.rollback_min_cases` cases after promotion. Significance is reported
    but does not gate: rolling back to a trusted model is cheap, a missed regression is not.
    """
    from scipy.stats import fisher_exact

    before_rate, after_rate = before.match_rate, after.match_rate
    p_value = math.nan
    if before.cases and after.cases:
        b_hits, a_hits = sum(before.matches.values()), sum(after.matches.values())
        table = [[b_hits, before.cases - b_hits], [a_hits, after.cases - a_hits]]
        p_value = float(fisher_exact(table, alternative="greater").pvalue)

    def decide(roll_back: bool, reason: str) -> RollbackDecision:
        return RollbackDecision(roll_back, reason, before_rate, after_rate, after.cases, p_value)

    if not before.cases:
        return decide(False, "no match rate from before the promotion to compare with")
    if after.cases < cfg.rollback_min_cases:
        return decide(
            False, f"only {after.cases} cases since promotion, need {cfg.rollback_min_cases}"
        )
    drop = before_rate - after_rate
    if drop >= cfg.rollback_drop - 1e-12:
        return decide(
            True,
            f"match rate fell from {before_rate:.3f} to {after_rate:.3f} "
            f"(drop {drop:.3f} >= {cfg.rollback_drop})",
        )
    return decide(
        False,
        f"match rate {after_rate:.3f} vs {before_rate:.3f} before: "
        f"drop {drop:.3f} is within limits",
    )
