"""Loopback load test of the copilot service: latency percentiles, shadow cost, batching gain.

    .venv/bin/python benchmarks/bench_service.py --models DIR   (DIR/<stage>/ trained folders)

Starts three `bentoml serve` processes on 127.0.0.1 — batched with shadow on, batched with
shadow off, unbatched (max_batch_size 1) with shadow off — and drives them with httpx at
concurrency 1, 8 and 32, interleaved over `--repeats` rounds in rotating order (so a busy
neighbour on the box slows every configuration alike); medians are reported. The shadow
challenger is the champion with a retuned trigger threshold, so the shadow runs the whole
cascade again (its worst case). Goals (issue 6): p95 ≤ 1 s at
concurrency 8, champion latency shadow on ÷ off ≤ 1.10, batched ÷ unbatched throughput ≥ 3.
Writes `benchmarks/results/service.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BENCH_KEY = "bench-only-key"
STAGES = ("trigger", "topic", "retrieve", "answer", "tone")
MESSAGES = [
    "my payout has not arrived yet, where is it?",
    "how do I refund a customer",
    "thanks, have a nice day",
    "why was my card declined at the shop",
    "can I change the email on my account?",
    "the dashboard shows a failed transfer",
    "hello",
    "how long does a refund take to reach the card",
]


def models_layout(models: Path, work: Path) -> Path:
    """`champion` → models; `challenger/trigger` → its trigger with a retuned threshold."""
    root = work / "models"
    (root / "challenger").mkdir(parents=True)
    (root / "champion").symlink_to(models.resolve())
    trigger = root / "challenger" / "trigger"
    shutil.copytree(models / "trigger", trigger)
    meta = json.loads((trigger / "stage.json").read_text())
    meta["threshold"] = max(0.0, float(meta["threshold"]) - 0.05)
    (trigger / "stage.json").write_text(json.dumps(meta))
    return root


def start_server(work: Path, root: Path, *, shadow: bool, max_batch: int) -> tuple:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shadow_yaml = "".join(f"    {s}: {str(shadow).lower()}\n" for s in STAGES)
    params = work / f"params-{shadow}-{max_batch}.yaml"
    params.write_text(
        f"serve:\n  max_batch_size: {max_batch}\n  shadow_timeout_s: 30\n  shadow:\n{shadow_yaml}"
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


async def drive(url: str, concurrency: int, requests: int) -> dict:
    """Send `requests` suggestions from `concurrency` workers; latency percentiles and rate."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            response = await client.post(
                f"{url}/suggest",
                json={"case_id": f"bench-{i}", "message": MESSAGES[i % len(MESSAGES)]},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors,
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "throughput_rps": round(requests / wall, 2),
    }


CONFIGS = {"shadow_on": (True, 32), "shadow_off": (False, 32), "unbatched": (False, 1)}


def flush(url: str) -> None:
    """Wait until the server's shadow work and log writes are done (between measurements)."""
    httpx.post(f"{url}/admin/flush", json={}, headers={"X-API-Key": BENCH_KEY}, timeout=300)


def measure(work: Path, root: Path, *, requests: int, repeats: int) -> list[dict]:
    """All three servers up at once; runs interleaved (rotating order) so load drift hits all."""
    servers = {
        name: start_server(work, root, shadow=shadow, max_batch=batch)
        for name, (shadow, batch) in CONFIGS.items()
    }
    try:
        for url, _ in servers.values():
            asyncio.run(drive(url, 2, 8))  # warm-up
            flush(url)
        rows = []
        names = list(CONFIGS)
        for repeat in range(repeats):
            for level in (1, 8, 32):
                order = names[repeat % 3 :] + names[: repeat % 3]
                for name in order:
                    if name == "unbatched" and level != 32:
                        continue
                    url = servers[name][0]
                    row = asyncio.run(drive(url, level, max(requests, 2 * level)))
                    flush(url)
                    row.update(config=name, repeat=repeat)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        return rows
    finally:
        for _, process in servers.values():
            stop_server(process)


def _median(rows: list[dict], name: str, level: int, key: str) -> float:
    values = [r[key] for r in rows if r["config"] == name and r["concurrency"] == level]
    return float(np.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="folder of trained stages")
    parser.add_argument("--requests", type=int, default=64, help="requests per level")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=RESULTS / "service.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="casepilot-bench-service-") as tmp:
        work = Path(tmp)
        root = models_layout(args.models, work)
        rows = measure(work, root, requests=args.requests, repeats=args.repeats)
    summary = {
        f"{name}@c{level}": {
            k: _median(rows, name, level, k)
            for k in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")
        }
        for name in CONFIGS
        for level in ((32,) if name == "unbatched" else (1, 8, 32))
    }
    shadow_ratio = {
        level: round(
            summary[f"shadow_on@c{level}"]["p50_ms"] / summary[f"shadow_off@c{level}"]["p50_ms"], 3
        )
        for level in (1, 8, 32)
    }
    batching = round(
        summary["shadow_off@c32"]["throughput_rps"] / summary["unbatched@c32"]["throughput_rps"], 2
    )
    result = {
        "goals": {"p95_ms_at_c8": 1000, "shadow_ratio_max": 1.10, "batching_gain_min": 3.0},
        "p95_ms_at_c8": summary["shadow_on@c8"]["p95_ms"],
        "shadow_ratio_p50": shadow_ratio,
        "batching_gain_at_c32": batching,
        "medians": summary,
        "runs": rows,
        "models": str(args.models),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    keys = ("p95_ms_at_c8", "shadow_ratio_p50", "batching_gain_at_c32")
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
