"""Reliability probes of the copilot service on loopback: what it survives, with figures (issue 13).

    .venv/bin/python benchmarks/reliability.py [--minutes 10] [--concurrency 8] [--models DIR]
        [--only load,kill,faults,deps,fuzz]

Every probe runs real `bentoml serve` processes on 127.0.0.1 (own process group, stopped at the
end), bounded in time and count. Models: `--models DIR` (DIR/<stage>/, e.g. the demo cascade
from `benchmarks/demo_models.py`), else tiny stages trained in seconds (the tests' recipe,
cached under $CASEPILOT_HOME/bench/). The challenger is the champion with a retuned trigger.

- load: closed loop at the demo's concurrency (configs/demo.yaml traffic.concurrency = 8) for
  `--minutes`, unique case ids; acknowledged (200) vs prediction-log rows, champion and shadow.
- kill: the same with SIGKILL of the server's process group half way, then a restart on the
  same log: acknowledged requests missing from the log, rows whose shadow was marked lost.
- faults: fixed requests with the shadow crashing, hanging, timing out and a corrupt challenger
  file; champion answers compared with a fault-free run, shadow errors counted, p95 change.
- deps: the prediction log locked, the MLflow store missing or replaced by garbage at reload,
  the Qdrant folder locked at reload: 5xx count, answers, and recovery once it is back.
- fuzz: schemathesis over the OpenAPI of every route, plus 5 MB bodies and invalid UTF-8;
  5xx count and health after.

Writes `benchmarks/results/reliability.json` and prints the Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa
from service_harness import BENCH_KEY, build_tiny_models, kill9, launch, log_path, stop_server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ADMIN = {"X-API-Key": BENCH_KEY}
MESSAGES = [
    "my payout has not arrived yet, where is it?",
    "how do I refund a customer",
    "thanks, have a nice day",
    "why was my card declined at the shop",
    "can I change the email on my account?",
    "the dashboard shows a failed transfer",
]
PARAMS = "serve:\n  reload_poll_s: 3600\n  shadow_timeout_s: 3.0\n  log_commit_timeout_s: 1.0\n"


def tiny_models() -> Path:
    """The tests' tiny stages, trained once into $CASEPILOT_HOME/bench/reliability-tiny."""
    home = Path(os.environ.get("CASEPILOT_HOME", REPO / ".casepilot")).resolve()
    out = home / "bench" / "reliability-tiny"
    if not (out / "tone" / "stage.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        build_tiny_models(out)
        meta = json.loads((out / "topic" / "stage.json").read_text())
        (out / "topic" / "stage.json").write_text(json.dumps({**meta, "threshold": 0.0}))
    return out


def layout(models: Path, work: Path) -> Path:
    """`champion` → models; `challenger/trigger` → a retuned copy; `corrupt/trigger` → garbage."""
    root = work / "models"
    (root / "challenger").mkdir(parents=True)
    (root / "champion").symlink_to(models.resolve())
    good = root / "versions" / "trigger-retuned"
    shutil.copytree(models / "trigger", good)
    meta = json.loads((good / "stage.json").read_text())
    (good / "stage.json").write_text(json.dumps({**meta, "threshold": 0.01}))
    corrupt = root / "versions" / "trigger-corrupt"
    shutil.copytree(good, corrupt)
    for weights in [*corrupt.rglob("*.safetensors"), *corrupt.rglob("*.bin")]:
        weights.write_bytes(b"\x00corrupt\xff" * 64)
    (root / "challenger" / "trigger").symlink_to(good)
    return root


def rows(work: Path, name: str, where: str = "1=1") -> list[dict]:
    engine = sa.create_engine(f"sqlite:///{log_path(work, name)}")
    try:
        with engine.connect() as conn:
            sql = f"SELECT request_id, case_id, shadow_status FROM predictions WHERE {where}"  # noqa: S608
            return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]
    finally:
        engine.dispose()


class Load:
    """Closed-loop clients with unique case ids; records every status and latency."""

    def __init__(self, url: str, concurrency: int, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.unlogged = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(concurrency)
        ]

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {"case_id": f"{self.prefix}-{n}-{i}", "message": MESSAGES[i % 6]}
                started = time.perf_counter()
                try:
                    response = client.post(f"{self.url}/suggest", json=body)
                except httpx.TransportError:
                    if self.stop.wait(0.2):
                        return
                    continue
                with self._lock:
                    self.statuses[response.status_code] = (
                        self.statuses.get(response.status_code, 0) + 1
                    )
                    if response.status_code == 200:
                        self.latencies.append((time.perf_counter() - started) * 1000)
                        self.acked.append(response.json()["request_id"])
                        self.unlogged += not response.json()["logged"]

    def run(self, seconds: float, during: callable | None = None) -> None:
        for thread in self.threads:
            thread.start()
        if during is not None:
            time.sleep(seconds / 2)
            during()
            time.sleep(seconds / 2)
        else:
            time.sleep(seconds)
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def p95(self) -> float:
        return float(np.percentile(self.latencies, 95)) if self.latencies else float("nan")

    def errors_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


