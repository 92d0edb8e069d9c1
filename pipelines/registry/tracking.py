"""MLflow helpers every stage uses: where to track, open a run, log metrics, params and figures.

Where to track (`client_tracking_uri`): `params.mlflow_tracking_uri` — unless that is this home's
embedded database store and `casepilot up` runs the MLflow server over it with sign-in
(`--app-name basic-auth`, flows/platform/mlflow_auth.py). Then every client goes through that
server, signed in as `promoter` (or as whoever `MLFLOW_TRACKING_USERNAME`/`_PASSWORD` already
name), so the registry's permissions hold: nothing writes to the store behind the server's back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipelines.config import Params
    from pipelines.home import Home

USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
SIGN_IN_AS = (
    "promoter"  # the user casepilot's own writers sign in as (flows/platform/mlflow_auth.py)
)


def auth_secrets_file(home: Home) -> Path:
    """The 0600 file `casepilot up` keeps the MLflow users' passwords in
    (flows/platform/mlflow_auth.py)."""
    return home.root / "secrets" / "mlflow-auth.json"


def server_record_file(home: Home) -> Path:
    """The running local MLflow server's record (pid, URL, store, auth;
    flows/platform/services.py)."""
    return home.logs / "mlflow-server.json"


def runs_mlflow_server(pid: int) -> bool:
    """True when `pid` is alive and runs `mlflow server` (a recycled pid does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the record
    return b"mlflow" in b" ".join(cmdline) and b"server" in cmdline


def running_auth_server(params: Params) -> str | None:
    """URL of this home's running sign-in MLflow server over `params.mlflow_tracking_uri`."""
    path = server_record_file(params.home)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not record.get("auth") or record.get("backend_store_uri") != params.mlflow_tracking_uri:
        return None
    pid = int(record.get("pid") or 0)
    url = f"http://{record['host']}:{record['port']}"
    if pid > 0 and runs_mlflow_server(pid):
        return url
    # supervisord restarted it after a crash (a new pid): it still answers where recorded
    return url if pid > 0 and healthy(url) else None


def healthy(url: str, timeout_s: float = 1.0) -> bool:
    """True when an MLflow server answers `GET {url}/health` with 200 within `timeout_s`."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


_signed_in_here: tuple[str, str] | None = None  # what sign_in_from_secrets last set


def sign_in_from_secrets(home: Home) -> None:
    """Sign this process's MLflow clients in as `promoter`, unless someone is signed in already.

    Raises with the fix when the server needs sign-in and no password is known. Credentials
    this function set earlier (for another home's server, whose passwords differ) are replaced:
    only a sign-in someone else set is kept. (A process that drove a second home's server once
    kept the first home's password and got 401 from the second.)
    """
    global _signed_in_here
    current = (os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV))
    if all(current) and current != _signed_in_here:
        return
    path = auth_secrets_file(home)
    try:
        password = json.loads(path.read_text(encoding="utf-8"))[f"{SIGN_IN_AS}_password"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise PermissionError(
            f"the MLflow server of `casepilot up` needs sign-in, but {path} has no "
            f"{SIGN_IN_AS} password ({err}); set {USERNAME_ENV}/{PASSWORD_ENV} or run "
            "`casepilot up` again as the user who started it"
        ) from None
    os.environ[USERNAME_ENV], os.environ[PASSWORD_ENV] = SIGN_IN_AS, password
    _signed_in_here = (SIGN_IN_AS, password)


def without_own_sign_in(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child process, minus the MLflow credentials `sign_in_from_secrets` set in this
    process (they belong to whichever home it signed in for; the child signs in for its own). A
    sign-in someone set explicitly is passed on."""
    pair = (env.get(USERNAME_ENV), env.get(PASSWORD_ENV))
    if _signed_in_here is None or pair != _signed_in_here:
        return env
    return {k: v for k, v in env.items() if k not in (USERNAME_ENV, PASSWORD_ENV)}


def client_tracking_uri(params: Params) -> str:
    """Where MLflow clients should go: the sign-in server `casepilot up` runs over this home's
    store (signing in as `promoter`), else `params.mlflow_tracking_uri` itself."""
    uri = params.mlflow_tracking_uri
    if uri.startswith(("http://", "https://", "databricks")):
        return uri
    server = running_auth_server(params)
    if server is None:
        return uri
    sign_in_from_secrets(params.home)
    return server


@contextmanager
def mlflow_run(params: Params, experiment: str, run_name: str) -> Iterator[Any]:
    """Yield an active MLflow run in `experiment`, tracking to `client_tracking_uri(params)`.

    The tracking URI is set here, never at import; an embedded SQLite store gets its folder.
    """
    import mlflow

    uri = client_tracking_uri(params)
    if uri.startswith("sqlite:///"):
        params.home.mlflow.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        yield run


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def log_evaluation(
    metrics: Mapping[str, Any],
    figures: Mapping[str, Figure] | None = None,
    params_logged: Mapping[str, Any] | None = None,
) -> None:
    """Log numeric metrics (nested keys become `a.b`), params and figures to the active run."""
    import mlflow

    numeric = {
        key: float(value)
        for key, value in _flatten(metrics).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    if numeric:
        mlflow.log_metrics(numeric)
    if params_logged:
        mlflow.log_params({key: str(value)[:500] for key, value in _flatten(params_logged).items()})
    for name, figure in (figures or {}).items():
        mlflow.log_figure(figure, name if name.endswith(".png") else f"{name}.png")
