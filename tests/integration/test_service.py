"""The copilot service as a real `bentoml serve` process on 127.0.0.1 with tiny trained models.

One server per module. Its models are real stages trained for a few steps on a tiny synthetic
world (built once and cached by a hash of the stage code); the challenger is the champion with
a retuned trigger threshold. Shadow failures are injected through the service's test hook
(`CASEPILOT_TEST_SHADOW_FAULT_FILE`), which is off unless that variable is set.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.data.contract import STAGES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from service_harness import build_tiny_models, lost_port_race, popen_serve  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
MESSAGES = [
    "my payout has not arrived yet, where is it?",
    "how do I refund a customer",
    "thanks, have a nice day",
    "why was my card declined at the shop",
    "can I change the email on my account? it is jane.doe@example.com",
]


def _set_threshold(stage_dir: Path, threshold: float) -> None:
    meta = json.loads((stage_dir / "stage.json").read_text())
    (stage_dir / "stage.json").write_text(json.dumps({**meta, "threshold": threshold}))


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`champion` → v1 (all stages); `challenger` → a retuned trigger; `v2`: champion with it."""
    # keyed by the code the models are built and loaded with, so a change rebuilds them
    sources = [
        *(REPO / "pipelines" / "stages").rglob("*.py"),
        *(REPO / "pipelines" / "data" / "synth").glob("*"),
        *(REPO / "pipelines" / "config").glob("*.py"),
        REPO / "pipelines" / "data" / "contract.py",
    ]
    code = b"".join(p.read_bytes() for p in sorted(sources) if p.is_file())
    recipe = inspect.getsource(build_tiny_models).encode()
    digest = hashlib.sha256(code + recipe).hexdigest()[:12]
    cache = Path(os.environ["CASEPILOT_HOME"]) / "cache" / f"service-test-models-{digest}"
    if not (cache / "tone" / "stage.json").exists():
        partial = cache.with_name(cache.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        build_tiny_models(partial)
        shutil.rmtree(cache, ignore_errors=True)
        partial.rename(cache)
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(cache, root / "v1", ignore=shutil.ignore_patterns("base", "qdrant-build"))
    # The tiny topic model is near uniform: a threshold of 0 keeps its decisions off the edge.
    _set_threshold(root / "v1" / "topic", 0.0)
    (root / "v2").mkdir()
    for stage in STAGES:
        (root / "v2" / stage).symlink_to(root / "v1" / stage)
    (root / "v2" / "trigger").unlink()
    shutil.copytree(root / "v1" / "trigger", root / "v2" / "trigger")
    _set_threshold(root / "v2" / "trigger", 0.01)  # lets nearly every message through
    (root / "champion").symlink_to(root / "v1")
    (root / "challenger").mkdir()
    (root / "challenger" / "trigger").symlink_to(root / "v2" / "trigger")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(
        self, url: str, process: subprocess.Popen, log_url: str, fault: Path, root: Path
    ) -> None:
        self.url, self.process, self.log_url, self.fault, self.root = (
            url,
            process,
            log_url,
            fault,
            root,
        )
        self.sent = 0  # /suggest requests answered, for the shutdown flush check
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.sent += 1

    def suggest(self, client: httpx.Client, message: str, case_id: str = "c", **extra):
        response = client.post(
            f"{self.url}/suggest", json={"case_id": case_id, "message": message, **extra}
        )
        if response.status_code == 200:
            self.count()
        return response

    def admin(self, client: httpx.Client, route: str, payload: dict | None = None):
        return client.post(
            f"{self.url}/admin/{route}",
            json=payload or {},
            headers={"X-API-Key": API_KEY},
            timeout=120,
        )

    def set_fault(self, mode: str) -> None:
        self.fault.write_text(mode)


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("server")
    (work / "params.yaml").write_text(
        "serve:\n  shadow_timeout_s: 3.0\n  reload_poll_s: 3600\n  max_batch_size: 8\n"
        "  max_request_bytes: 4096\n"
    )
    log_url = f"sqlite:///{work / 'predictions.db'}"
    fault = work / "fault"
    fault.write_text("none")
    port = _free_port()
    env = {
        **os.environ,
        "CASEPILOT_HOME": str(work / "home"),
        "HF_HUB_OFFLINE": "1",
        "CASEPILOT_PARAMS": str(work / "params.yaml"),
        "CASEPILOT_MODELS_DIR": str(models_root),
        "CASEPILOT_PREDICTION_LOG_URL": log_url,
        "CASEPILOT_API_KEY": API_KEY,
        "BENTOML_HOME": str(work / "bentoml"),
        "CASEPILOT_TEST_SHADOW_FAULT_FILE": str(fault),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    log = work / "server.log"
    url = f"http://127.0.0.1:{port}"
    process = popen_serve(port, env, log)
    deadline = time.monotonic() + 180
    while_loading: list[tuple[int, int, str]] = []  # (readyz, suggest status, suggest body)
    restarts = 0  # after BentoML's own port race only (service_harness.lost_port_race)
    try:
        with httpx.Client(timeout=5) as client:
            while True:
                if process.poll() is not None:
                    if restarts < 2 and lost_port_race(log):
                        restarts += 1
                        log.write_bytes(b"")
                        process = popen_serve(port, env, log)
                        continue
                    pytest.fail(f"server exited: {log.read_text()[-3000:]}")
                try:
                    ready = client.get(f"{url}/readyz").status_code
                    if ready == 200:
                        break
                    early = client.post(f"{url}/suggest", json={"case_id": "c", "message": "hi"})
                    while_loading.append((ready, early.status_code, early.text))
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"not ready in 180 s: {log.read_text()[-3000:]}")
                time.sleep(0.5)
        server = Server(url, process, log_url, fault, models_root)
        server.while_loading = while_loading
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def client():
    with httpx.Client(timeout=60) as c:
        yield c


def _rows(server: Server):
    from monitoring.log.store import PredictionLog

    log = PredictionLog.from_url(server.log_url)
    try:
        return log.window()
    finally:
        log.close()


def _strip(body: dict) -> dict:
    """The suggestion without its latency, scores rounded (batch padding moves the last digits)."""
    suggestion = dict(body["suggestion"])
    suggestion.pop("latency_ms")
    suggestion["scores"] = {k: round(v, 4) for k, v in suggestion["scores"].items()}
    return suggestion


def test_health_readiness_and_metrics(server: Server, client: httpx.Client) -> None:
    assert client.get(f"{server.url}/livez").status_code == 200
    assert client.get(f"{server.url}/readyz").status_code == 200
    # before the models were loaded: live, not ready, and /suggest said why
    seen = server.while_loading
    assert all(ready == 503 and status in (200, 503) for ready, status, _ in seen)  # 200: loaded
    assert any(status == 503 and "models are still loading" in body for _, status, body in seen)
    metrics = client.get(f"{server.url}/metrics").text
    assert 'casepilot_model_reloads_total{result="initial"} 1.0' in metrics
    from bentos.service import CopilotService

    assert str(CopilotService.config["http"]["host"]) == "127.0.0.1"  # loopback by default


def test_suggest_and_feedback_round_trip_into_the_log(server: Server, client) -> None:
    bodies = []
    for i, message in enumerate(MESSAGES):
        response = server.suggest(
            client,
            message,
            f"rt-{i}",
            context=[{"role": "agent", "text": "hello, how can I help?"}],
        )
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    for body in bodies:
        suggestion = body["suggestion"]
        assert body["abstained"] == (suggestion["text"] is None)
        assert suggestion["text"] or suggestion["abstain_reason"].startswith(
            f"{suggestion['stopped_at']}:"
        )
        assert set(suggestion["versions"]) == set(STAGES) and "trigger" in suggestion["scores"]
        assert body["latency_ms"] > 0
    feedback = client.post(
        f"{server.url}/feedback",
        headers={"X-API-Key": API_KEY},
        json={
            "case_id": "rt-0",
            "sent_reply": "Hi Jane Doe, it lands tomorrow. Write to jane.doe@example.com",
            "used_suggestion": False,
        },
    )
    assert feedback.status_code == 200 and feedback.json()["stored"] is True
    flushed = server.admin(client, "flush").json()
    assert flushed["flushed"] and flushed["shadow"]["done"] == flushed["shadow"]["submitted"]
    batches = flushed["batches"]  # every champion request went through the micro-batcher
    assert batches["items"] >= len(MESSAGES) and 1 <= batches["largest"] <= batches["items"]
    assert batches["batches"] <= batches["items"]

    rows = _rows(server).set_index("request_id")
    for i, body in enumerate(bodies):
        row = rows.loc[body["request_id"]]
        assert row["case_id"] == f"rt-{i}" and row["champion_text"] == body["suggestion"]["text"]
        assert row["versions"] == body["suggestion"]["versions"]
        assert row["shadow"]["versions"]["trigger"] != row["versions"]["trigger"]  # challenger
        assert row["shadow_error"] is None and row["latency_ms"] == pytest.approx(
            body["latency_ms"]
        )
    email_row = rows.loc[bodies[4]["request_id"]]
    assert "jane.doe@example.com" not in email_row["message"] and "<EMAIL>" in email_row["message"]
    fed = rows.loc[bodies[0]["request_id"]]
    assert fed["used_suggestion"] == False  # noqa: E712 - a numpy bool
    assert "Jane Doe" not in fed["sent_reply"] and "<EMAIL>" in fed["sent_reply"]


@pytest.mark.parametrize("mode", ["crash", "hang", "slow"])
def test_failing_challenger_leaves_champion_responses_unchanged(server, client, mode) -> None:
    server.set_fault("none")
    baseline = [_strip(server.suggest(client, m).json()) for m in MESSAGES]
    server.set_fault(mode)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(
                pool.map(lambda m: server.suggest(client, m, f"fault-{mode}"), MESSAGES * 2)
            )
        assert [r.status_code for r in responses] == [200] * len(responses)
        assert [_strip(r.json()) for r in responses] == baseline * 2
        # the champion never waits for the shadow (timeout 3 s, hang = forever)
        assert max(r.json()["latency_ms"] for r in responses) < 3000
        # keep the fault until the shadow has run (and failed on) every one of them
        assert server.admin(client, "flush").json()["flushed"]
    finally:
        server.set_fault("none")
    rows = _rows(server)
    errors = rows[rows["case_id"] == f"fault-{mode}"]["shadow_error"].tolist()
    expected = "injected shadow crash" if mode == "crash" else "shadow "
    assert len(errors) == len(responses) and all(expected in (e or "") for e in errors)
    metrics = client.get(f"{server.url}/metrics").text
    kind = "error" if mode == "crash" else "timeout"
    assert f'casepilot_shadow_failures_total{{kind="{kind}"}}' in metrics


def test_api_key_is_required_for_feedback_and_admin(server: Server, client) -> None:
    payload = {"case_id": "k", "sent_reply": "ok", "used_suggestion": True}
    for route, body in (("/feedback", payload), ("/admin/reload", {})):
        missing = client.post(f"{server.url}{route}", json=body)
        wrong = client.post(f"{server.url}{route}", json=body, headers={"X-API-Key": "nope"})
        bearer = client.post(
            f"{server.url}{route}", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]
        assert wrong.status_code == 403 and wrong.json() == {"error": "wrong API key"}
        # past the key check: /feedback then answers 404 for this never-suggested case
        assert bearer.status_code == (404 if route == "/feedback" else 200), bearer.text


def test_oversized_and_malformed_requests_get_clear_4xx(server: Server, client) -> None:
    big = server.suggest(client, "x" * 5000)
    assert big.status_code == 413 and "max_request_bytes" in big.json()["error"]
    bad_json = client.post(
        f"{server.url}/suggest", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= bad_json.status_code < 500
    wrong = client.post(f"{server.url}/suggest", json={"case_id": "", "message": 3})
    assert wrong.status_code == 400
    assert {tuple(d["loc"]) for d in wrong.json()["detail"]} == {("case_id",), ("message",)}
    bad_turn = server.suggest(client, "hi", context=[{"role": "bot", "text": "x"}])
    assert bad_turn.status_code == 400 and "role" in bad_turn.text


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TURNS = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["customer", "agent", "x"]), "text": st.text(max_size=60)}
    ),
    max_size=3,
)
SUGGEST_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "case_id": st.text(max_size=30) | JSON_VALUES,
        "message": st.text(max_size=200) | JSON_VALUES,
        "context": TURNS | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
