"""Reliability probes of the copilot service on loopback: what it survives, with figures (issue 13).

    .venv/bin/python benchmarks/reliability.py [--minutes 10] [--concurrency 8] [--models DIR]
        [--only load,kill,faults,deps,mlflow-server,qdrant-lock,fuzz]

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
- deps: the prediction log locked, the MLflow store missing or replaced by garbage at reload:
  5xx count, answers, and recovery once it is back.
- mlflow-server: registry mode through a real `mlflow server` on loopback, stopped before an
  `/admin/reload` (requests and status calls go on during it), then started again and reloaded.
- qdrant-lock: with the default in-memory index, a new retrieve version's build folder held by
  another process at reload; with `retrieve.qdrant_location` a folder, another process opening
  it while the service serves (and a reload), and the folder held when the service starts.
(A kill of a `retrain` run mid-training is benchmarks/retrain_resume.py: no service there.)
- fuzz: schemathesis over the OpenAPI of every route, plus 5 MB bodies and invalid UTF-8;
  5xx count and health after.

Writes `benchmarks/results/reliability.json` and prints the Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
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
from service_harness import (
    BENCH_KEY,
    build_tiny_models,
    kill9,
    launch,
    log_path,
    server_groups,
    stop_server,
    wait_ready,
)

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
PROBES = ("load", "kill", "faults", "deps", "mlflow-server", "qdrant-lock", "fuzz")
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


def _registry_home(work: Path, models: Path, root: Path, name: str = "deps-mlflow") -> Path:
    """An MLflow store in the server `name`'s home: every stage registered, champion +
    challenger."""
    from pipelines.config import params_from_mapping
    from pipelines.home import Home
    from pipelines.registry.lineage import Lineage
    from pipelines.registry.register import bootstrap_champion, register_stage

    home = Home(work / f"home-{name}").ensure()
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


def _reload_under_load(url: str) -> dict:
    """A forced reload in a thread while requests and status calls go on; what each saw."""
    outcome: dict = {}

    def reload() -> None:
        started = time.monotonic()
        try:
            outcome.update(_reload(url))
        except httpx.HTTPError as err:
            outcome["error"] = f"{type(err).__name__}: {err}"
        outcome["seconds"] = round(time.monotonic() - started, 1)

    thread = threading.Thread(target=reload, daemon=True)
    thread.start()
    statuses: dict[int, int] = {}
    latencies, status_calls = [], []
    with httpx.Client(timeout=60) as client:
        i = 0
        while thread.is_alive():
            i += 1
            started = time.perf_counter()
            body = {"case_id": f"mlflow-down-{uuid.uuid4().hex[:8]}", "message": MESSAGES[i % 6]}
            code = client.post(f"{url}/suggest", json=body).status_code
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[code] = statuses.get(code, 0) + 1
            if i % 10 == 1:
                started = time.perf_counter()
                status = client.post(f"{url}/admin/status", json={}, headers=ADMIN)
                status_calls.append(
                    {
                        "ms": round((time.perf_counter() - started) * 1000),
                        "status": status.status_code,
                        "last_error": (status.json().get("last_error") or "")[:120],
                    }
                )
            thread.join(0.5)
    return {
        "reload": outcome,
        "suggest_during_reload": statuses,
        "p95_ms_during_reload": float(np.percentile(latencies, 95)) if latencies else None,
        "status_calls_during_reload": status_calls[:3] + status_calls[-2:],
    }


def probe_mlflow_server_down(work: Path, models: Path, root: Path) -> list[dict]:
    """Registry mode through a real `mlflow server` on loopback: stopped at reload, restarted."""
    from flows.platform.services import free_port, start_mlflow_server, stop_mlflow_server
    from pipelines.config import params_from_mapping
    from pipelines.home import Home

    name = "deps-mlflow-server"
    _registry_home(work, models, root, name)
    server = params_from_mapping({}, home=Home(work / f"home-{name}"), env={})
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    start_mlflow_server(server, port=port)
    out = []
    process = None
    try:
        env = {"CASEPILOT_MLFLOW_TRACKING_URI": tracking}
        url, process = launch(work, None, name=name, params_yaml=PARAMS, env=env)
        _answers(url, "mlflow-warmup", 5)
        _, base_lat = _answers(url, "mlflow-up", 20)
        base_p95 = float(np.percentile(base_lat, 95))
        stop_mlflow_server(server)
        down = _reload_under_load(url)
        status = httpx.post(f"{url}/admin/status", json={}, headers=ADMIN, timeout=60).json()
        out.append(
            {
                "dependency": "mlflow server stopped, then /admin/reload",
                **down,
                "p95_ms_before": base_p95,
                "status_after": {
                    "last_error": (status.get("last_error") or "")[:200],
                    "champion": status.get("champion"),
                },
                "suggest_after": _statuses(url),
            }
        )
        start_mlflow_server(server, port=port)
        reload = _reload(url)
        status = httpx.post(f"{url}/admin/status", json={}, headers=ADMIN, timeout=60).json()
        out.append(
            {
                "dependency": "mlflow server started again, /admin/reload",
                "reload": reload,
                "status_last_error": status.get("last_error"),
                "suggest": _statuses(url),
            }
        )
        return out
    finally:
        if process is not None:
            stop_server(process)
        stop_mlflow_server(server)


QDRANT_HOLDER = """
import sys, time
from qdrant_client import QdrantClient
try:
    client = QdrantClient(path=sys.argv[1])
except Exception as err:
    print("REFUSED", type(err).__name__, str(err)[:200], flush=True)
    sys.exit(3)
