"""Throughput of PII redaction on N synthetic support messages; prints rows/s, writes the result.

    .venv/bin/python benchmarks/bench_redact.py --n 100000

The engine is built (and its one-off import cost paid) before the clock starts; the timed part
is `redact_texts` over every message, the way intake redacts a batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from pipelines.data.pii.planted import planted_messages
from pipelines.data.redact import redact_text, redact_texts

RESULT = Path(__file__).resolve().parent / "results" / "redact.json"


def run(n: int, pii_share: float, seed: int) -> dict:
    """Redact `n` planted messages; return the measurement as one JSON-able row."""
    messages = [message.text for message in planted_messages(n, seed=seed, pii_share=pii_share)]
    redact_text("warm up: jo@example.com")  # builds the engines outside the timing
    start = time.perf_counter()
    results = redact_texts(messages)
    seconds = time.perf_counter() - start
    redacted = sum(result.redacted for result in results)
    return {
        "benchmark": "redact_texts",
        "rows": n,
        "pii_share": pii_share,
        "rows_redacted": redacted,
        "seconds": round(seconds, 2),
        "rows_per_s": round(n / seconds, 1),
        "engine": f"presidio-analyzer {version('presidio-analyzer')}, spaCy blank:en, "
        f"phonenumbers {version('phonenumbers')}",
        "cpu": f"{platform.processor() or platform.machine()} x{os.cpu_count()}",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages to redact")
    parser.add_argument("--pii-share", type=float, default=0.1, help="share with planted PII")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT, help="where the result row goes")
    args = parser.parse_args()
    row = run(args.n, args.pii_share, args.seed)
    print(f"redact_texts: {row['rows']} rows in {row['seconds']} s = {row['rows_per_s']} rows/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
