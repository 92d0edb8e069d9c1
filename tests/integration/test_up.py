"""`casepilot up` / `down`: the whole local stack on loopback, MLflow behind sign-in, then gone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.platform import mlflow_auth, stack, supervisor
from flows.platform.services import free_port
from flows.platform.up import prefect_api_url
from pipelines.config import params_from_mapping
from pipelines.home import Home
from tests.integration import test_registry

CASEPILOT = str(Path(sys.executable).with_name("casepilot"))
stage_dir = test_registry.stage_dir  # a tiny trained-stage folder to register (module fixture)
REPO = Path(__file__).resolve().parents[2]


def _ports(n: int) -> list[int]:
    ports: set[int] = set()
    for _ in range(50):
        ports.add(free_port())
        if len(ports) == n:
            return sorted(ports)
    raise RuntimeError("could not find distinct free ports")


def _status(url: str, body: dict | None = None) -> int:
    """HTTP status of an anonymous GET (or JSON POST) to `url`."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _casepilot(
    args: list[str], env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CASEPILOT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s
    )


def test_prefect_api_url_defaults_to_loopback_and_refuses_a_remote_server(home: Home) -> None:
    assert prefect_api_url(params_from_mapping({}, home=home, env={})) == (
        "http://127.0.0.1:4200/api",
        4200,
    )
    local = {"schedule": {"prefect_api_url": "http://127.0.0.1:4321/api/"}}
    assert prefect_api_url(params_from_mapping(local, home=home, env={})) == (
        "http://127.0.0.1:4321/api",
        4321,
    )
    remote = {"schedule": {"prefect_api_url": "https://prefect.example.com/api"}}
    with pytest.raises(ValueError, match="remote server.*set it to null"):
        prefect_api_url(params_from_mapping(remote, home=home, env={}))