FEEDBACK_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "case_id": st.text(max_size=30) | JSON_VALUES,
        "sent_reply": st.text(max_size=200) | JSON_VALUES,
        "used_suggestion": st.booleans() | JSON_VALUES,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(["/suggest", "/feedback"]), data=st.data())
def test_schema_fuzzing_yields_no_5xx(server: Server, route: str, data) -> None:
    body = data.draw(SUGGEST_BODIES if route == "/suggest" else FEEDBACK_BODIES)
    with httpx.Client(timeout=60) as client:
        response = client.post(f"{server.url}{route}", json=body, headers={"X-API-Key": API_KEY})
    assert response.status_code < 500, (body, response.text)
    if response.status_code == 200 and route == "/suggest":
        server.count()


def _point(link: Path, target: Path) -> None:
    """Move an alias: replace the symlink atomically."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_reload_during_load_drops_nothing(server: Server, client) -> None:
    old = server.suggest(client, MESSAGES[0]).json()["suggestion"]["versions"]["trigger"]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(server.suggest, client, MESSAGES[i % 5], f"reload-{i}") for i in range(60)
        ]
        _point(server.root / "champion", server.root / "v2")
        reload = server.admin(client, "reload")
        responses = [f.result() for f in futures]
    assert reload.status_code == 200 and reload.json()["reloaded"] is True
    new = reload.json()["champion"]["trigger"]
    assert new != old and reload.json()["shadow"] is None  # challenger == new champion
    assert [r.status_code for r in responses] == [200] * 60
    seen = {r.json()["suggestion"]["versions"]["trigger"] for r in responses}
    assert seen <= {old, new}
    after = server.suggest(client, MESSAGES[0]).json()["suggestion"]["versions"]["trigger"]
    assert after == new
    _point(server.root / "champion", server.root / "v1")
    assert server.admin(client, "reload").json()["champion"]["trigger"] == old


def test_graceful_shutdown_writes_every_record(server: Server, client) -> None:
    """Last in the module: stops the server with records still waiting on a hung shadow."""
    server.set_fault("hang")
    for i in range(4):
        assert server.suggest(client, MESSAGES[i], f"shutdown-{i}").status_code == 200
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(90)
    server.set_fault("none")
    rows = _rows(server)
    assert len(rows) == server.sent and rows["request_id"].is_unique
    assert len(rows[rows["case_id"].str.startswith("shutdown-")]) == 4


def test_registry_aliases_moving_swap_the_models(models_root: Path, tmp_path: Path) -> None:
    """The main path: stage versions by MLflow alias; promotion moves them, a check swaps.

    An alias moved to an unapproved version is refused by the registry, and the service keeps
    serving the models it has.
    """
    from bentos.reload import Reloader, StageCache
    from bentos.sources import RegistrySource
    from pipelines.config import params_from_mapping
    from pipelines.home import Home
    from pipelines.registry.approval import approve_version, request_promotion
    from pipelines.registry.lineage import Lineage
    from pipelines.registry.register import (
        bootstrap_champion,
        load_stage_folder,
        promote_challenger,
        register_stage,
        registry_client,
    )
    from tests.integration.test_registry import winning_decision

    home = Home(tmp_path / "home").ensure()
    params = params_from_mapping({"register": {"gates": {}}}, home=home, env={})
    lineage = Lineage(
        data_version="md5-test", git_commit="test", params_hash="test", base_model="tiny"
    )
    for stage in STAGES:
        register_stage(params, stage, models_root / "v1" / stage, metrics={}, lineage=lineage)
    bootstrap_champion(params, by="test")
    register_stage(params, "trigger", models_root / "v2" / "trigger", metrics={}, lineage=lineage)

    cache = StageCache(
        lambda stage, folder: load_stage_folder(
            stage, folder, qdrant_location=str(tmp_path / "qdrant")
        )
    )
    reloader = Reloader(RegistrySource(params), cache, dict.fromkeys(STAGES, True))
    assert reloader.check()
    models = reloader.current
    assert models.champion.versions["trigger"] == "casepilot-trigger/1"
    assert models.shadow.versions == {**models.champion.versions, "trigger": "casepilot-trigger/2"}
    assert models.champion.suggest(MESSAGES[0]).versions["trigger"] == "casepilot-trigger/1"
    assert not reloader.check()  # nothing moved

    request_promotion(params, "trigger", winning_decision(params))
    approve_version(params, "trigger", "jane.doe")
    promote_challenger(params, "trigger", promoted_by="test")
    assert reloader.check()
    serving = reloader.current
    assert serving.champion.versions["trigger"] == "casepilot-trigger/2"
    assert serving.shadow is None  # no challenger left: nothing to shadow

    # champion moved by hand to a version no reviewer approved: refused, old models kept
    register_stage(params, "trigger", models_root / "v1" / "trigger", metrics={}, lineage=lineage)
    registry_client(params).set_registered_model_alias("casepilot-trigger", "champion", "3")
    assert reloader.check() is False
    assert reloader.current is serving
    assert reloader.last_error.startswith("UnapprovedChampion: casepilot-trigger@champion")


def test_bentofile_builds_a_bento(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    built = subprocess.run(
        [bentoml, "build", "-f", "bentos/bentofile.yaml", "."],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    listed = subprocess.run(
        [bentoml, "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    (bento,) = json.loads(listed.stdout)
    assert bento["tag"].startswith("casepilot-copilot:")
    root = tmp_path / "bentoml" / "bentos" / "casepilot-copilot" / bento["tag"].split(":")[1]
    assert (root / "src" / "bentos" / "service.py").is_file()
    assert (root / "src" / "params.yaml").is_file() and not (root / "src" / "tests").exists()
