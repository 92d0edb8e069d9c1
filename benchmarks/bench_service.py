"""Loopback load test of the copilot service: latency percentiles, shadow cost, batching gain.

    .venv/bin/python benchmarks/bench_service.py [--seed 7 --days 3 --epochs 1] [--models DIR]
    .venv/bin/python benchmarks/bench_service.py --epochs 1 --topic-threshold 0 --only-batching

Models: the demo cascade, trained on the synthetic world by the project's own `casepilot data
synth` / `casepilot train <stage>` commands with params.yaml's settings and cached under
`$CASEPILOT_HOME/bench/` (`demo_models.py`), unless `--models DIR` (DIR/<stage>/) is given.
The shadow challenger is the champion with a retuned trigger threshold, so the shadow runs the
whole cascade again (its worst case).

Starts three `bentoml serve` processes on 127.0.0.1 — batched with shadow on, batched with
shadow off, unbatched (max_batch_size 1) with shadow off — and drives them with httpx at
concurrency 1, 8 and 32 (closed loop) and at "c1-paced" (one client with think time, so the
service idles between requests as with real agents). Shadow on and off run back to back in
alternating order, and each pair gives one on ÷ off ratio, so a busy neighbour on the box
slows both sides alike; the reported ratio is the median over `--repeats` pairs. After each
round the server is flushed (its deferred shadow work finishes) before the next round starts;
how many shadow runs finished *during* the round, and how many were shed, is recorded beside
the latencies. Goals (issue 6): p95 ≤ 1 s at concurrency 8, champion latency shadow on ÷ off
≤ 1.10, batched ÷ unbatched throughput ≥ 3. Writes `benchmarks/results/service.json`.
`--only-batching` starts just the batched and unbatched servers (shadow off) and measures the
batching ratio at c32 (with each round's mean batch size) in a few minutes, into
`benchmarks/results/service-batching.json`. `--torch-threads N` sets `serve.torch_threads` of
every server alike (default: ServeConfig's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from demo_models import demo_models
from service_harness import counts, flush, models_layout, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
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


def traffic(models: Path, count: int = 256) -> list[str]:
    """Customer messages of the world the models were trained on (the fixed list otherwise)."""
    cases = models.parent / "world" / "cases.jsonl"
    if not cases.exists():
        return MESSAGES
    lines = cases.read_text(encoding="utf-8").splitlines()[-count:]
    return [json.loads(line)["message"] for line in lines]


# name → (concurrent clients, mean think time between a client's requests in s). "c1-paced" is
# an agent-like trickle: the service idles between requests, so the shadow runs *between* and
# sometimes *during* champion requests — the overlap the yielding design has to keep cheap.
LEVELS = {"c1": (1, 0.0), "c8": (8, 0.0), "c32": (32, 0.0), "c1-paced": (1, 0.25)}


async def drive(
    url: str, concurrency: int, requests: int, messages: list[str], think_s: float = 0.0
) -> dict:
    """Send `requests` suggestions from `concurrency` workers; latency percentiles and rate."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    pauses = random.Random(13)  # the same think times for every configuration
    stopped: dict[str, int] = {}  # where the champion's cascade stopped (or "emitted")

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            response = await client.post(
                f"{url}/suggest",
                json={"case_id": f"bench-{i}", "message": messages[i % len(messages)]},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200
            if response.status_code == 200:
                stage = response.json()["suggestion"]["stopped_at"] or "emitted"
                stopped[stage] = stopped.get(stage, 0) + 1
            if think_s:  # a client's think time (load shape), not synchronisation
                await asyncio.sleep(pauses.expovariate(1 / think_s))

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
        "stopped_at": stopped,
    }


CONFIGS = {"shadow_on": (True, 32), "shadow_off": (False, 32), "unbatched": (False, 1)}


