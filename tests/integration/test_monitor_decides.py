"""The scheduled `monitor` decides per stage on a real Prefect server, MLflow store and cascade.

Real tiny stages (test_service's, trained a few steps) are registered in a SQLite MLflow store:
every stage's champion, plus two challengers — a `trigger` that lets every message through
(the champion's threshold stops about half of them) and a `topic` that abstains on everything.
The prediction log holds what the service would have logged: the champion's and the whole
shadow cascade's suggestions with their versions, and the agents' replies (here: what the
cascade with only the new trigger says). The `monitor` flow, run against `prefect server`,
must replay each stage alone, request promotion of the trigger only (one notification to a
real HTTP receiver, through apprise), tag the topic challenger rejected, and do nothing new on
a rerun.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipelines.data.contract import STAGES, Feedback, PredictionRecord
from pipelines.home import Home
from tests.integration import test_service
from tests.integration.test_lifecycle_prefect import _accept
from tests.prefect_server import prefect_server, process_worker

REPO = Path(__file__).resolve().parents[2]
# a Prefect server, an MLflow store, two monitor runs, a service: minutes on loaded cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
models_root = test_service.models_root  # tiny trained stages (module fixture, cached)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-monitor")) as url:
        yield url


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def notifications(self) -> list[dict]:
        return [b for b in self.bodies if str(b.get("title", "")).startswith("casepilot: review")]


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    hook = Receiver()
    thread = threading.Thread(target=hook.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.shutdown()
        hook.server_close()
        thread.join(timeout=10)


def _variant(models_root: Path, out: Path, stage: str, **changes: float) -> Path:
    """A copy of the tiny `stage` with `changes` to its stage.json (or to its `config`)."""
    shutil.copytree(models_root / "v1" / stage, out, symlinks=True)
    meta = json.loads((out / "stage.json").read_text())
    for key, value in changes.items():
        (meta["config"] if key in meta.get("config", {}) else meta)[key] = value
    (out / "stage.json").write_text(json.dumps(meta))
    return out


def _cascade(dirs: dict[str, Path], tmp: Path):
    from pipelines.cascade import load_cascade_from_dirs

    root = tmp / f"cascade-{len(list(tmp.glob('cascade-*')))}"
    root.mkdir()
    for stage, folder in dirs.items():
        (root / stage).symlink_to(folder)
    return load_cascade_from_dirs(root, qdrant_location=":memory:")


def _register_world(params, models_root: Path, tmp: Path) -> dict[str, Path]:
    """Champion of every stage (trigger at its median score), then the two challengers."""
    from pipelines.registry.lineage import stage_lineage
    from pipelines.registry.register import bootstrap_champion, register_stage

    def register(stage: str, folder: Path) -> str:
        lineage = stage_lineage(params, stage, data_version="md5-test", model_dir=folder)
        return register_stage(params, stage, folder, metrics={}, lineage=lineage).version

    dirs = {s: models_root / "v1" / s for s in STAGES}
    # the tiny retrieve/answer would abstain on nearly everything: let every case reach a reply
    dirs["retrieve"] = _variant(models_root, tmp / "retrieve", "retrieve", min_similarity=0.0)
    dirs["answer"] = _variant(models_root, tmp / "answer", "answer", min_confidence=0.0,
                              min_groundedness=0.0)  # fmt: skip
    dirs["trigger"] = _variant(models_root, tmp / "trigger-open", "trigger", threshold=0.0)
    scores = sorted(s.scores["trigger"] for s in _cascade(dirs, tmp).suggest_batch(_messages()))
    champion = dict(dirs)
    champion["trigger"] = _variant(models_root, tmp / "trigger-champ", "trigger",
                                   threshold=scores[len(scores) // 2])  # fmt: skip
    for stage in STAGES:
        register(stage, champion[stage])
    bootstrap_champion(params, by="test", stages=STAGES)
    register("trigger", dirs["trigger"])  # the better challenger
    closed = _variant(models_root, tmp / "topic-closed", "topic", threshold=0.999)
    register("topic", closed)  # the regressing challenger
    return {"champion": champion, "trigger": dirs, "shadow": {**dirs, "topic": closed}}


def _messages() -> list[str]:
    from pipelines.config import SynthConfig
    from pipelines.data.synth.world import generate_world

    world = generate_world(SynthConfig(days=1, cases_per_day=60, drift_from_day=None), seed=5)
    return [c.message for day in world.days for c in day.cases][:60]


def _log_traffic(params, worlds: dict, tmp: Path) -> None:
    """What the service logs: champion + whole-shadow suggestions, versions, agents' replies."""
    from monitoring.log.store import PredictionLog
    from pipelines.registry.register import aliases_of, registered_model_name, registry_client

    client = registry_client(params)
    refs = {}
    for alias in ("champion", "challenger"):
        for stage in STAGES:
            name = registered_model_name(params.register, stage)
            version = aliases_of(client, name).get(alias) or aliases_of(client, name)["champion"]
            refs.setdefault(alias, {})[stage] = f"{name}/{version}"
    messages = _messages()
    outputs = {k: _cascade(worlds[k], tmp).suggest_batch(messages) for k in worlds}
    start = datetime.now(UTC) + timedelta(seconds=1)
    records, feedback = [], []
    for i, message in enumerate(messages):
        at, case = start + timedelta(seconds=i), f"case-{i}"
        sent = outputs["trigger"][i].text or "Sorry, a colleague will get back to you."
        records.append(PredictionRecord(
            request_id=f"r-{i}", case_id=case, created_at=at, message=message,
            champion=outputs["champion"][i].model_copy(update={"versions": refs["champion"]}),
            shadow=outputs["shadow"][i].model_copy(update={"versions": refs["challenger"]}),
            latency_ms=5.0))  # fmt: skip
        feedback.append(Feedback(case_id=case, sent_reply=sent, used_suggestion=True,
                                 created_at=at))  # fmt: skip
    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        log.write(records)
        log.write_feedback(feedback)
    finally:
        log.close()


