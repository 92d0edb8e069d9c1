"""Servers for the service benchmark: model folders, `bentoml serve` on loopback, flush, counts.

Each server gets its own params file (batch size, shadow per stage), CASEPILOT_HOME (an embedded
Qdrant folder is locked by one process), prediction log and port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BENCH_KEY = "bench-only-key"
STAGES = ("trigger", "topic", "retrieve", "answer", "tone")


def _set_threshold(stage_dir: Path, threshold: float) -> None:
    meta = json.loads((stage_dir / "stage.json").read_text())
    meta["threshold"] = threshold
    (stage_dir / "stage.json").write_text(json.dumps(meta))


def models_layout(models: Path, work: Path, *, topic_threshold: float | None = None) -> Path:
    """`champion` → models; `challenger/trigger` → its trigger with a retuned threshold.

    `topic_threshold` overrides the topic stage's (e.g. 0, so every answerable request goes on
    to retrieval and generation, as with a well-trained topic stage); the rest are links.
    """
    root = work / "models"
    (root / "challenger").mkdir(parents=True)
    (root / "champion").mkdir(parents=True)
    for stage in STAGES:
        if stage == "topic" and topic_threshold is not None:
            shutil.copytree(models / stage, root / "champion" / stage)
            _set_threshold(root / "champion" / stage, topic_threshold)
        else:
            (root / "champion" / stage).symlink_to((models / stage).resolve())
    trigger = root / "challenger" / "trigger"
    shutil.copytree(models / "trigger", trigger)
    threshold = json.loads((trigger / "stage.json").read_text())["threshold"]
    _set_threshold(trigger, max(0.0, float(threshold) - 0.05))
    return root


def start_server(
    work: Path, root: Path, *, shadow: bool, max_batch: int, torch_threads: int | None = None
) -> tuple:
    """Start `bentoml serve` on a free loopback port; `torch_threads` None = params' default."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shadow_yaml = "".join(f"    {s}: {str(shadow).lower()}\n" for s in STAGES)
    params = work / f"params-{shadow}-{max_batch}.yaml"
    params.write_text(
        f"serve:\n  max_batch_size: {max_batch}\n  shadow_timeout_s: 30\n  shadow:\n{shadow_yaml}"
        + (f"  torch_threads: {torch_threads}\n" if torch_threads else "")
    )
    env = {
        **os.environ,
        # one home each: an embedded Qdrant folder is locked by one process
        "CASEPILOT_HOME": str(work / f"home-{shadow}-{max_batch}"),
        "HF_HUB_OFFLINE": "1",
        "CASEPILOT_PARAMS": str(params),
        "CASEPILOT_MODELS_DIR": str(root),
        "CASEPILOT_PREDICTION_LOG_URL": f"sqlite:///{work / f'log-{shadow}-{max_batch}.db'}",
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "CASEPILOT_API_KEY": BENCH_KEY,
    }
    log = (work / f"server-{shadow}-{max_batch}.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "bentos.service:CopilotService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited; see {log.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise TimeoutError(f"server not ready in 300 s; see {log.name}")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def flush(url: str) -> dict:
    """Wait until the server's shadow work and log writes are done; its shadow counts."""
    response = httpx.post(
        f"{url}/admin/flush", json={}, headers={"X-API-Key": BENCH_KEY}, timeout=300
    )
    return response.json()["shadow"]


def counts(url: str) -> dict:
    """The server's counts now, without waiting: shadow jobs done, champion batches and items."""
    response = httpx.post(
        f"{url}/admin/flush",
        json={"timeout_s": 0.001},  # returns the runner's counts at once
        headers={"X-API-Key": BENCH_KEY},
        timeout=60,
    )
    body = response.json()
    batches = body.get("batches", {})
    return {
        "shadow_done": int(body["shadow"]["done"]),
        "batches": int(batches.get("batches", 0)),
        "items": int(batches.get("items", 0)),
    }


def shadow_done(url: str) -> int:
    """Shadow jobs finished so far (any outcome), without waiting for the rest."""
    return counts(url)["shadow_done"]
