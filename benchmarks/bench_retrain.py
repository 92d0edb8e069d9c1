"""Data cut-off → challenger registered, through the real `retrain` flow, on the demo world.

The demo's params (params.yaml + configs/demo.yaml) with intake reading a landing folder
(`data.source.path: landing`), in a fresh CASEPILOT_HOME. The world is made first by the DVC
`synth` stage (untimed). Then, timed from the moment the batches land ("data cut-off"):

1. `all`: the training days land, `retrain` (all five stages) runs every DVC stage and
   registers five versions;
2. `one`: the next day lands, `retrain(stages=[--one])` reruns intake → validate → split and
   that stage's train → quantize → evaluate → register.

Each figure is the wall time from landing to the flow's return, with the DVC stages' own seconds
(including each `casepilot` process's start-up). Prefect runs in its ephemeral mode (a
temporary local API). Writes benchmarks/results/retrain.json.

    HF_HUB_OFFLINE=1 PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600 \
        .venv/bin/python benchmarks/bench_retrain.py --home /tmp/bench-lifecycle
    ... --quantize auto    # the gate's full candidate list instead of the demo's `none`
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "retrain.json"


def _setup(home_dir: Path, quantize: str) -> tuple[Any, Path]:
    from flows.demo.params import DEMO_OVERLAY, demo_setup
    from pipelines.home import Home

    if home_dir.exists():
        shutil.rmtree(home_dir)
    home = Home(home_dir).ensure()
    overrides = {"data": {"source": {"path": "landing"}}, "quantize": {"method": quantize}}
    setup = demo_setup(REPO / "params.yaml", (DEMO_OVERLAY,), home=home, overrides=overrides)
    return setup, setup.params_file


def _timed_retrain(params: Any, params_file: Path, days: list[int], stages: Any) -> dict:
    from flows.demo.data import deliver_days
    from flows.lifecycle.loop import retrain

    deliver_days(params, days)
    cutoff = time.perf_counter()
    result = retrain(str(params_file), stages)
    return {
        "days": days,
        "stages": stages or "all",
        "cutoff_to_registered_s": round(time.perf_counter() - cutoff, 1),
        "registered": {s: r["version"] for s, r in result["registered"].items()},
        "challenger": {s: r["challenger"] for s, r in result["registered"].items()},
        "quantization": {s: r["quantization"] for s, r in result["registered"].items()},
        "stage_seconds": result["seconds"],
        "up_to_date": result["up_to_date"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/bench-lifecycle"))
    parser.add_argument("--one", default="trigger", help="the stage retrained on the next day")
    parser.add_argument("--quantize", default="none", help="quantize.method (demo: none)")
    parser.add_argument("--skip-all", action="store_true", help="only the one-stage figure")
    args = parser.parse_args()

    import os

    os.environ["CASEPILOT_HOME"] = str(args.home.resolve())
    setup, params_file = _setup(args.home.resolve(), args.quantize)
    from pipelines.repro.run import run_stage
    from pipelines.repro.workspace import dvc_workspace

    workspace = dvc_workspace(params_file, setup.params.home)
    run_stage(workspace, "synth", lambda _line: None)  # the world exists before any cut-off
    train = list(setup.timeline.train)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": []}
    if not args.skip_all:
        results["runs"].append(_timed_retrain(setup.params, params_file, train, None))
    else:  # the one-stage figure needs the first data and that stage registered once
        _timed_retrain(setup.params, params_file, train, [args.one])
    next_day = [max(train) + 1]
    results["runs"].append(_timed_retrain(setup.params, params_file, next_day, [args.one]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
