"""The service under faults, as a real `bentoml serve` on 127.0.0.1 with tiny trained models.

Issue 13's done-when tests: a corrupt challenger leaves the champion serving (200s) and the
challenger's error is reported; `kill -9` of the server's process group during bounded load
loses no request that was answered with 200. Also: the prediction log down (locked) answers
with `logged: false` and recovers, strict `/feedback`, no raw input in the server log, bounded
metric labels, a JSON index at `/`, and `casepilot serve` stopping its server on SIGTERM.

One server per module, started with a corrupt challenger; tests run in file order (the kill
test is last and restarts the server on the same log).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.test_service import MESSAGES, models_root  # noqa: F401 - the module's tiny models

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from service_harness import (  # noqa: E402
    BENCH_KEY,
    free_port,
    kill9,
    launch,
    log_path,
    server_groups,
    stop_server,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CARD = "4111 1111 1111 1111"
NAME = "reliability"
PARAMS = (
    "serve:\n  shadow_timeout_s: 5.0\n  reload_poll_s: 3600\n  max_batch_size: 8\n"
    "  log_commit_timeout_s: 0.5\n"
)
ADMIN = {"X-API-Key": BENCH_KEY}


class Service:
    def __init__(self, work: Path, root: Path) -> None:
        self.work, self.root = work, root
        self.url, self.process = launch(work, root, name=NAME, params_yaml=PARAMS)

    @property
    def log_text(self) -> str:
        return (self.work / f"server-{NAME}.log").read_text(errors="replace")

    def rows(self, where: str = "1=1") -> list[dict]:
        engine = sa.create_engine(f"sqlite:///{log_path(self.work, NAME)}")
        try:
            with engine.connect() as conn:
                query = f"SELECT * FROM predictions WHERE {where}"  # noqa: S608 - test literals
                return [dict(r) for r in conn.execute(sa.text(query)).mappings()]
        finally:
            engine.dispose()

    def admin(self, route: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}/admin/{route}", json=body or {}, headers=ADMIN, timeout=120)


@pytest.fixture(scope="module")
def service(models_root: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """Champion v1; challenger: v2's trigger with its weights file overwritten by garbage."""
    work = tmp_path_factory.mktemp("reliability")
    root = work / "models"
    (root / "challenger").mkdir(parents=True)
    (root / "champion").symlink_to(models_root / "v1")
    corrupt = root / "challenger-corrupt" / "trigger"
    shutil.copytree(models_root / "v2" / "trigger", corrupt)
    for weights in [*corrupt.rglob("*.safetensors"), *corrupt.rglob("*.bin")]:
        weights.write_bytes(b"\x00not a model\xff" * 64)
    (root / "challenger" / "trigger").symlink_to(corrupt)
    svc = Service(work, root)
    svc.models = models_root
    try:
        yield svc
    finally:
        stop_server(svc.process)


def _suggest(url: str, case_id: str, message: str = MESSAGES[0], **kw) -> httpx.Response:
    return httpx.post(f"{url}/suggest", json={"case_id": case_id, "message": message}, **kw)


def test_corrupt_challenger_leaves_the_champion_serving_and_is_reported(service) -> None:
    answers = [_suggest(service.url, f"cc-{i}", m, timeout=60) for i, m in enumerate(MESSAGES)]
    assert [r.status_code for r in answers] == [200] * len(MESSAGES)
    assert all(r.json()["logged"] is True for r in answers)
    status = service.admin("status").json()
    assert status["shadow"] is None and status["champion"]["trigger"]
    assert "challenger 'challenger' failed to load" in status["shadow_error"]
    assert "trigger" in status["shadow_error"]
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'casepilot_model_reloads_total{result="challenger_failed"}' in metrics
    assert "failed to load" in service.log_text and "serving the champion without a shadow" in (
        service.log_text
    )
    # the challenger is replaced by a good one: a reload shadows it, the error clears
    link = service.root / "challenger" / "trigger"
    link.unlink()
    link.symlink_to(service.models / "v2" / "trigger")
    reload = service.admin("reload").json()
    assert reload["reloaded"] is True and reload["shadow_error"] is None
    assert reload["shadow"]["trigger"] != reload["champion"]["trigger"]