def run_round(url: str, name: str, level: str, requests: int, repeat: int, messages) -> dict:
    """One measured round, then a flush; records shadow work done during the round vs after."""
    clients, think_s = LEVELS[level]
    before = counts(url)
    row = asyncio.run(drive(url, clients, max(requests, 2 * clients), messages, think_s))
    after = counts(url)
    during = after["shadow_done"] - before["shadow_done"]
    batches = after["batches"] - before["batches"]
    row["champion_batches"] = batches  # how the service grouped the round's requests
    items = after["items"] - before["items"]
    row["mean_batch_size"] = round(items / batches, 2) if batches else 0.0
    started = time.perf_counter()
    stats = flush(url)
    row.update(
        level=level,
        config=name,
        repeat=repeat,
        shadow_done_during_round=during,
        flush_s=round(time.perf_counter() - started, 2),
        shadow_totals=stats,
        load_avg_1m=round(os.getloadavg()[0], 2),
    )
    print(json.dumps(row), flush=True)
    return row


def measure(
    work: Path,
    root: Path,
    messages: list[str],
    *,
    requests: int,
    repeats: int,
    levels: tuple[str, ...] = tuple(LEVELS),
    configs: tuple[str, ...] = tuple(CONFIGS),
    torch_threads: int | None = None,
) -> list[dict]:
    """The servers up at once; shadow on/off back to back in alternating order.

    `configs` without "shadow_on" (`--only-batching`) runs batched and unbatched alone, at c32.
    """
    servers = {
        name: start_server(
            work,
            root,
            shadow=CONFIGS[name][0],
            max_batch=CONFIGS[name][1],
            torch_threads=torch_threads,
        )
        for name in configs
    }
    try:
        for url, _ in servers.values():
            asyncio.run(drive(url, 2, 8, messages))  # warm-up
            flush(url)
        rows = []
        for repeat in range(repeats):
            for level in levels:
                pair = [c for c in ("shadow_on", "shadow_off") if c in servers]
                pair = pair[:: 1 if repeat % 2 == 0 else -1]
                extra = ["unbatched"] if level == "c32" else []
                order = pair + extra if repeat % 2 == 0 else extra + pair
                for name in order:
                    rows.append(
                        run_round(servers[name][0], name, level, requests, repeat, messages)
                    )
        return rows
    finally:
        for _, process in servers.values():
            stop_server(process)


def _median(rows: list[dict], name: str, level: str, key: str) -> float:
    values = [r[key] for r in rows if r["config"] == name and r["level"] == level]
    return float(np.median(values))


def shadow_ratios(rows: list[dict], level: str, key: str) -> list[float]:
    """Shadow on ÷ off of `key` for each repeat's back-to-back pair at `level`."""
    pick = {(r["config"], r["repeat"]): r[key] for r in rows if r["level"] == level}
    repeats = sorted({rep for _, rep in pick})
    return [round(pick["shadow_on", i] / pick["shadow_off", i], 3) for i in repeats]