def probe_load(work: Path, root: Path, seconds: float, concurrency: int, kill: bool) -> dict:
    name = "kill" if kill else "load"
    url, process = launch(work, root, name=name, params_yaml=PARAMS)
    try:
        load = Load(url, concurrency, name)

        load.run(seconds, (lambda: kill9(process)) if kill else None)
        if kill:
            missing = set(load.acked) - {r["request_id"] for r in rows(work, name)}
            pending = len(rows(work, name, "shadow_status = 'pending'"))
            started = time.monotonic()
            url, process = launch(work, root, name=name, params_yaml=PARAMS)
            restart_s = time.monotonic() - started
        else:
            httpx.post(f"{url}/admin/flush", json={"timeout_s": 300}, headers=ADMIN, timeout=320)
            missing = set(load.acked) - {r["request_id"] for r in rows(work, name)}
        logged = rows(work, name)
        shadow = {}
        for row in logged:
            shadow[row["shadow_status"]] = shadow.get(row["shadow_status"], 0) + 1
        result = {
            "acknowledged": len(load.acked),
            "logged_rows": len(logged),
            "acknowledged_not_logged": len(missing),
            "answered_logged_false": load.unlogged,
            "statuses": load.statuses,
            "shadow_status": shadow,
            "p95_ms": load.p95(),
        }
        if kill:
            result |= {"pending_at_kill": pending, "restart_s": restart_s}
        return result
    finally:
        stop_server(process)