def test_credentials_come_from_env_or_are_generated_once_into_a_0600_file(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mlflow_auth.PASSWORD_ENV[mlflow_auth.REVIEWER], "reviewer-from-env")
    monkeypatch.delenv(mlflow_auth.ADMIN_PASSWORD_ENV, raising=False)
    first = mlflow_auth.load_or_create_credentials(home)
    assert first.reviewer_password == "reviewer-from-env"
    assert len(first.admin_password) >= 20 and first.admin_password != first.promoter_password
    path = mlflow_auth.secrets_file(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.setenv(mlflow_auth.PASSWORD_ENV[mlflow_auth.REVIEWER], "changed")
    assert mlflow_auth.load_or_create_credentials(home) == first  # the user store keeps the first
    ini = mlflow_auth.write_auth_config(home, first).read_text()
    assert "default_permission = READ" in ini and str(home.mlflow) in ini
    assert first.admin_password not in ini and first.reviewer_password not in ini
    env = mlflow_auth.client_env(first, mlflow_auth.PROMOTER)
    assert env == {"MLFLOW_TRACKING_USERNAME": "promoter",
                   "MLFLOW_TRACKING_PASSWORD": first.promoter_password}  # fmt: skip
    with pytest.raises(KeyError, match="no casepilot MLflow user 'mallory'"):
        first.password("mallory")


def test_down_signals_only_a_group_that_still_runs_the_recorded_command(home: Home) -> None:
    command = [sys.executable, "-c", "import signal; signal.pause()"]
    service = stack.launch("idle", command, dict(os.environ), home.logs / "idle.log", "-")
    try:
        assert stack.is_running(service) and stack.is_ours(service)
        recycled = stack.Service(**{**service.__dict__, "cmdline": ["some", "other", "program"]})
        assert stack.stop_group(recycled) == "not running"  # a reused pid is never signalled
        assert stack.is_running(service)
        assert stack.stop_group(service).startswith("stopped in ")
        assert not stack.is_ours(service) and stack.stop_group(service) == "not running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pgid, signal.SIGKILL)


@pytest.mark.slow
def test_up_serves_every_ui_guards_the_registry_and_down_stops_exactly_it(
    home: Home, tmp_path: Path, stage_dir: Path
) -> None:
    prefect_port, mlflow_port, ui_port, serve_port = _ports(4)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        yaml.safe_dump(
            {
                "register": {"server_port": mlflow_port},
                "monitor": {"ui_port": ui_port},
                "serve": {"port": serve_port},
                "review": {"start_with_up": False},  # tests/integration/test_review_up.py starts it
                "schedule": {
                    "prefect_api_url": f"http://127.0.0.1:{prefect_port}/api",
                    "work_pool": f"up-test-{prefect_port}",
                },
            }
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_", "MLFLOW_AUTH_", "CASEPILOT_"))
    }
    env["CASEPILOT_HOME"] = str(home.root)
    args = ["--params", str(params_file)]
    recorded: dict[str, stack.Service] = {}
    try:
        up = _casepilot(["up", *args], env, 240)
        assert up.returncode == 0, up.stdout + up.stderr
        recorded = stack.read_state(home)
        assert set(recorded) == {
            "prefect-server", "prefect-worker", "mlflow", "evidently-ui", "bentoml"
        }  # fmt: skip
        # nothing registered yet: the service runs, not ready, until the platform promotes one
        assert "bentoml started, waiting for a champion" in up.stdout
        assert "label-studio skipped: review.start_with_up is false" in up.stdout
        for service in recorded.values():
            assert service.url.startswith("http://127.0.0.1:")
            assert service.pid == service.pgid and stack.is_running(service)

        # every UI answers on loopback
        assert _status(f"http://127.0.0.1:{prefect_port}/api/health") == 200
        assert _status(f"http://127.0.0.1:{ui_port}/api/version") == 200
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        assert _status(f"{mlflow_url}/health") == 200

        # the registry refuses anonymous writes and reads; the promoter and reviewer may change it
        create = f"{mlflow_url}/api/2.0/mlflow/registered-models/create"
        assert _status(create, {"name": "casepilot-topic"}) == 401
        assert _status(f"{mlflow_url}/api/2.0/mlflow/registered-models/search") == 401
        secrets = mlflow_auth.secrets_file(home)
        assert str(secrets) in up.stdout.replace("\n", "")
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
        creds = mlflow_auth.load_or_create_credentials(home)
        from mlflow import MlflowClient
        from mlflow.server.auth.client import AuthServiceClient

        # casepilot's own writers go through the server, signed in as the promoter (no creds in
        # their environment: they read them from the secrets file), not into the store directly
        metrics = tmp_path / "metrics.json"
        metrics.write_text(json.dumps({"metrics": {"accuracy": 0.9}}))
        registered = _casepilot(
            [
                "register",
                "topic",
                "--model",
                str(stage_dir),
                "--metrics",
                str(metrics),
                "--data-version",
                "md5-up",
                *args,
            ],
            env,
            180,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr  # fmt: skip
        with mlflow_auth.signed_in(creds, creds.admin_username):
            auth = AuthServiceClient(mlflow_url)
            grants = {
                (p.resource_type, p.resource_pattern, p.permission)
                for role in auth.list_user_roles(mlflow_auth.PROMOTER)
                for p in auth.list_role_permissions(role.id)
            }
        # the server grants its creator MANAGE on exactly this model: it was created through it
        assert ("registered_model", "casepilot-topic", "MANAGE") in grants, grants
        with mlflow_auth.signed_in(creds, mlflow_auth.REVIEWER):
            client = MlflowClient(tracking_uri=mlflow_url)
            client.set_registered_model_tag("casepilot-topic", "reviewed", "yes")
            assert client.get_registered_model("casepilot-topic").tags["reviewed"] == "yes"

        # a crashed service is restarted by the supervisor: SIGKILL the Evidently UI's group
        ui = recorded["evidently-ui"]
        os.killpg(ui.pgid, signal.SIGKILL)
        restarted = _wait_restarted(home, ui, f"http://127.0.0.1:{ui_port}/api/version", 120)
        assert restarted.pid != ui.pid and stack.is_running(restarted)
        status = subprocess.run(
            [str(Path(sys.executable).with_name("supervisorctl")), "-c",
             str(supervisor.config_file(home)), "status"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.stdout.count("RUNNING") == len(recorded), status.stdout
        recorded = stack.read_state(home)

        # `up` again starts nothing new
        again = _casepilot(["up", *args], env, 180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already running") == len(recorded)  # bentoml too
        assert {n: s.pid for n, s in stack.read_state(home).items()} == {
            n: s.pid for n, s in recorded.items()
        }
    finally:
        down = _casepilot(["down", *args], env, 120)
    assert down.returncode == 0, down.stdout + down.stderr
    for service in recorded.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(service.pgid, 0)  # the whole group is gone
    assert not supervisor.running(home)
    assert all(stack.port_free(port) for port in (prefect_port, mlflow_port, ui_port))
    nothing = _casepilot(["down", *args], env, 60)
    assert nothing.returncode == 0 and "nothing running" in nothing.stdout


def _wait_restarted(home: Home, old: stack.Service, url: str, timeout_s: float) -> stack.Service:
    """The service once the supervisor runs it under a new pid and `url` answers 200 again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = stack.read_state(home).get(old.name)
        if now is not None and now.pid not in (0, old.pid) and now.state == "RUNNING":
            with contextlib.suppress(urllib.error.URLError, OSError):
                if _status(url) == 200:
                    return now
        time.sleep(0.5)
    raise AssertionError(f"{old.name} was not restarted within {timeout_s:.0f}s")


def test_clients_go_through_the_sign_in_server_of_up_while_it_runs(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.registry.tracking import client_tracking_uri, server_record_file

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    params = params_from_mapping({}, home=home, env={})
    store = params.mlflow_tracking_uri
    assert client_tracking_uri(params) == store  # nothing runs: the embedded store
    # a process that looks like `mlflow server` to /proc, standing in for the recorded server
    command = [sys.executable, "-c", "import signal; signal.pause()", "mlflow", "server"]
    process = subprocess.Popen(command)
    try:
        stack.wait_for_exec(process, command)  # /proc shows the command, not the forked parent
        record = {"pid": process.pid, "host": "127.0.0.1", "port": 5123,
                  "backend_store_uri": store, "auth": False}  # fmt: skip
        record_file = server_record_file(home)
        record_file.write_text(json.dumps(record))
        assert client_tracking_uri(params) == store  # no sign-in server: no need to detour
        record_file.write_text(json.dumps({**record, "auth": True}))
        with pytest.raises(PermissionError, match="no promoter password"):
            client_tracking_uri(params)  # a server that needs sign-in, and no password known
        creds = mlflow_auth.load_or_create_credentials(home)
        assert client_tracking_uri(params) == "http://127.0.0.1:5123"
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == mlflow_auth.PROMOTER
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == creds.promoter_password
        # another home's server (new passwords): what this process set itself is replaced
        from pipelines.registry.tracking import auth_secrets_file

        secrets = auth_secrets_file(home)
        stored = json.loads(secrets.read_text(encoding="utf-8"))
        secrets.write_text(json.dumps({**stored, "promoter_password": "a-new-home"}))
        client_tracking_uri(params)
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "a-new-home"
        # the services `up` starts never inherit them: each signs in for its own home
        from pipelines.registry.tracking import without_own_sign_in

        assert "MLFLOW_TRACKING_PASSWORD" not in without_own_sign_in(dict(os.environ))
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reviewer")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "signed-in-already")
        client_tracking_uri(params)
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "reviewer"  # whoever signed in stays
        other = params_from_mapping({"register": {"tracking_uri": "sqlite:///elsewhere.db"}},
                                    home=home, env={})  # fmt: skip
        assert client_tracking_uri(other) == "sqlite:///elsewhere.db"  # another store
    finally:
        process.kill()
        process.wait(timeout=10)
    assert client_tracking_uri(params) == store  # the server is gone: back to the store
