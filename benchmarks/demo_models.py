"""The benchmark's models: the cascade trained on the synthetic world by the project's own CLI.

    .venv/bin/python benchmarks/demo_models.py [--seed 7] [--days 3]   → prints the models folder

`casepilot data synth` writes the world; `casepilot train trigger|topic|retrieve|answer|tone
--no-mlflow` trains each stage with params.yaml's settings (the demo's). Everything is cached
under `$CASEPILOT_HOME/bench/service-demo-seed<S>-days<D>/`: a stage whose folder has its
`stage.json` is not trained again, so reruns of the service benchmark start in seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("trigger", "topic", "retrieve", "answer", "tone")


def cache_dir(seed: int, days: int, epochs: float | None = None) -> Path:
    """Where the benchmark keeps the world and the trained stages for this seed and size."""
    home = Path(os.environ.get("CASEPILOT_HOME", REPO / ".casepilot")).resolve()
    suffix = f"-epochs{epochs:g}" if epochs else ""
    return home / "bench" / f"service-demo-seed{seed}-days{days}{suffix}"


def _params_with_epochs(params: Path, epochs: float | None, out: Path) -> Path:
    """params.yaml itself, or a copy whose trained stages run `epochs` epochs (all else kept)."""
    if not epochs:
        return params
    import yaml

    values = yaml.safe_load(params.read_text(encoding="utf-8"))
    for stage in ("trigger", "topic", "answer", "tone"):
        values[stage]["epochs"] = float(epochs)
    out.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return out


def _start(args: list[str], home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "CASEPILOT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).with_name("casepilot")), *args]
    print("$ casepilot " + " ".join(args), flush=True)
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, log: Path) -> None:
    if process.wait():
        raise RuntimeError(f"`{' '.join(process.args)}` failed ({process.returncode}); see {log}")


def demo_models(
    seed: int = 7,
    days: int = 3,
    params: Path = REPO / "params.yaml",
    stages: tuple[str, ...] = STAGES,
    jobs: int = 1,
    epochs: float | None = None,
) -> Path:
    """The trained stage folders (`<cache>/models/<stage>/`), training only what is missing.

    The stages are independent, so up to `jobs` of them train at once (on a shared, busy box
    parallel commands finish sooner; on an idle 2-core one they only compete). `epochs`
    overrides params.yaml's epochs of the trained stages (same models, less training time).
    """
    work = cache_dir(seed, days, epochs)
    world, models, home = work / "world", work / "models", work / "home"
    work.mkdir(parents=True, exist_ok=True)
    common = ["--params", str(_params_with_epochs(params, epochs, work / "params.yaml"))]
    if not (world / "docs.jsonl").exists():
        synth = ["data", "synth", "--out", str(world), "--seed", str(seed), "--days", str(days)]
        _wait(_start([*synth, *common], home, work / "synth.log"), work / "synth.log")
    cases_file = world / "cases.jsonl"  # one file: the generator commands read a single JSONL
    if not cases_file.exists():
        batches = sorted((world / "batches").glob("*.jsonl"))
        cases_file.write_text("".join(f.read_text(encoding="utf-8") for f in batches), "utf-8")
    extra = {
        "retrieve": ["--docs", str(world / "docs.jsonl"), "--location", str(home / "qdrant")],
        "answer": ["--docs", str(world / "docs.jsonl")],
    }
    todo = [s for s in stages if not (models / s / "stage.json").exists()]
    while todo:
        running = []
        for stage in todo[:jobs]:
            out, log = models / stage, work / f"train-{stage}.log"
            args = ["train", stage, "--cases", str(cases_file), "--out", str(out)]
            args += [*extra.get(stage, []), *common, "--no-mlflow"]
            running.append((stage, _start(args, home, log), log, time.perf_counter()))
        for stage, process, log, started in running:
            _wait(process, log)
            print(f"{stage}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        todo = todo[jobs:]
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--jobs", type=int, default=1, help="stages trained at once")
    parser.add_argument("--epochs", type=float, default=None, help="override params' epochs")
    args = parser.parse_args()
    models = demo_models(
        args.seed, args.days, stages=tuple(args.stages), jobs=args.jobs, epochs=args.epochs
    )
    print(models)


if __name__ == "__main__":
    main()
