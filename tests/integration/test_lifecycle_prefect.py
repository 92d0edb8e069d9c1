"""The lifecycle flows on real Prefect: failure alerts, drift → retrain, promote and rollback.

Two tests run the flows on Prefect's test harness (a temporary API and database); retraining
through dvc.yaml is tests/integration/test_lifecycle_retrain.py. Two start `prefect server` on
127.0.0.1 with its own database: one registers the deployments and the automation with `casepilot
schedule`, runs the real `monitor` flow on drifted traffic and waits for the automation to
create a `retrain` run; the other runs `promote` without and with a reviewer's approval, then
`monitor` on a prediction log where the new champion regressed: it rolls back by itself and
pages. All are `slow` (each starts a Prefect API).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import SynthConfig, load_params
from pipelines.data.contract import PredictionRecord, Suggestion
from pipelines.data.intake.store import IntakePaths, write_accepted
from pipelines.data.synth import generate_world
from pipelines.home import Home
from tests.integration import test_registry
from tests.prefect_server import drain_prefect_workers

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def _world(days: int, cases_per_day: int = 40) -> dict[int, list]:
    world = generate_world(SynthConfig(cases_per_day=cases_per_day), seed=7, days=days)
    return {batch.day: list(batch.cases) for batch in world.days}


def _write_params(path: Path, sections: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def _accept(home: Home, cases: list) -> None:
    params = load_params(Path("/nonexistent/params.yaml"), home=home, env={})
    write_accepted(IntakePaths.for_params(params), "reference", cases)


# ---------------------------------------------------------------- harness tests


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):  # 2 busy cores
        yield


@pytest.mark.slow  # the test harness starts a temporary Prefect server first
def test_a_failed_flow_alerts_and_pages(harness: None, home: Home, tmp_path: Path) -> None:
    from flows.lifecycle.loop import retrain
    from pipelines.notify.alerts import read_alerts

    params_file = _write_params(tmp_path / "params.yaml", {})
    state = retrain(str(params_file), ["no-such-stage"], return_state=True)
    assert state.is_failed()
    params = load_params(params_file)
    alerts = [a for a in read_alerts(params) if a.kind == "flow_failed"]
    assert len(alerts) == 1 and alerts[0].details["flow"] == "retrain"
    assert "unknown stage" in alerts[0].summary and "no-such-stage" in alerts[0].summary
    pages = (params.home.logs / "pages.jsonl").read_text().splitlines()
    assert json.loads(pages[-1])["dedup_key"] == "casepilot-flow-failed-retrain"


@pytest.mark.slow  # the test harness starts a temporary Prefect server first
def test_monitor_still_checks_for_regressions_when_its_drift_step_fails(
    harness: None, home: Home, tmp_path: Path
) -> None:
    from flows.lifecycle.loop import monitor
    from pipelines.notify.alerts import read_alerts

    params_file = _write_params(
        tmp_path / "params.yaml",
        {
            "register": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"},
            "monitor": {"window_cases": 10},
        },
    )
    # a full window of traffic (so it is judged), but no training data to compare it with
    from monitoring.log.store import PredictionLog

    log = PredictionLog.from_url(load_params(params_file).prediction_log_url)
    start = datetime.now(UTC) - timedelta(minutes=30)
    log.write([
        PredictionRecord(
            request_id=f"r-{i}", case_id=f"c-{i}", created_at=start + timedelta(minutes=i),
            message=f"where is my payout {i}?", latency_ms=5.0,
            champion=Suggestion(text="Payouts arrive in 2 days.", latency_ms=5.0),
        )
        for i in range(10)
    ])  # fmt: skip
    log.close()
    state = monitor(str(params_file), return_state=True)
    assert state.is_failed() and "no accepted training data" in state.message
    alerts = [a for a in read_alerts(load_params(params_file)) if a.kind == "flow_failed"]
    assert [a.details["flow"] for a in alerts] == ["monitor"]
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    names = {run.name.rsplit("-", 1)[0] for run in runs}
    assert {"monitor-window", "rollback-check"} <= names, names  # the check ran regardless


# ---------------------------------------------------------------- real server


def _free_port() -> int:
    from flows.platform.services import free_port

    return free_port()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 with its own database; yields the API URL."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"prefect server did not get healthy: {(root / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
        drain_prefect_workers()
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)
        log.close()


def _drifted_prediction_log(url: str, cases: list, later: int = 0) -> None:
    """Traffic from after the world drifted, as the service would have logged it (`later`: the
    same messages again as new requests, `later` days after)."""
    from monitoring.log.store import PredictionLog

    start = datetime(2026, 11, 20 + later, 9, 0, tzinfo=UTC)
    records = [
        PredictionRecord(
            request_id=f"r{later}-{case.case_id}",
            case_id=f"{case.case_id}-{later}" if later else case.case_id,
            created_at=start + timedelta(minutes=i),
            message=case.message,
            champion=Suggestion(
                text=case.agent_reply,
                topic=case.topic,
                stopped_at=None if case.agent_reply else "trigger",
                abstain_reason=None if case.agent_reply else "trigger: below threshold",
                scores={"trigger": 0.9 if case.answerable else 0.1, "topic": 0.8},
                latency_ms=5.0,
            ),
            latency_ms=5.0,
        )
        for i, case in enumerate(cases)
    ]
    log = PredictionLog.from_url(url)
    try:
        log.write(records)
    finally:
        log.close()


def _run(args: list[str], env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_drift_breach_runs_retrain_through_the_automation(
    prefect_server: str, home: Home, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle.deploy import AUTOMATION

    world = _world(12)
    _accept(home, [c for day in range(1, 6) for c in world[day]])  # the training data
    pool = f"casepilot-test-{tmp_path.name[-8:]}"
    params_file = _write_params(
        tmp_path / "params.yaml",
        {
            # 4 drifted days x 40 cases: one full window of 160 (a window is judged once full)
            "monitor": {"window_cases": 160, "breach_n": 1, "breach_m": 1},
            "schedule": {"prefect_api_url": prefect_server, "work_pool": pool},
        },
    )
    params = load_params(params_file)
    _drifted_prediction_log(params.prediction_log_url, [c for d in range(9, 13) for c in world[d]])
    env = {**os.environ, "CASEPILOT_HOME": str(home.root), "PREFECT_API_URL": prefect_server}

    out = _run([PYTHON, "-m", "flows.cli.main", "schedule", "--params", str(params_file)], env, 120)
    assert "retrain/casepilot" in out and AUTOMATION in out

    # The real monitor flow, in its own process as a worker would run it.
    monitor = (
        "import json, sys; from flows.lifecycle.loop import monitor; "
        "print(json.dumps(monitor(sys.argv[1])))"
    )
    out = _run([PYTHON, "-c", monitor, str(params_file)], env, 240)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["breach"] and result["event_id"], result
    assert result["page"] and result["paged"] == "sent"
    page = json.loads((home.logs / "pages.jsonl").read_text().splitlines()[-1])
    assert page["links"][0]["href"] == result["evidence_url"]

    # the next window breaches too: the same incident — the page cools down, and no second
    # drift event starts a second retrain
    _drifted_prediction_log(
        params.prediction_log_url, [c for d in range(9, 13) for c in world[d]], later=1
    )
    again = json.loads(_run([PYTHON, "-c", monitor, str(params_file)], env, 240).splitlines()[-1])
    assert again["breach"] and again["paged"] == "suppressed", again
    assert again["event_id"] is None, again

    with (
        temporary_settings({PREFECT_API_URL: prefect_server}),
        get_client(sync_client=True) as client,
    ):
        retrain = client.read_deployment_by_name("retrain/casepilot")
        assert retrain.work_pool_name == pool
        assert retrain.schedules[0].schedule.cron == params.schedule.retrain_cron
        deadline = time.monotonic() + 60
        runs: list = []
        while not runs and time.monotonic() < deadline:
            runs = [
                run
                for run in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id]))
                )
                if run.created_by and run.created_by.type == "AUTOMATION"
            ]
            time.sleep(0.5)
    assert runs, "the drift-breach event did not start a retrain run within 60 s"
    assert runs[0].created_by.display_value == AUTOMATION
    assert runs[0].parameters["params_file"] == str(params_file.resolve())


stage_dir = test_registry.stage_dir  # a tiny registered-model folder (module fixture)


def _served_around_promotion(
    url: str, cases: list, promoted: datetime, before: str, after: str
) -> None:
    """Traffic with the agents' replies: the old topic champion `before` the promotion matched
    90% of them, the new one `after` it matches a third (a forced regression)."""
    from monitoring.log.store import PredictionLog
    from pipelines.data.contract import Feedback

    answered = [c for c in cases if c.agent_reply][:120]
    wrong = "Thanks for waiting, a courier will deliver your replacement card within five days."
    records, feedback = [], []
    for i, case in enumerate(answered):
        old = i < 60
        at = promoted + timedelta(minutes=(i - 61) if old else (i - 59))
        good = i % 10 != 0 if old else i % 3 == 0
        records.append(
            PredictionRecord(
                request_id=f"r-{case.case_id}",
                case_id=case.case_id,
                created_at=at,
                message=case.message,
                champion=Suggestion(
                    text=case.agent_reply if good else wrong,
                    topic=case.topic,
                    scores={"trigger": 0.9, "topic": 0.8},
                    versions={"topic": before if old else after},
                    latency_ms=5.0,
                ),
                latency_ms=5.0,
            )
        )
        feedback.append(Feedback(case_id=case.case_id, sent_reply=case.agent_reply,
                                 used_suggestion=good, created_at=at))  # fmt: skip
    log = PredictionLog.from_url(url)
    try:
        log.write(records)
        log.write_feedback(feedback)
    finally:
        log.close()


@pytest.mark.slow
def test_promotion_needs_approval_and_a_forced_regression_rolls_back(
    prefect_server: str, home: Home, tmp_path: Path, stage_dir: Path
) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.lifecycle.loop import monitor, promote, rollback
    from pipelines.notify.alerts import read_alerts
    from pipelines.registry.approval import approve_version, request_promotion
    from pipelines.registry.register import (
        CHAMPION,
        aliases_of,
        bootstrap_champion,
        registry_client,
    )

    world = _world(8)
    _accept(home, [c for day in range(1, 4) for c in world[day]])  # the monitor's reference
    params_file = _write_params(
        tmp_path / "params.yaml",
        {"register": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                      "gates": {"topic": {"accuracy": 0.8}}},
         "monitor": {"window_cases": 120, "max_reference_cases": 120}},
    )  # fmt: skip
    params = load_params(params_file)
    first = test_registry._register(params, stage_dir, {"accuracy": 0.9})
    bootstrap_champion(params, by="ops-lead", stages=["topic"])
    second = test_registry._register(params, stage_dir, {"accuracy": 0.9})
    request_promotion(params, "topic", test_registry.winning_decision(params))
    champion = lambda: aliases_of(registry_client(params), first.name)[CHAMPION]  # noqa: E731

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        refused = promote(str(params_file), "topic", return_state=True)
        assert refused.is_failed() and "promotion refused" in refused.message
        assert refused.result(raise_on_failure=False)["topic"]["status"] == "refused"
        assert champion() == first.version
        assert any(a.details.get("flow") == "promote" for a in read_alerts(params))

        approve_version(params, "topic", "demo-reviewer")
        promoted = promote(str(params_file), "topic", return_state=True)
        assert promoted.is_completed(), promoted.message
        assert promoted.message.startswith(f"promoted topic → v{second.version}; service reload")
        outcome = promoted.result()["topic"]
        assert outcome["status"] == "promoted" and outcome["approved_by"] == "demo-reviewer"
        assert champion() == second.version

        # The forced regression: since the promotion the new champion matches far fewer
        # replies; the scheduled monitor run finds it and rolls back by itself.
        tags = registry_client(params).get_model_version(first.name, second.version).tags
        promoted_at = datetime.fromisoformat(tags["casepilot.promoted_at"])
        cases = [c for day in range(4, 9) for c in world[day]]
        _served_around_promotion(
            params.prediction_log_url, cases, promoted_at, first.version, second.version
        )
        monitored = monitor(str(params_file), return_state=True)
        assert monitored.is_completed(), monitored.message
        report = monitored.result()
        check = report["rollback"]["topic"]
        assert check["status"] == "rolled back", check
        assert check["to_version"] == first.version and champion() == first.version
        assert check["before_match_rate"] == pytest.approx(0.9)
        assert check["after_match_rate"] < 0.4 and check["after_cases"] == 60
        page = json.loads((home.logs / "pages.jsonl").read_text().splitlines()[-1])
        assert page["dedup_key"] == f"casepilot-rollback-{first.name}-v{second.version}"
        assert page["links"][0]["href"] == report["evidence_url"]  # the Evidently snapshot

        # Nothing is rolled back twice: v1 has no predecessor, and a manual rollback says so.
        again = rollback(str(params_file), "topic", "forced regression", return_state=True)
        assert again.is_failed() and "no previous champion" in again.message
        assert champion() == first.version

        with get_client(sync_client=True) as client:  # the runs are the real server's
            served = [
                client.read_flow_run(s.state_details.flow_run_id).state
                for s in (refused, promoted, monitored, again)
            ]
        # the outcome is persisted: the state read back from the API (which carries no data
        # of its own) still yields it, as a rejected duplicate set-state under load hands back
        assert served[2].result()["rollback"]["topic"]["status"] == "rolled back"
        assert served[1].result()["topic"]["version"] == second.version
        _flush_to_api()
    assert [state.name for state in served] == ["Failed", "Completed", "Completed", "Failed"]


def _flush_to_api() -> None:
    """Send this process's buffered run logs and events while the server still runs."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