@pytest.fixture(scope="module")
def world(
    server: str, models_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """The registered world and its traffic; `monitor` run twice on the real Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle.loop import monitor
    from pipelines.config import load_params
    from tests.integration.test_lifecycle_prefect import _world

    tmp = tmp_path_factory.mktemp("world")
    home = Home(tmp / "home").ensure()
    with pytest.MonkeyPatch.context() as env, receiving() as receiver:
        env.setenv("CASEPILOT_HOME", str(home.root))
        _accept(home, [c for day in _world(2).values() for c in day])  # the drift reference
        params_file = tmp / "params.yaml"
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        params_file.write_text(yaml.safe_dump({
            # no offline gates, no scenario gate: the regressing topic challenger must reach shadow
            # (tests/integration/test_scenarios_gate.py tests the scenario gate)
            "register": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                         "gates": {s: {} for s in STAGES}, "scenario_suite": None},
            "monitor": {"window_cases": 200, "pager": {"kind": "webhook", "url": hook}},
            "promote": {"min_cases": 20},
        }))  # fmt: skip
        params = load_params(params_file)
        worlds = _register_world(params, models_root, tmp)
        _log_traffic(params, worlds, tmp)
        with temporary_settings({PREFECT_API_URL: server}):
            first = monitor(str(params_file), return_state=True)
            assert first.is_completed(), first.message
            tags = {s: _challenger_tags(params, s) for s in ("trigger", "topic")}
            sent_first = list(receiver.notifications)
            again = monitor(str(params_file), return_state=True).result()["promotion"]
        yield SimpleNamespace(
            home=home, tmp=tmp, params_file=params_file, params=params,
            decided=first.result()["promotion"], again=again, tags=tags,
            sent_first=sent_first, sent_all=list(receiver.notifications),
        )  # fmt: skip


def _challenger_tags(params, stage: str) -> dict[str, str]:
    from pipelines.registry.register import aliases_of, registered_model_name, registry_client

    client = registry_client(params)
    name = registered_model_name(params.register, stage)
    return client.get_model_version(name, aliases_of(client, name)["challenger"]).tags


def test_monitor_requests_only_the_improved_stage_notifies_once_and_reruns_quietly(
    world: SimpleNamespace,
) -> None:
    from flows.lifecycle.record import REJECTED
    from pipelines.registry.approval import REQUESTED

    decided = world.decided
    assert decided["trigger"]["status"] == "requested", decided
    assert decided["trigger"]["notified"] == "sent", decided
    evidence = decided["trigger"]["evidence"]
    assert evidence["challenger_only"] > 0 and evidence["champion_only"] == 0
    assert evidence["stage_delta.trigger"] > 0 and evidence["p_value"] < 0.05
    assert decided["topic"]["status"] == "rejected", decided
    assert "stage topic regresses" in decided["topic"]["reason"]

    trigger_tags, topic_tags = world.tags["trigger"], world.tags["topic"]
    assert trigger_tags[REQUESTED] == "true"
    assert float(trigger_tags["casepilot.evidence.stage_delta.trigger"]) > 0
    assert REQUESTED not in topic_tags and topic_tags[REJECTED] == "true"
    assert len(world.sent_first) == 1  # one request, one message
    message = world.sent_first[0]["message"]
    assert trigger_tags["casepilot.promotion_link"] in message and "McNemar" in message

    # Rerun on the same evidence: nothing new recorded, nothing sent.
    assert {s: o["status"] for s, o in world.again.items()} == {"trigger": "unchanged",
                                                                "topic": "unchanged"}  # fmt: skip
    assert _challenger_tags(world.params, "trigger") == trigger_tags
    assert _challenger_tags(world.params, "topic") == topic_tags
    assert len(world.sent_all) == 1


class Load:
    """Light customer traffic on /suggest (one request at a time, paced), every outcome kept."""

    def __init__(self, url: str, messages: list[str]) -> None:
        self.url, self.messages = url, messages
        self.outcomes: list[tuple[float, int, str | None]] = []  # (time, status, trigger version)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=60, trust_env=False) as client:
            for i in range(5000):  # bounded: at most 5000 requests
                if self.stop.is_set():
                    return
                body = {"case_id": f"load-{i}", "message": self.messages[i % len(self.messages)]}
                try:
                    response = client.post(f"{self.url}/suggest", json=body)
                    version = (
                        response.json()["suggestion"]["versions"].get("trigger")
                        if response.status_code == 200
                        else None
                    )
                    self.outcomes.append((time.monotonic(), response.status_code, version))
                except httpx.HTTPError:
                    self.outcomes.append((time.monotonic(), 0, None))
                self.stop.wait(0.1)  # pacing between requests


@contextlib.contextmanager
def serving(params_file: Path, home: Home, key: str) -> Iterator[str]:
    """`bentoml serve` of the registry's champion/challenger on 127.0.0.1; yields its URL."""
    import httpx

    from flows.cli.serve import serve_command
    from flows.platform.services import free_port

    port = free_port()
    command, env = serve_command("127.0.0.1", port, params_file=params_file,
                                 models_alias="champion", shadow_alias="challenger",
                                 models_dir=None)  # fmt: skip
    env = {**env, **home.framework_env(), "CASEPILOT_API_KEY": key, "HF_HUB_OFFLINE": "1"}
    log_path = home.logs / "bentoml.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"service not ready: {log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=5, trust_env=False).status_code == 200:
                        break
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_approval_is_promoted_by_the_promote_deployment_and_served_without_a_failed_request(
    world: SimpleNamespace, server: str
) -> None:
    """The reviewer approves; nothing else is done by hand: the `promote` deployment's interval
    schedule promotes it, asks the running service to reload (API key), and light traffic sees
    the new champion with no failed request."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle.deploy import register_deployments
    from flows.platform.service_key import load_or_create_api_key
    from pipelines.config import load_params
    from pipelines.registry.approval import approve_version
    from pipelines.registry.register import aliases_of, registered_model_name, registry_client

    params = world.params
    trigger = registered_model_name(params.register, "trigger")
    client = registry_client(params)
    old, new = aliases_of(client, trigger)["champion"], aliases_of(client, trigger)["challenger"]
    key = load_or_create_api_key(params, env={})  # what `casepilot up` does
    pool = "promote-pool"
    with serving(world.params_file, world.home, key) as url:
        raw = yaml.safe_load(world.params_file.read_text())
        raw["schedule"] = {"prefect_api_url": server, "work_pool": pool,
                           "promote_poll_seconds": 3, "service_url": url}  # fmt: skip
        world.params_file.write_text(yaml.safe_dump(raw))
        params = load_params(world.params_file)
        register_deployments(params, world.params_file)
        load = Load(url, _messages())
        with process_worker(server, pool, world.tmp, params.home.framework_env()) as worker_log:
            load.thread.start()
            approved_at = time.monotonic()
            approve_version(params, "trigger", "test-reviewer")  # the reviewer, in the MLflow UI
            deadline = approved_at + 240
            while time.monotonic() < deadline and not any(
                v and v.endswith(f"/{new}") for _, _, v in load.outcomes
            ):
                time.sleep(0.5)
            load.stop.set()
            load.thread.join(timeout=70)
        served = [t for t, _, v in load.outcomes if v and v.endswith(f"/{new}")]
        assert served, f"new champion not served within 240 s:\n{worker_log.read_text()[-3000:]}"
    with temporary_settings({PREFECT_API_URL: server}), get_client(sync_client=True) as prefect:
        deployment = prefect.read_deployment_by_name("promote/casepilot")
        runs = prefect.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    failed = [s for _, s, _ in load.outcomes if s != 200]
    switch_s = served[0] - approved_at
    print(f"approval -> champion serving: {switch_s:.1f} s; requests {len(load.outcomes)}, "
          f"failed {len(failed)}")  # fmt: skip
    assert aliases_of(client, trigger)["champion"] == new and old != new
    assert not failed, f"{len(failed)} failed requests during the switch: {failed[:5]}"
    finished = [r for r in runs if r.state is not None and r.state.is_final()]
    assert any(r.state.is_completed() for r in finished)
    # polls with nothing approved are quiet Completed runs, never Failed (a poll due while the
    # last one still runs is Cancelled by the deployment's concurrency limit, not queued)
    assert not [r.state for r in finished if r.state.is_failed() or r.state.is_crashed()]
    assert all(r.auto_scheduled for r in runs)  # nobody started a promote run by hand