def test_index_page_is_json_and_unknown_paths_do_not_grow_metrics(service) -> None:
    index = httpx.get(f"{service.url}/")
    assert index.status_code == 200 and index.json()["service"] == "casepilot-copilot"
    assert "googletagmanager" not in index.text
    assert httpx.get(f"{service.url}/static_content/index.css").status_code == 404
    multipart = httpx.post(  # no boundary: BentoML answered this with a 500 (schemathesis ST102)
        f"{service.url}/suggest", content=b"{}", headers={"content-type": "multipart/form-data"}
    )
    assert multipart.status_code == 415 and "application/json" in multipart.json()["error"]
    before = len(httpx.get(f"{service.url}/metrics").text)
    with httpx.Client() as client:
        for _ in range(300):
            assert client.get(f"{service.url}/{uuid.uuid4().hex}").status_code == 404
    after = httpx.get(f"{service.url}/metrics").text
    assert 'endpoint="<other>"' in after
    assert len(after) - before < 20_000, (before, len(after))  # was ~1.2 MB for 300 paths


def test_rejected_input_is_logged_as_one_warning_without_the_input(service) -> None:
    lines_before = service.log_text.count("\n")
    bad = httpx.post(
        f"{service.url}/suggest", json={"case_id": "x", "message": [f"my card is {CARD}"]}
    )
    assert bad.status_code == 400 and CARD not in bad.text
    deadline = time.monotonic() + 10
    while "rejected request to /suggest" not in service.log_text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    new = service.log_text.splitlines()[lines_before:]
    assert not any(CARD in line or CARD.replace(" ", "") in line for line in new)
    assert not any("Traceback" in line or "input_value" in line for line in new)
    assert any("WARNING" in line and "rejected request to /suggest" in line for line in new)


def test_feedback_is_strict(service) -> None:
    email_case = "jane.doe@example.com"
    assert _suggest(service.url, "fb-1", timeout=60).status_code == 200
    assert _suggest(service.url, email_case, timeout=60).status_code == 200

    def feedback(case_id: str, used: object, reply: str = "sent it") -> httpx.Response:
        body = {"case_id": case_id, "sent_reply": reply, "used_suggestion": used}
        return httpx.post(f"{service.url}/feedback", json=body, headers=ADMIN, timeout=60)

    first = feedback("fb-1", True)
    assert first.status_code == 200 and first.json()["stored"] is True
    again = feedback("fb-1", True)
    assert again.status_code == 200 and again.json()["stored"] is False  # idempotent retry
    other = feedback("fb-1", False)
    assert other.status_code == 409 and "already has different feedback" in other.json()["error"]
    unknown = feedback("never-suggested", True)
    assert unknown.status_code == 404 and "unknown case_id" in unknown.json()["error"]
    yes = feedback("fb-1", "yes")
    assert yes.status_code == 400 and "boolean" in yes.text
    assert feedback(email_case, True).status_code == 200
    assert not service.rows(f"case_id = '{email_case}'")
    assert service.rows("case_id LIKE 'pii-sha256:%'")


def test_log_down_answers_with_logged_false_and_recovers(service) -> None:
    engine = sa.create_engine(f"sqlite:///{log_path(service.work, NAME)}")
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")  # the log is down for writers
        try:
            down = _suggest(service.url, "down-1", timeout=60)
        finally:
            conn.exec_driver_sql("ROLLBACK")
    engine.dispose()
    assert down.status_code == 200 and down.json()["logged"] is False
    assert down.json()["suggestion"]["versions"]  # the champion answered
    assert service.admin("flush").json()["flushed"]
    (row,) = service.rows("case_id = 'down-1'")  # landed once the log was back
    assert row["request_id"] == down.json()["request_id"]
    up = _suggest(service.url, "down-2", timeout=60)
    assert up.status_code == 200 and up.json()["logged"] is True
    assert (
        'casepilot_unlogged_responses_total{reason="commit_timeout"}'
        in httpx.get(f"{service.url}/metrics").text
    )


