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

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import test_service
import yaml
from prefect_server import prefect_server
from test_lifecycle_prefect import _accept

from pipelines.contract import STAGES, Feedback, PredictionRecord
from pipelines.home import Home

pytestmark = pytest.mark.slow  # a Prefect server, an MLflow store and two monitor runs
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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    thread = threading.Thread(target=hook.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.shutdown()
        hook.server_close()
        thread.join(timeout=10)


def _threshold(stage_dir: Path, threshold: float) -> None:
    meta = json.loads((stage_dir / "stage.json").read_text())
    (stage_dir / "stage.json").write_text(json.dumps({**meta, "threshold": threshold}))


def _variant(models_root: Path, out: Path, stage: str, threshold: float) -> Path:
    shutil.copytree(models_root / "v1" / stage, out, symlinks=True)
    _threshold(out, threshold)
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
    from pipelines.lineage import stage_lineage
    from pipelines.registry import bootstrap_champion, register_stage

    def register(stage: str, folder: Path) -> str:
        lineage = stage_lineage(params, stage, data_version="md5-test", model_dir=folder)
        return register_stage(params, stage, folder, metrics={}, lineage=lineage).version

    dirs = {s: models_root / "v1" / s for s in STAGES}
    dirs["trigger"] = _variant(models_root, tmp / "trigger-open", "trigger", 0.0)
    scores = sorted(
        s.scores["trigger"] for s in _cascade(dirs, tmp).suggest_batch(_messages())
    )
    champion = dict(dirs)
    champion["trigger"] = _variant(models_root, tmp / "trigger-champ", "trigger",
                                   scores[len(scores) // 2])  # fmt: skip
    for stage in STAGES:
        register(stage, champion[stage])
    bootstrap_champion(params, by="test", stages=STAGES)
    register("trigger", dirs["trigger"])  # the better challenger
    closed = _variant(models_root, tmp / "topic-closed", "topic", 0.999)
    register("topic", closed)  # the regressing challenger
    return {"champion": champion, "trigger": dirs, "shadow": {**dirs, "topic": closed}}


def _messages() -> list[str]:
    from pipelines.config import SynthConfig
    from pipelines.synth.world import generate_world

    world = generate_world(SynthConfig(days=1, cases_per_day=60, drift_from_day=None), seed=5)
    return [c.message for day in world.days for c in day.cases][:60]


def _log_traffic(params, worlds: dict, tmp: Path) -> None:
    """What the service logs: champion + whole-shadow suggestions, versions, agents' replies."""
    from monitoring.prediction_log import PredictionLog
    from pipelines.registry import aliases_of, registered_model_name, registry_client

    client = registry_client(params)
    refs = {}
    for alias in ("champion", "challenger"):
        for stage in STAGES:
            name = registered_model_name(params, stage)
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


def test_monitor_requests_only_the_improved_stage_notifies_once_and_reruns_quietly(
    server: str, models_root: Path, home: Home, tmp_path: Path, receiver: Receiver
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle import monitor
    from flows.lifecycle_decide import REJECTED
    from pipelines.approval import REQUESTED
    from pipelines.config import load_params
    from pipelines.registry import aliases_of, registered_model_name, registry_client
    from test_lifecycle_prefect import _world

    _accept(home, [c for day in _world(2).values() for c in day])  # the drift reference
    params_file = tmp_path / "params.yaml"
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    params_file.write_text(yaml.safe_dump({
        "register": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "gates": {s: {} for s in STAGES}},
        "monitor": {"window_cases": 200, "pager": {"kind": "webhook", "url": hook}},
        "promote": {"min_cases": 20},
    }))  # fmt: skip
    params = load_params(params_file)
    worlds = _register_world(params, models_root, tmp_path)
    _log_traffic(params, worlds, tmp_path)

    with temporary_settings({PREFECT_API_URL: server}):
        first = monitor(str(params_file), return_state=True)
        assert first.is_completed(), first.message
        decided = first.result()["promotion"]
        again = monitor(str(params_file), return_state=True).result()["promotion"]

    assert decided["trigger"]["status"] == "requested", decided
    assert decided["trigger"]["notified"] == "sent", decided
    evidence = decided["trigger"]["evidence"]
    assert evidence["challenger_only"] > 0 and evidence["champion_only"] == 0
    assert evidence["stage_delta.trigger"] > 0 and evidence["p_value"] < 0.05
    assert decided["topic"]["status"] == "rejected", decided
    assert "stage topic regresses" in decided["topic"]["reason"]

    client = registry_client(params)

    def tags(stage: str) -> dict[str, str]:
        name = registered_model_name(params, stage)
        return client.get_model_version(name, aliases_of(client, name)["challenger"]).tags

    trigger_tags, topic_tags = tags("trigger"), tags("topic")
    assert trigger_tags[REQUESTED] == "true"
    assert float(trigger_tags["casepilot.evidence.stage_delta.trigger"]) > 0
    assert REQUESTED not in topic_tags and topic_tags[REJECTED] == "true"
    assert len(receiver.notifications) == 1  # one request, one message
    message = receiver.notifications[0]["message"]
    assert trigger_tags["casepilot.promotion_link"] in message and "McNemar" in message

    # Rerun on the same evidence: nothing new recorded, nothing sent.
    assert {s: o["status"] for s, o in again.items()} == {"trigger": "unchanged",
                                                          "topic": "unchanged"}  # fmt: skip
    assert tags("trigger") == trigger_tags and tags("topic") == topic_tags
    assert len(receiver.notifications) == 1
