"""Alert rules that don't cry wolf: page when N of the last M windows breach, latest included."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AlertDecision:
    """Whether to page, why, and the counts the decision was made on."""

    page: bool
    reason: str
    breaching: int  # breaching windows among those considered
    considered: int  # windows considered: the last M, or fewer if fewer exist
    n: int
    m: int


def breach_n_of_m(breaches: Sequence[bool], n: int, m: int) -> AlertDecision:
    """Decide whether to page from per-window breach flags, ordered oldest to newest.

    Pages when at least `n` of the last `m` windows breach AND the latest one does: an old
    burst that has since recovered stays quiet, and one noisy window alone never pages (unless
    n == 1). With fewer than `m` windows so far, the ones that exist are considered.
    """
    if not 1 <= n <= m:
        raise ValueError(
            f"breach_n_of_m needs 1 <= n <= m, got n={n}, m={m}; fix monitor.breach_n/m"
        )
    recent = [bool(flag) for flag in list(breaches)[-m:]]
    breaching = sum(recent)

    def decide(page: bool, reason: str) -> AlertDecision:
        return AlertDecision(page, reason, breaching, len(recent), n, m)

    if not recent:
        return decide(False, "no windows yet")
    if not recent[-1]:
        return decide(
            False,
            f"latest window is within limits ({breaching} of the last {len(recent)} breached)",
        )
    partial = f" (only {len(recent)} windows so far)" if len(recent) < m else ""
    if breaching < n:
        return decide(
            False,
            f"{breaching} of the last {len(recent)} windows breached, fewer than {n}{partial}",
        )
    return decide(
        True,
        f"{breaching} of the last {len(recent)} windows breached (>= {n}), "
        f"latest included{partial}",
    )