def _load(url: str, stop: threading.Event, acked: list[str], prefix: str) -> None:
    with httpx.Client(timeout=30) as client:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                body = {"case_id": f"{prefix}-{i}", "message": MESSAGES[i % len(MESSAGES)]}
                response = client.post(f"{url}/suggest", json=body)
            except httpx.TransportError:
                return  # the server is gone
            if response.status_code == 200:
                acked.append(response.json()["request_id"])


def test_kill_9_during_load_loses_no_acknowledged_request(service) -> None:
    """Bounded load (<= 20 s, 4 clients); SIGKILL of the whole process group mid-load."""
    stop, acked = threading.Event(), []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_load, service.url, stop, acked, f"kill{t}") for t in range(4)]
        deadline = time.monotonic() + 20
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        groups = kill9(service.process)  # every group at once: the worker runs in its own
        stop.set()
        for future in futures:
            future.result(timeout=60)
    assert len(groups) >= 2, groups  # the arbiter's group and the worker's
    assert len(acked) >= 20, f"only {len(acked)} answered before the kill"
    logged = {r["request_id"]: r for r in service.rows("case_id LIKE 'kill%'")}
    missing = set(acked) - set(logged)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests not in the log"
    pending = [r for r in logged.values() if r["shadow_status"] == "pending"]
    # restart on the same log: rows whose shadow never ran say so
    service.url, service.process = launch(service.work, service.root, name=NAME, params_yaml=PARAMS)
    after = {r["request_id"]: r for r in service.rows("case_id LIKE 'kill%'")}
    assert not [r for r in after.values() if r["shadow_status"] == "pending"]
    lost = [r for r in after.values() if r["shadow_status"] == "lost"]
    assert len(lost) == len(pending)
    assert all(r["shadow_error"].startswith("shadow_lost: service restarted") for r in lost)
    assert all(r["shadow"] is None for r in lost)


def test_a_worker_orphaned_by_a_killed_arbiter_exits(service) -> None:
    """kill -9 of the arbiter's group only: the worker (its own group) must not live on."""
    assert _suggest(service.url, "orphan-1", timeout=60).status_code == 200
    groups = server_groups(service.process.pid) - {service.process.pid}
    assert groups, "the worker should run in a process group of its own"
    os.killpg(service.process.pid, signal.SIGKILL)
    service.process.wait(30)
    deadline = time.monotonic() + 30
    while any(_group_alive(g) for g in groups):
        assert time.monotonic() < deadline, "orphaned worker still running 30 s after"
        time.sleep(0.2)
    assert service.rows("case_id = 'orphan-1'")


def test_casepilot_serve_stops_its_server_on_sigterm(models_root, tmp_path) -> None:  # noqa: F811
    """SIGTERM to `casepilot serve`'s own PID stops `bentoml serve` and all its processes."""
    port = free_port()
    (tmp_path / "params.yaml").write_text("serve:\n  reload_poll_s: 3600\n")
    env = {
        **os.environ,
        "CASEPILOT_HOME": str(tmp_path / "home"),
        "CASEPILOT_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "HF_HUB_OFFLINE": "1",
    }
    cli = Path(sys.executable).with_name("casepilot")
    process = subprocess.Popen(
        [
            str(cli),
            "serve",
            "--port",
            str(port),
            "--models-dir",
            str(models_root),
            "--params",
            str(tmp_path / "params.yaml"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        group = _children_group(process.pid)
        assert group and group != os.getpgid(process.pid)  # the server runs in its own group
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 128 + signal.SIGTERM or process.returncode == 0
        deadline = time.monotonic() + 30
        while _group_alive(group):
            assert time.monotonic() < deadline, "bentoml serve still running after SIGTERM"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()


def _proc_stat(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _children_group(parent: int) -> int | None:
    """The process group of `parent`'s first child."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = _proc_stat(pid)
        if stat and int(stat[1]) == parent:
            return int(stat[2])
    return None


def _group_alive(group: int) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = _proc_stat(pid)
        if stat and int(stat[2]) == group and stat[0] != "Z":
            return True
    return False