print("HOLDING", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold_qdrant(folder: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    """Another process opening the embedded Qdrant folder; (process, its first line)."""
    process = subprocess.Popen(
        [sys.executable, "-c", QDRANT_HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _release(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def _qdrant_files(process: subprocess.Popen) -> list[str]:
    """Open files of the server's processes under any Qdrant folder (its lock, its storage)."""
    found = set()
    for group in server_groups(process.pid):
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                if os.getpgid(int(pid)) != group:
                    continue
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.endswith((".lock", "storage.sqlite")) or "/collection/" in target:
                        found.add(target)
    return sorted(found)


def _new_retrieve_version(root: Path) -> Path:
    """Point `champion` at a copy whose retrieve stage has a new collection name (a new version)
    built at a folder of its own (`location` in its stage.json); returns that folder."""
    champion = root / "champion"
    fresh = root / "versions" / f"champion-retrieve-{uuid.uuid4().hex[:6]}"
    fresh.mkdir(parents=True)
    for stage in ("trigger", "topic", "answer", "tone"):
        (fresh / stage).symlink_to(champion.resolve() / stage)
    shutil.copytree(champion.resolve() / "retrieve", fresh / "retrieve")
    meta = json.loads((fresh / "retrieve" / "stage.json").read_text())
    meta["collection"] = meta["collection"] + "-" + fresh.name[-6:]
    meta["location"] = str(fresh / "qdrant-build")
    (fresh / "retrieve" / "stage.json").write_text(json.dumps(meta))
    champion.unlink()
    champion.symlink_to(fresh)
    return fresh / "qdrant-build"


def _status(url: str) -> dict:
    try:
        body = httpx.post(f"{url}/admin/status", json={}, headers=ADMIN, timeout=30).json()
    except (httpx.HTTPError, ValueError) as err:
        return {"error": f"{type(err).__name__}: {err}"[:160]}
    return {"last_error": (body.get("last_error") or "")[:400], "champion": body.get("champion")}


def probe_qdrant_locked(work: Path, models: Path) -> list[dict]:
    """The default (in-memory index) holds no Qdrant folder; a configured folder is locked by
    whoever opened it first: another process at the service's reload, and at its start."""
    from pipelines.config import params_from_mapping

    out = []
    root = layout(models, work / "qdrant-lock")
    url, process = launch(work, root, name="qdrant-default", params_yaml=PARAMS)
    try:
        built_at = _new_retrieve_version(root)  # the folder its stage.json says it was built in
        holder, line = _hold_qdrant(built_at, 600)
        try:
            out.append(
                {
                    "dependency": "default retrieve.qdrant_location (null): the new retrieve "
                    "version's build folder held by another process at /admin/reload",
                    "qdrant_location": params_from_mapping({}, env={}).qdrant_location,
                    "holder": line,
                    "reload": _reload(url),
                    "suggest": _statuses(url),
                    "service_open_qdrant_storage_files": _qdrant_files(process),
                }
            )
        finally:
            _release(holder)
    finally:
        stop_server(process)
    folder = work / "qdrant-folder"
    env = {"CASEPILOT_QDRANT_LOCATION": str(folder)}
    url, process = launch(work, root, name="qdrant-folder", params_yaml=PARAMS, env=env)
    try:
        holder, line = _hold_qdrant(folder, 5)  # e.g. a retrain's train/evaluate_retrieve
        _release(holder)
        _new_retrieve_version(root)
        out.append(
            {
                "dependency": "retrieve.qdrant_location = a folder; another process opens it, "
                "then /admin/reload of a new retrieve version",
                "service_open_qdrant_files": len(_qdrant_files(process)),
                "other_process": line,
                "reload": _reload(url),
                "suggest": _statuses(url),
            }
        )
    finally:
        stop_server(process)
    holder, line = _hold_qdrant(folder, 600)  # the folder held when the service starts
    url, process = launch(work, root, name="qdrant-folder", params_yaml=PARAMS, env=env, wait=False)
    try:
        started = time.monotonic()
        while not _status(url).get("last_error") and time.monotonic() - started < 240:
            time.sleep(2)
        reported_s = round(time.monotonic() - started, 1)
        with httpx.Client(timeout=30) as client:
            ready = [client.get(f"{url}/readyz").status_code for _ in range(3)]
            suggest = _statuses(url, 2)
        locked = {"error_reported_after_s": reported_s, "readyz": ready, "suggest": suggest}
        locked["status"] = _status(url)
        _release(holder)
        released = time.monotonic()
        recovered = wait_ready(url, process, 120)
        out.append(
            {
                "dependency": "folder held by another process when the service (re)starts",
                "holder": line,
                "while_held": locked,
                "ready_after_release_s": round(time.monotonic() - released, 1)
                if recovered
                else None,
                "suggest_after": _statuses(url),
                "status_after": _status(url),
            }
        )
        return out
    finally:
        _release(holder)
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
    parser.add_argument("--only", default=",".join(PROBES))
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
            ]
        if "mlflow-server" in probes:
            results["mlflow_server"] = probe_mlflow_server_down(work, models, root)
        if "qdrant-lock" in probes:
            results["qdrant_lock"] = probe_qdrant_locked(work, models)
        if "fuzz" in probes:
            results["fuzz"] = probe_fuzz(work, root, args.fuzz_examples)
        print(json.dumps(results, indent=2, default=str))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = (
        "reliability.json"
        if probes == set(PROBES)
        else (f"reliability-{'-'.join(sorted(probes))}.json")
    )
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