def _answers(url: str, case: str, n: int) -> tuple[list[dict], list[float]]:
    out, latencies = [], []
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            started = time.perf_counter()
            body = {"case_id": f"{case}-{i}", "message": MESSAGES[i % 6]}
            response = client.post(f"{url}/suggest", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            suggestion = dict(response.json()["suggestion"]) if response.status_code == 200 else {}
            suggestion.pop("latency_ms", None)
            suggestion["scores"] = {k: round(v, 4) for k, v in suggestion.get("scores", {}).items()}
            out.append({"status": response.status_code, **suggestion})
    return out, latencies


def _flush(url: str) -> None:
    httpx.post(f"{url}/admin/flush", json={"timeout_s": 280}, headers=ADMIN, timeout=300)


def probe_faults(work: Path, root: Path, n: int) -> list[dict]:
    fault = work / "fault"
    fault.write_text("none")
    env = {"CASEPILOT_TEST_SHADOW_FAULT_FILE": str(fault)}
    url, process = launch(work, root, name="faults", params_yaml=PARAMS, env=env)
    results = []
    try:
        baseline, base_lat = _answers(url, "base", n)
        _flush(url)  # the baseline's shadow runs finish fault-free
        link = root / "challenger" / "trigger"
        for mode in ("crash", "hang", "slow", "corrupt"):
            if mode == "corrupt":
                link.unlink()
                link.symlink_to(root / "versions" / "trigger-corrupt")
                status = httpx.post(f"{url}/admin/reload", json={}, headers=ADMIN, timeout=120)
                reported = status.json().get("shadow_error")
            else:
                fault.write_text(mode)
                reported = None
            answers, latencies = _answers(url, mode, n)
            if mode in ("crash", "slow"):
                _flush(url)  # every shadow run of this round meets the fault
            fault.write_text("none")  # a hung shadow returns; its jobs finish as timeouts
            _flush(url)
            shadow = {}
            for row in rows(work, "faults", f"case_id LIKE '{mode}-%'"):
                shadow[row["shadow_status"]] = shadow.get(row["shadow_status"], 0) + 1
            results.append(
                {
                    "fault": "timeout (slow)" if mode == "slow" else mode,
                    "requests": n,
                    "identical_answers": sum(
                        a == b for a, b in zip(answers, baseline, strict=True)
                    ),
                    "shadow_status": shadow,
                    "challenger_error_reported": reported,
                    "p95_ms": float(np.percentile(latencies, 95)),
                    "p95_ratio": float(np.percentile(latencies, 95) / np.percentile(base_lat, 95)),
                }
            )
        link.unlink()
        link.symlink_to(root / "versions" / "trigger-retuned")
        return [
            {"fault": "none (baseline)", "p95_ms": float(np.percentile(base_lat, 95))},
            *results,
        ]
    finally:
        stop_server(process)


def _statuses(url: str, n: int = 5) -> list[int]:
    with httpx.Client(timeout=60) as client:
        return [
            client.post(
                f"{url}/suggest", json={"case_id": f"dep-{uuid.uuid4().hex[:8]}", "message": m}
            ).status_code
            for m in MESSAGES[:n]
        ]


def _reload(url: str) -> dict:
    response = httpx.post(f"{url}/admin/reload", json={"force": True}, headers=ADMIN, timeout=120)
    body = response.json()
    return {"status": response.status_code, "last_error": (body.get("last_error") or "")[:160]}


def probe_log_down(work: Path, root: Path, seconds: float, concurrency: int) -> dict:
    """The prediction log locked (BEGIN EXCLUSIVE) for a third of the load."""
    url, process = launch(work, root, name="deps-log", params_yaml=PARAMS)
    try:
        load = Load(url, concurrency, "logdown")

        def lock() -> None:
            engine = sa.create_engine(f"sqlite:///{log_path(work, 'deps-log')}")
            with engine.connect() as conn:
                conn.exec_driver_sql("BEGIN EXCLUSIVE")
                time.sleep(seconds / 3)
                conn.exec_driver_sql("ROLLBACK")
            engine.dispose()

        load.run(seconds, lock)
        httpx.post(f"{url}/admin/flush", json={"timeout_s": 300}, headers=ADMIN, timeout=320)
        missing = set(load.acked) - {r["request_id"] for r in rows(work, "deps-log")}
        return {
            "dependency": f"prediction log locked {seconds / 3:.0f} s mid-load",
            "statuses": load.statuses,
            "answered_logged_false": load.unlogged,
            "acknowledged_not_logged_after_recovery": len(missing),
            "after": _statuses(url),
            "p95_ms": load.p95(),
        }
    finally:
        stop_server(process)


def _registry_home(work: Path, models: Path, root: Path) -> Path:
    """An MLflow store in the server's home: every stage registered, champion + challenger."""
    from pipelines.config import params_from_mapping
    from pipelines.home import Home
    from pipelines.lineage import Lineage
    from pipelines.registry import bootstrap_champion, register_stage

    home = Home(work / "home-deps-mlflow").ensure()
    params = params_from_mapping({"register": {"gates": {}}}, home=home, env={})
    lineage = Lineage(data_version="bench", git_commit="bench", params_hash="b", base_model="tiny")
    for stage in ("trigger", "topic", "retrieve", "answer", "tone"):
        register_stage(params, stage, models / stage, metrics={}, lineage=lineage)
    bootstrap_champion(params, by="reliability-bench")
    trigger = root / "versions" / "trigger-retuned"
    register_stage(params, "trigger", trigger, metrics={}, lineage=lineage)
    return Path(params.mlflow_tracking_uri.removeprefix("sqlite:///"))


def probe_mlflow_down(work: Path, models: Path, root: Path) -> list[dict]:
    """Reloads with the MLflow store missing, then garbage, then restored."""
    store = _registry_home(work, models, root)
    url, process = launch(work, None, name="deps-mlflow", params_yaml=PARAMS)
    out = []
    try:
        saved = store.with_name("mlflow.db.saved")
        os.replace(store, saved)
        reload = _reload(url)
        out.append(
            {
                "dependency": "MLflow store missing at reload",
                "reload": reload,
                "suggest": _statuses(url),
                "store_recreated_empty": store.exists(),
            }
        )
        store.write_bytes(b"this is not a database" * 100)
        out.append(
            {
                "dependency": "MLflow store garbage",
                "reload": _reload(url),
                "suggest": _statuses(url),
            }
        )
        shutil.copy2(saved, store.with_name("restored.db"))
        os.replace(store.with_name("restored.db"), store)
        reload = _reload(url)
        status = httpx.post(f"{url}/admin/status", json={}, headers=ADMIN, timeout=60).json()
        out.append(
            {
                "dependency": "MLflow store restored (a new file)",
                "reload": reload,
                "suggest": _statuses(url),
                "store_replaced_reported": bool(status.get("store_replaced")),
            }
        )
        return out
    finally:
        stop_server(process)


def probe_qdrant_missing(work: Path, root: Path) -> list[dict]:
    """The embedded Qdrant folder removed, then a new retrieve version to load; then restored."""
    url, process = launch(work, root, name="deps-qdrant", params_yaml=PARAMS)
    qdrant = work / "home-deps-qdrant" / "qdrant"
    out = []
    try:
        moved = qdrant.with_name("qdrant.moved")
        os.replace(qdrant, moved)
        champion = root / "champion"
        fresh = root / "versions" / "champion-new-retrieve"
        fresh.mkdir(parents=True)
        for stage in ("trigger", "topic", "answer", "tone"):
            (fresh / stage).symlink_to(champion.resolve() / stage)
        shutil.copytree(champion.resolve() / "retrieve", fresh / "retrieve")
        meta = json.loads((fresh / "retrieve" / "stage.json").read_text())
        meta["collection"] = meta["collection"] + "-v2"
        (fresh / "retrieve" / "stage.json").write_text(json.dumps(meta))
        old = champion.resolve()
        champion.unlink()
        champion.symlink_to(fresh)
        out.append(
            {
                "dependency": "Qdrant folder missing, new retrieve version",
                "reload": _reload(url),
                "suggest": _statuses(url),
            }
        )
        if qdrant.exists():
            shutil.rmtree(qdrant)
        os.replace(moved, qdrant)
        out.append(
            {"dependency": "Qdrant folder back", "reload": _reload(url), "suggest": _statuses(url)}
        )
        champion.unlink()
        champion.symlink_to(old)
        return out
    finally:
        stop_server(process)


def probe_fuzz(work: Path, root: Path, examples: int) -> dict:
    """schemathesis over every route of /docs.json; 5 MB bodies; invalid UTF-8; health after."""
    url, process = launch(work, root, name="fuzz", params_yaml=PARAMS)
    try:
        schemathesis = Path(sys.executable).with_name("schemathesis")
        report = work / "fuzz-junit.xml"
        run = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{url}/docs.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(examples),
                "--header",
                f"X-API-Key: {BENCH_KEY}",
                "--report",
                "junit",
                "--report-junit-path",
                str(report),
                "--request-timeout",
                "60",
                "--seed",
                "1",
                "--generation-database",
                "none",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        raw = {}
        with httpx.Client(timeout=60) as client:
            for route in (
                "/suggest",
                "/feedback",
                "/admin/reload",
                "/admin/flush",
                "/admin/status",
            ):
                big = client.post(
                    f"{url}{route}",
                    content=b'{"message": "' + b"x" * 5_000_000 + b'"}',
                    headers={**ADMIN, "content-type": "application/json"},
                )
                utf8 = client.post(
                    f"{url}{route}",
                    content=b'{"case_id": "\xff\xfe", "message": "\xc3\x28"}',
                    headers={**ADMIN, "content-type": "application/json"},
                )
                raw[route] = [big.status_code, utf8.status_code]
            healthy = [client.get(f"{url}/{p}").status_code for p in ("livez", "readyz")]
        tail = run.stdout.strip().splitlines()[-80:]
        return {
            "schemathesis_exit": run.returncode,
            "schemathesis_summary": tail,
            "server_errors_in_summary": sum("not_a_server_error" in line for line in tail),
            "5MB_and_invalid_utf8": raw,
            "health_after": healthy,
            "process_alive": process.poll() is None,
        }
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load and kill probe length")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients (demo: 8)")
    parser.add_argument("--models", type=Path, help="DIR/<stage> models (default: tiny ones)")
    parser.add_argument("--fault-requests", type=int, default=60)
    parser.add_argument("--fuzz-examples", type=int, default=50)
    parser.add_argument("--only", default="load,kill,faults,deps,fuzz")
    args = parser.parse_args()
    models = args.models or tiny_models()
    probes = set(args.only.split(","))
    seconds = args.minutes * 60
    results: dict = {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "models": str(models),
    }
    with tempfile.TemporaryDirectory(prefix="casepilot-reliability-") as tmp:
        work = Path(tmp)
        root = layout(models, work)
        if "load" in probes:
            results["load"] = probe_load(work, root, seconds, args.concurrency, kill=False)
        if "kill" in probes:
            results["kill"] = probe_load(work, root, seconds, args.concurrency, kill=True)
        if "faults" in probes:
            results["faults"] = probe_faults(work, root, args.fault_requests)
        if "deps" in probes:
            results["deps"] = [
                probe_log_down(work, root, min(seconds, 60), args.concurrency),
                *probe_mlflow_down(work, models, root),
                *probe_qdrant_missing(work, root),
            ]
        if "fuzz" in probes:
            results["fuzz"] = probe_fuzz(work, root, args.fuzz_examples)
        print(json.dumps(results, indent=2, default=str))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = (
        "reliability.json"
        if probes == {"load", "kill", "faults", "deps", "fuzz"}
        else (f"reliability-{'-'.join(sorted(probes))}.json")
    )
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
