"""Batched greedy decoding for the answer and tone decoders, cheap per row on a CPU.

`transformers`' `generate` pads every prompt of a batch to the longest one and runs the whole
batch until its longest reply ends, with several layers of per-step Python around each forward;
on the demo decoders a batch of 32 then costs ~35 ms of CPU per row against ~95 ms one at a time,
so batching a service barely pays. Here:

- prompts are sorted by token length and prefilled in buckets of at most `prefill_rows`, a
  bucket closing early when padding would exceed `MAX_PREFILL_PADDING` of its tokens (the
  prefill is most of the arithmetic, and a pad token costs as much as a real one);
- the buckets' KV caches are left-padded to one width and decoded together, one forward per step
  for every row (`decode_rows` at most);
- a row that emits EOS leaves the batch (its cache rows are dropped), so the others do not pay
  for it, and the loop ends when the last row does.

Each row gets what greedy decoding of it alone gives: its positions count from its own first
token and padding is masked, so a reply does not depend on its batch-mates
(tests/stages/test_answer.py checks batched against one-by-one).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Largest share of pad tokens in a prefill bucket (the demo's 80–190-token answer prompts in
# fixed buckets of 16 were 15% padding; capped at 10%: 7%, and 26% less prefill CPU).
MAX_PREFILL_PADDING = 0.1


@dataclass(frozen=True)
class Decoded:
    """The greedy tokens of one prompt (EOS included when emitted) and their log-probabilities."""

    tokens: list[int]
    logprobs: list[float]


def greedy(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    prefill_rows: int = 16,
    decode_rows: int = 32,
) -> list[Decoded]:
    """Greedy continuations of tokenised `prompts` (input order), up to `max_new_tokens` each."""
    if prefill_rows < 1 or decode_rows < 1:
        raise ValueError(
            f"prefill_rows ({prefill_rows}) and decode_rows ({decode_rows}) must be >= 1"
        )
    if any(not ids for ids in prompts):
        raise ValueError("an empty prompt cannot be decoded: give it at least a BOS token")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, Decoded] = {}
    for start in range(0, len(order), decode_rows):
        group = order[start : start + decode_rows]
        decoded = _decode_group(
            model, [list(prompts[i]) for i in group], pad_id, eos_id, max_new_tokens, prefill_rows
        )
        results.update(zip(group, decoded, strict=True))
    return [results[i] for i in range(len(prompts))]


def prefill_buckets(
    lengths: Sequence[int], max_rows: int, max_padding: float = MAX_PREFILL_PADDING
) -> list[slice]:
    """Consecutive spans of ascending `lengths`: at most `max_rows` each, padding ≤ `max_padding`.

    A span is padded to its last (longest) length; it closes before a row that would make pad
    tokens more than `max_padding` of it. One row always makes a span.
    """
    spans: list[slice] = []
    start = total = 0
    for end, length in enumerate(lengths):
        rows = end - start + 1
        padding = length * rows - (total + length)  # pad tokens if this row joins the span
        if rows > 1 and (rows > max_rows or padding > max_padding * length * rows):
            spans.append(slice(start, end))
            start, total = end, 0
        total += length
    if lengths:
        spans.append(slice(start, len(lengths)))
    return spans


def _left_padded(rows: Sequence[list[int]], width: int, pad_id: int) -> tuple[Any, Any]:
    import torch

    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _prefill(model: Any, rows: Sequence[list[int]], pad_id: int, prefill_rows: int):
    """Prefill sorted `rows` bucket by bucket; one KV cache left-padded to the longest row.

    Returns (cache, attention mask, next-token logits) for all rows, in `rows` order.
    """
    import torch
    from torch.nn.functional import pad
    from transformers import DynamicCache

    width = max(len(r) for r in rows)
    keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
    layers: list[tuple[list[Any], list[Any]]] = []
    last_logits = []
    for span in prefill_buckets([len(r) for r in rows], prefill_rows):
        bucket = rows[span]
        bucket_width = max(len(r) for r in bucket)
        ids, mask = _left_padded(bucket, bucket_width, pad_id)
        cache = DynamicCache(config=model.config)
        out = model(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
            past_key_values=cache,
            use_cache=True,
            **({"logits_to_keep": 1} if keep_last else {}),
        )
        last_logits.append(out.logits[:, -1, :].float())
        extra = (0, 0, width - bucket_width, 0)  # zeros on the left of the sequence axis: masked
        for index, layer in enumerate(cache.layers):
            if len(layers) <= index:
                layers.append(([], []))
            layers[index][0].append(pad(layer.keys, extra))
            layers[index][1].append(pad(layer.values, extra))
    merged = DynamicCache(config=model.config)
    for index, (keys, values) in enumerate(layers):
        merged.update(torch.cat(keys), torch.cat(values), index)
    _, mask = _left_padded(rows, width, pad_id)
    return merged, mask.to(model.device), torch.cat(last_logits)


def _decode_group(
    model: Any,
    rows: list[list[int]],
    pad_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    prefill_rows: int,
) -> list[Decoded]:
    import torch

    tokens: list[list[int]] = [[] for _ in rows]
    logprobs: list[list[float]] = [[] for _ in rows]
    with torch.inference_mode():
        cache, mask, logits = _prefill(model, rows, pad_id, prefill_rows)
        active = torch.arange(len(rows))
        positions = torch.tensor([len(r) for r in rows], device=mask.device)
        for step in range(max_new_tokens):
            chosen = logits.argmax(-1)
            chosen_lp = logits.log_softmax(-1).gather(-1, chosen[:, None])[:, 0]
            for row, token, lp in zip(
                active.tolist(), chosen.tolist(), chosen_lp.tolist(), strict=True
            ):
                tokens[row].append(token)
                logprobs[row].append(lp)
            going = chosen != eos_id if eos_id is not None else torch.ones_like(chosen, dtype=bool)
            if step == max_new_tokens - 1 or not bool(going.any()):
                break
            if not bool(going.all()):  # finished rows leave the batch and its cache
                keep = going.nonzero()[:, 0]
                cache.batch_select_indices(keep)
                active, chosen = active[keep.cpu()], chosen[keep]
                mask, positions = mask[keep], positions[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            positions = positions + 1
            logits = out.logits[:, -1, :].float()
    return [Decoded(t, lp) for t, lp in zip(tokens, logprobs, strict=True)]
