"""N-of-M paging: the edges that decide whether on-call wakes up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.notify.rules import breach_n_of_m


@pytest.mark.parametrize(
    ("breaches", "n", "m", "page"),
    [
        ([True, True, False], 2, 3, False),  # latest window within limits: no page
        ([False, True, True], 2, 3, True),  # exactly N, latest included
        ([True, False, True], 2, 3, True),  # N need not be consecutive
        ([True, True, True], 2, 3, True),
        ([False, False, True], 2, 3, False),  # one noisy window is not enough
        ([True, True, False, False, True], 2, 3, False),  # old breaches fall out of the window
        ([True, False, False, True, True], 3, 3, False),
        ([True], 1, 1, True),
        ([False], 1, 3, False),
    ],
)
def test_n_of_m_edges(breaches: list[bool], n: int, m: int, page: bool) -> None:
    decision = breach_n_of_m(breaches, n, m)
    assert decision.page is page
    assert decision.considered == min(len(breaches), m)
    assert decision.breaching == sum(breaches[-m:])


def test_fewer_than_m_windows_uses_those_that_exist() -> None:
    assert breach_n_of_m([True, True], 2, 3).page
    short = breach_n_of_m([True], 2, 3)
    assert not short.page and "only 1 windows so far" in short.reason


def test_no_windows_no_page() -> None:
    decision = breach_n_of_m([], 2, 3)
    assert not decision.page and decision.reason == "no windows yet"


def test_reason_says_why() -> None:
    assert "latest window is within limits" in breach_n_of_m([True, True, False], 2, 3).reason
    assert "latest included" in breach_n_of_m([True, True], 1, 3).reason


@pytest.mark.parametrize(("n", "m"), [(0, 3), (4, 3), (-1, -1)])
def test_invalid_n_m_names_the_fix(n: int, m: int) -> None:
    with pytest.raises(ValueError, match="monitor.breach_n"):
        breach_n_of_m([True], n, m)


@given(st.lists(st.booleans(), max_size=20), st.integers(1, 6), st.integers(0, 5))
def test_matches_the_definition(breaches: list[bool], n: int, extra: int) -> None:
    m = n + extra
    recent = breaches[-m:]
    expected = bool(recent) and recent[-1] and sum(recent) >= n
    assert breach_n_of_m(breaches, n, m).page is expected
