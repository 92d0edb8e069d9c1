"""Latencies of the deployed lifecycle, measured on one `casepilot demo` run (demo world, 2 cores).

The demo drives the platform `casepilot up` starts (deployments, schedules, the drift automation)
and records when each step ended and which flow run did it; `flows/demo/figures.py` derives the
latencies (data cut-off → challenger registered; drift onset → page → retrain started;
approval → champion serving, with the requests that failed during the switch), and every demo
run writes them to `$CASEPILOT_HOME/logs/demo-figures.json`.

    .venv/bin/python benchmarks/bench_lifecycle.py --from .casepilot/demo/logs/demo-figures.json
        (the figures of the last `make demo`)
    .venv/bin/python benchmarks/bench_lifecycle.py [--overlay FILE]   (runs the demo once)

Either way the figures are copied to `--out` (default results/lifecycle.json) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="a demo run's demo-figures.json")
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lifecycle.json")
    args = parser.parse_args()
    console = Console(width=160)
    if args.source is not None:
        if not args.source.is_file():
            raise SystemExit(f"{args.source}: no such file; run `make demo` first")
        result = json.loads(args.source.read_text(encoding="utf-8"))
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from flows.demo.figures import figures
        from flows.demo.main import run_demo
        from flows.demo.params import DEMO_OVERLAY

        summary = run_demo(Path("params.yaml"), console, overlays=(DEMO_OVERLAY, *args.overlay))
        result = figures(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    for key, value in result.items():
        if key != "steps":
            console.print(f"{key}: {value}")


if __name__ == "__main__":
    main()
