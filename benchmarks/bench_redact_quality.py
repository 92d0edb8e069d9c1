"""Precision and recall of PII redaction on the synthetic world's planted PII, plain and disguised.

    .venv/bin/python benchmarks/bench_redact_quality.py --days 2 --cases 500

The world (`pipelines.data.synth`, `data.synth.pii_share` of messages carry one planted value) knows
every value it planted (`DayBatch.planted`). Two variants of its messages are redacted:

- `as planted`: the world's own formats;
- `disguised`: each planted value rewritten the way issue 13's probes did — digits joined by
  zero-width spaces or dots or written fullwidth, IBANs in lower case, e-mails with `＠`,
  " [at] " or "(at)".

Recall: planted values no longer findable (`PlantedIndex`) after redaction. Precision: redacted
spans that overlap a planted value, over all redacted spans (the world's messages also carry
amounts, dates, order numbers and names of things; a span on those is a false positive).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from pipelines.config import SynthConfig
from pipelines.data.pii.detectors import PlantedIndex, PlantedValue
from pipelines.data.redact import detect_pii, redact_texts
from pipelines.data.synth import generate_world

RESULT = Path(__file__).resolve().parent / "results" / "redact_quality.json"
ZWSP = "\u200b"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def disguise(kind: str, value: str, rng: random.Random) -> str:
    """One of the probes' bypasses for a value of `kind` (names are left as they are)."""
    if kind in ("card", "phone"):
        way = rng.choice(("zero-width", "fullwidth", "dots"))
        if way == "zero-width":
            return ZWSP.join(value.split()) if " " in value else ZWSP.join(value)
        return fullwidth(value) if way == "fullwidth" else value.replace(" ", ".")
    if kind == "iban":
        return rng.choice((value.lower(), fullwidth(value), ZWSP.join(value.split())))
    if kind == "email":
        local, domain = value.split("@")
        return rng.choice((f"{local}＠{domain}", f"{local} [at] {domain}", f"{local}(at){domain}"))
    return value


def world_messages(cfg: SynthConfig, *, disguised: bool, seed: int) -> tuple[list, list]:
    """(messages, per-message list of (kind, value as written)) for every planted message."""
    rng = random.Random(seed)
    messages, planted = [], []
    for day in generate_world(cfg).days:
        by_case = {case_id: (kind, value) for case_id, kind, value in day.planted}
        for case in day.cases:
            text, values = case.message, []
            if case.case_id in by_case:
                kind, value = by_case[case.case_id]
                written = disguise(kind, value, rng) if disguised else value
                text = text.replace(value, written)
                values.append((kind, written, value))
            messages.append(text)
            planted.append(values)
    return messages, planted


def measure(messages: list[str], planted: list[list]) -> dict:
    """Recall per kind, precision over redacted spans, for one variant."""
    start = time.perf_counter()
    redacted = redact_texts(messages)
    seconds = time.perf_counter() - start
    leaked, total = Counter(), Counter()
    true_spans = false_spans = 0
    for text, result, values in zip(messages, redacted, planted, strict=True):
        index = PlantedIndex([PlantedValue(kind, value) for kind, _, value in values])
        for kind, _, _ in values:
            total[kind] += 1
        for value in index.find(result.text):
            leaked[value.kind] += 1
        located = [(text.find(w), text.find(w) + len(w)) for _, w, _ in values if w in text]
        for span in detect_pii(text) if result.redacted else []:
            hit = any(span.start < end and start < span.end for start, end in located)
            true_spans += hit
            false_spans += not hit
    return {
        "planted": sum(total.values()),
        "leaked": sum(leaked.values()),
        "recall": round(1 - sum(leaked.values()) / max(1, sum(total.values())), 4),
        "recall_by_kind": {k: round(1 - leaked[k] / total[k], 4) for k in sorted(total)},
        "redacted_spans": true_spans + false_spans,
        "false_positive_spans": false_spans,
        "precision": round(true_spans / max(1, true_spans + false_spans), 4),
        "messages": len(messages),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--cases", type=int, default=500, help="cases per day")
    parser.add_argument("--pii-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="after", help="a name for this code version")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    cfg = SynthConfig(
        days=args.days,
        cases_per_day=args.cases,
        pii_share=args.pii_share,
        seed=args.seed,
        drift_from_day=None,
    )
    redact_texts(["warm up: jo@example.com, 4111 1111 1111 1111"])  # engines built untimed
    rows = {}
    for variant in ("as planted", "disguised"):
        messages, planted = world_messages(cfg, disguised=variant == "disguised", seed=args.seed)
        rows[variant] = measure(messages, planted)
        row = rows[variant]
        print(
            f"{args.label} / {variant}: recall {row['recall']:.1%} ({row['leaked']} of "
            f"{row['planted']} leaked; {row['recall_by_kind']}), precision {row['precision']:.1%}"
            f" ({row['false_positive_spans']} false spans of {row['redacted_spans']})"
        )
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.label] = {
        "world": cfg.model_dump(mode="json"),
        "variants": rows,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
