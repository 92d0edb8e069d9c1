"""Benchmark a `monitor` run over a real SQLite prediction log of N logged predictions.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_monitor.py --rows 100000 \
        --models /tmp/casepilot-test-home/cache/service-test-models-<hash>

`--models` is a folder of trained stage folders (`<dir>/<stage>`, e.g. the tiny models
tests/integration/test_service.py caches). They are registered in a SQLite MLflow store as every
stage's champion, plus a `trigger` challenger (threshold 0: lets every message through); then N
predictions with the whole-shadow suggestion, the shadow versions and the agent's reply are
written to the prediction log, and the real `monitor` flow runs once (Prefect's ephemeral API),
with its two heavy steps also timed on their own: the drift/online window
(`monitor.window_cases`) and the per-stage decision (read of the shadow window since the
challenger was registered + replay of the newest `promote.replay_max_cases` cases through two
cascades). Writes benchmarks/results/monitor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "monitor.json"
STAGES = ("trigger", "topic", "retrieve", "answer", "tone")


def _register(params, models: Path, tmp: Path) -> dict[str, str]:
    """Champions of every stage, then a trigger challenger; `<model>/<version>` of the shadow."""
    from pipelines.registry.lineage import stage_lineage
    from pipelines.registry.register import bootstrap_champion, register_stage

    def register(stage: str, folder: Path) -> str:
        lineage = stage_lineage(params, stage, data_version="md5-bench", model_dir=folder)
        done = register_stage(params, stage, folder, metrics={}, lineage=lineage)
        return f"{done.name}/{done.version}"

    refs = {stage: register(stage, models / stage) for stage in STAGES}
    bootstrap_champion(params, by="bench", stages=STAGES)
    challenger = tmp / "trigger-open"
    shutil.copytree(models / "trigger", challenger, symlinks=True)
    meta = json.loads((challenger / "stage.json").read_text())
    (challenger / "stage.json").write_text(json.dumps({**meta, "threshold": 0.0}))
    return {**refs, "trigger": register("trigger", challenger)}


def _write_log(params, rows: int, shadow_refs: dict[str, str]) -> float:
    """N predictions + feedback (synthetic messages and replies), written in batches; seconds."""
    from monitoring.log.store import PredictionLog
    from pipelines.config import SynthConfig
    from pipelines.data.contract import Feedback, PredictionRecord, Suggestion
    from pipelines.data.synth import generate_world

    world = generate_world(SynthConfig(cases_per_day=2000, drift_from_day=None), seed=11, days=1)
    cases = [c for day in world.days for c in day.cases if c.agent_reply]
    start = datetime.now(UTC) + timedelta(seconds=1)
    log = PredictionLog.from_url(params.prediction_log_url)
    began = time.perf_counter()
    try:
        for first in range(0, rows, 5000):
            records, feedback = [], []
            for i in range(first, min(rows, first + 5000)):
                case, at = cases[i % len(cases)], start + timedelta(milliseconds=i)
                text = case.agent_reply if i % 3 else None
                reason = None if text else "trigger: low"
                suggestion = Suggestion(text=text, abstain_reason=reason, latency_ms=5.0,
                                        stopped_at=None if text else "trigger")  # fmt: skip
                records.append(PredictionRecord(
                    request_id=f"r{i}", case_id=f"c{i}", created_at=at, message=case.message,
                    champion=suggestion, latency_ms=5.0,
                    shadow=suggestion.model_copy(update={"versions": shadow_refs})))  # fmt: skip
                feedback.append(Feedback(case_id=f"c{i}", sent_reply=case.agent_reply,
                                         used_suggestion=bool(text), created_at=at))  # fmt: skip
            log.write(records)
            log.write_feedback(feedback)
    finally:
        log.close()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--models", type=Path, required=True, help="folder of <stage> folders")
    parser.add_argument("--replay-max", type=int, default=2000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    os.environ["CASEPILOT_HOME"] = str(tmp / "home")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from flows.lifecycle.decide import decide_challengers
    from monitoring.log.store import PredictionLog
    from monitoring.monitor import run_monitor
    from pipelines.config import SynthConfig, load_params
    from pipelines.data.intake.store import IntakePaths, load_accepted, write_accepted
    from pipelines.data.synth import generate_world
    from pipelines.home import Home

    Home(tmp / "home").ensure().apply()
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump({
        "register": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                     "gates": {s: {} for s in STAGES}},
        "promote": {"min_cases": 200, "replay_max_cases": args.replay_max},
    }))  # fmt: skip
    params = load_params(params_file)
    world = generate_world(SynthConfig(cases_per_day=200, drift_from_day=None), seed=3, days=2)
    reference = [c for day in world.days for c in day.cases]
    write_accepted(IntakePaths.for_params(params), "reference", reference)
    refs = _register(params, args.models, tmp)
    write_s = _write_log(params, args.rows, refs)

    log = PredictionLog.from_url(params.prediction_log_url)
    began = time.perf_counter()
    window = log.window(limit=params.monitor.window_cases)
    report = run_monitor(params, load_accepted(params), window)
    window_s = time.perf_counter() - began
    logged = log.count()
    log.close()
    began = time.perf_counter()
    decided = decide_challengers(params)
    decide_s = time.perf_counter() - began

    from flows.lifecycle.loop import monitor

    began = time.perf_counter()
    state = monitor(str(params_file), return_state=True)
    flow_s = time.perf_counter() - began
    result = {
        "rows_logged": logged,
        "write_rows_per_s": round(args.rows / write_s),
        "monitor_window_step_s": round(window_s, 1),
        "decide_step_s": round(decide_s, 1),
        "decided": {s: {k: o.get(k) for k in ("status", "cases")} for s, o in decided.items()},
        "monitor_flow_run_s": round(flow_s, 1),
        "monitor_flow_state": state.name,
        "window_cases": params.monitor.window_cases,
        "replay_max_cases": args.replay_max,
        "drift_breach": report.drift.breach,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
