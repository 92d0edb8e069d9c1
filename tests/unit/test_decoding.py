"""Prefill buckets of the batched greedy decoder: spans of similar length, little padding."""

from __future__ import annotations

import random

import pytest

from pipelines.stages.decoder.decoding import prefill_buckets


def _padding_share(lengths: list[int]) -> float:
    return 1 - sum(lengths) / (max(lengths) * len(lengths))


@pytest.mark.parametrize("max_rows", [1, 2, 16])
def test_buckets_cover_every_row_in_order_within_the_limits(max_rows: int) -> None:
    lengths = sorted(random.Random(max_rows).randint(40, 190) for _ in range(37))
    spans = prefill_buckets(lengths, max_rows, max_padding=0.1)
    assert [i for span in spans for i in range(span.start, span.stop)] == list(range(37))
    for span in spans:
        rows = lengths[span]
        assert 1 <= len(rows) <= max_rows
        assert len(rows) == 1 or _padding_share(rows) <= 0.1


def test_a_bucket_closes_before_a_row_that_would_pad_it_too_much() -> None:
    # 80, 85, 90 pad to 90 with 15 of 270 tokens (5.6%); 100 would make it 45 of 400 (11%)
    assert prefill_buckets([80, 85, 90, 100, 101], 16, max_padding=0.1) == [
        slice(0, 3),
        slice(3, 5),
    ]
    assert prefill_buckets([50] * 40, 16) == [slice(0, 16), slice(16, 32), slice(32, 40)]
    assert prefill_buckets([], 4) == []
    assert prefill_buckets([7], 4) == [slice(0, 1)]