def _cpu_model() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def summarize(rows: list[dict], levels: tuple[str, ...] = tuple(LEVELS)) -> dict:
    """Medians per configuration and level; shadow and batching ratios per back-to-back pair."""
    medians = {
        f"{name}@{level}": {
            k: _median(rows, name, level, k)
            for k in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")
        }
        for name in CONFIGS
        for level in levels
        if (name != "unbatched" or level == "c32") and any(r["config"] == name for r in rows)
    }
    shadowed = any(r["config"] == "shadow_on" for r in rows)
    ratios = {
        key: {level: shadow_ratios(rows, level, key) for level in levels if shadowed}
        for key in ("p50_ms", "p95_ms")
    }
    by_repeat = {(r["config"], r["repeat"]): r for r in rows if r["level"] == "c32"}
    gains = [
        by_repeat["shadow_off", i]["throughput_rps"] / by_repeat["unbatched", i]["throughput_rps"]
        for i in sorted({i for _, i in by_repeat})
    ]
    on = [r for r in rows if r["config"] == "shadow_on"]
    return {
        "p95_ms_at_c8": medians.get("shadow_on@c8", {}).get("p95_ms"),
        "shadow_ratio_p50": {lv: float(np.median(v)) for lv, v in ratios["p50_ms"].items()},
        "shadow_ratio_p95": {lv: float(np.median(v)) for lv, v in ratios["p95_ms"].items()},
        "shadow_ratio_pairs": ratios,
        "batching_gain_at_c32": round(float(np.median(gains)), 2) if gains else None,
        "batching_gain_pairs": [round(g, 2) for g in gains],
        "mean_batch_size_at_c32": {
            name: _median(rows, name, "c32", "mean_batch_size")
            for name in CONFIGS
            if any(r["config"] == name and r["level"] == "c32" for r in rows)
        },
        "shadow_done_during_rounds": {
            level: f"{sum(r['shadow_done_during_round'] for r in on if r['level'] == level)}"
            f" of {sum(r['requests'] for r in on if r['level'] == level)}"
            for level in levels
        },
        "shadow_final_counts": on[-1]["shadow_totals"] if on else {},
        "champion_stopped_at": {
            stage: sum(r["stopped_at"].get(stage, 0) for r in rows)
            for stage in sorted({s for r in rows for s in r["stopped_at"]})
        },
        "medians": medians,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="DIR/<stage>/ (default: demo)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic world seed (demo models)")
    parser.add_argument("--days", type=int, default=3, help="synthetic world days (demo models)")
    parser.add_argument("--epochs", type=float, default=None, help="override params' epochs")
    parser.add_argument("--jobs", type=int, default=1, help="demo stages trained at once")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument(
        "--topic-threshold", type=float, default=None, help="override the topic threshold"
    )
    parser.add_argument("--requests", type=int, default=64, help="requests per round")
    parser.add_argument("--repeats", type=int, default=4, help="on/off pairs per level")
    parser.add_argument(
        "--only-batching",
        action="store_true",
        help="only the batching ratio: batched vs unbatched (shadow off) at c32 (a few minutes)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default results/service.json")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="serve.torch_threads of every server"
    )
    args = parser.parse_args()
    if args.only_batching:
        args.levels = ["c32"]
    out = args.out or RESULTS / ("service-batching.json" if args.only_batching else "service.json")
    models = args.models or demo_models(args.seed, args.days, jobs=args.jobs, epochs=args.epochs)
    started, load_before = time.perf_counter(), os.getloadavg()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="casepilot-bench-service-") as tmp:
        work = Path(tmp)
        root = models_layout(models, work, topic_threshold=args.topic_threshold)
        levels = tuple(args.levels)
        configs = ("shadow_off", "unbatched") if args.only_batching else tuple(CONFIGS)
        rows = measure(
            work, root, traffic(models), requests=args.requests, repeats=args.repeats,
            levels=levels, configs=configs, torch_threads=args.torch_threads,
        )  # fmt: skip
    from pipelines.config import ServeConfig

    serve = ServeConfig(**({"torch_threads": args.torch_threads} if args.torch_threads else {}))
    result = {
        "goals": {"p95_ms_at_c8": 1000, "shadow_ratio_max": 1.10, "batching_gain_min": 3.0},
        **summarize(rows, levels),
        "runs": rows,
        "models": {
            "folder": str(models),
            "demo": args.models is None,
            "seed": args.seed,
            "days": args.days,
            "epochs": args.epochs or "params.yaml",
            "topic_threshold": "trained" if args.topic_threshold is None else args.topic_threshold,
        },
        "serve": serve.model_dump(
            include={
                "torch_threads",
                "shadow_max_batch",
                "shadow_quiet_ms",
                "shadow_queue_size",
                "max_batch_size",
            }
        ),
        "requests_per_round": args.requests,
        "repeats": args.repeats,
        "started_at": started_at,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    keys = (
        "p95_ms_at_c8",
        "shadow_ratio_p50",
        "shadow_ratio_p95",
        "batching_gain_at_c32",
        "batching_gain_pairs",
        "mean_batch_size_at_c32",
        "shadow_done_during_rounds",
    )
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
