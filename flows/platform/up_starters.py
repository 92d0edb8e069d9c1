"""How `casepilot up` starts each service (Label Studio's starter: flows/platform/up_studio.py).

The Prefect server and its process worker, MLflow with sign-in, the Evidently UI and the BentoML
service: each starter returns the running or newly launched `Service` (recorded in the
`Stack`) without waiting for it to answer; `flows.platform.up.bring_up` polls them together.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys

from flows.platform import stack
from flows.platform.stack import HOST, Service
from flows.platform.up_stack import Stack
from pipelines.config import Params

SCHEDULER_LOOP_ENV = "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"


def start_prefect(st: Stack, api: str, port: int) -> Service:
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
               "--port", str(port)]  # fmt: skip
    ui = api.removesuffix("/api")  # the server's UI; its API lives under /api
    # the scheduler creates due runs every loop (Prefect's default: 60 s late at worst)
    loop = st.env.get(SCHEDULER_LOOP_ENV, "10")
    return st.running("prefect-server") or st.start(
        "prefect-server", command, ui, port, **{SCHEDULER_LOOP_ENV: loop}
    )


def start_worker(st: Stack, api: str) -> Service:
    pool = st.params.schedule.work_pool
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
               "--type", "process", "--name", f"casepilot-{pool}"]  # fmt: skip
    ui = f"{api.removesuffix('/api')}/work-pools/work-pool/{pool}"
    return st.running("prefect-worker") or st.start("prefect-worker", command, ui, None)


def worker_online(api: str, pool: str) -> bool:
    body = stack.http_ok(f"{api}/work_pools/{pool}/workers/filter", data=b"{}")
    return body is not None and any(w.get("status") == "ONLINE" for w in json.loads(body))


def register_deployments(st: Stack) -> None:
    """Register the lifecycle deployments (flows/lifecycle/loop.py) when that module exists."""
    if importlib.util.find_spec("flows.lifecycle.loop") is None:
        st.status["deployments"] = "skipped: flows/lifecycle/loop.py not present yet"
        return
    from flows.lifecycle import loop as lifecycle

    if not hasattr(lifecycle, "register_deployments"):
        st.status["deployments"] = "skipped: flows.lifecycle.loop has no register_deployments"
        return
    accepts_file = "params_file" in inspect.signature(lifecycle.register_deployments).parameters
    extra = {"params_file": st.params_file} if accepts_file else {}
    names = lifecycle.register_deployments(st.params, **extra)
    st.status["deployments"] = "registered " + ", ".join(map(str, names or []))


def start_mlflow(st: Stack) -> tuple[Service, object]:
    from flows.platform import mlflow_auth, services

    creds = mlflow_auth.load_or_create_credentials(st.params.home)
    port = st.params.register.server_port
    if not (services.read_server(st.params) or stack.port_free(port)):
        raise RuntimeError(f"mlflow: port {port} on {HOST} is taken; set register.server_port")
    already = services.read_server(st.params) is not None
    info = services.start_mlflow_server(
        st.params, port=port, auth_env=mlflow_auth.server_env(st.params.home, creds), wait=False
    )
    command = services.server_command(st.params, info.port, auth=True)
    service = Service("mlflow", info.url, info.pid, info.pid, info.log, command)
    st.record(service, "already running" if already else "started")
    return service, creds


def champion_missing(params: Params) -> list[str]:
    """Stages without a `champion` version in the registry (the service needs all of them)."""
    from pipelines.data.contract import STAGES
    from pipelines.registry.register import CHAMPION, aliases_of, registry_client
    from pipelines.registry.store import registered_model_name

    client = registry_client(params)
    return [
        s
        for s in STAGES
        if CHAMPION not in aliases_of(client, registered_model_name(params.register, s))
    ]


def start_bentoml(st: Stack) -> Service | None:
    from flows.cli.serve import serve_command

    if found := st.running("bentoml"):
        return found
    from flows.platform.service_key import api_key_file, load_or_create_api_key

    cfg = st.params.serve
    command, env = serve_command(HOST, cfg.port, params_file=st.params_file,
                                 models_alias="champion", shadow_alias="challenger",
                                 models_dir=None)  # fmt: skip
    url = f"http://{HOST}:{cfg.port}"
    # /feedback and /admin/reload need it: the env var's key, else the stored or a new one
    env[cfg.api_key_env] = load_or_create_api_key(st.params, st.env)
    st.status["service API key"] = (
        f"in {api_key_file(st.params)} (0600); send it as X-API-Key to /feedback and /admin/*"
    )
    passed = {k: v for k, v in env.items() if k.startswith("CASEPILOT_") or k == cfg.api_key_env}
    service = st.start("bentoml", [sys.executable, *command], url, cfg.port, **passed)
    missing = champion_missing(st.params)
    if missing:  # it runs, not ready, and loads them once the platform promotes a champion
        st.status["bentoml"] = (
            f"started, waiting for a champion of {', '.join(missing)} (/readyz 503 until then; "
            f"it polls the registry every serve.reload_poll_s={cfg.reload_poll_s:g} s)"
        )
    return service


def start_evidently(st: Stack) -> Service:
    port = st.params.monitor.ui_port
    command = [sys.executable, "-m", "evidently.cli", "ui", "--host", HOST, "--port", str(port),
               "--workspace", str(st.params.home.evidently)]  # fmt: skip
    url = f"http://{HOST}:{port}"
    return st.running("evidently-ui") or st.start("evidently-ui", command, url, port)
