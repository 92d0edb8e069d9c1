"""The Label Studio server: its own tool environment, accounts from the secrets folder, loopback.

Label Studio (`label-studio==1.23.2`, Django, ~150 packages) lives in `.venv-labelstudio` beside
the project's `.venv` (`make label-studio`) so its pins never fight the stack; the project talks
to it over HTTP with `label-studio-sdk`. State lives in `CASEPILOT_HOME/label-studio` (SQLite).

Accounts sit beside MLflow's in `CASEPILOT_HOME/secrets/` (`label-studio.json`, mode 0600): an
admin (the flows' API identity) and one account per `review.reviewers` entry, each with a
password and a legacy API token. Label Studio creates a user non-interactively from
`LABEL_STUDIO_USERNAME` / `LABEL_STUDIO_PASSWORD` / `LABEL_STUDIO_USER_TOKEN` (`label-studio init`
/ `start`), so the secrets travel in the environment, never on the command line. Telemetry,
the version check and Sentry are off; sign-up without an invite link is disabled.

`casepilot up` is meant to run `init_commands` once (first start) and then `start_command` as a
managed process group (flows/platform/stack.py); `start_studio` / `stop_studio` do both for tests.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flows.platform import stack

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.home import Home

REPO = Path(__file__).resolve().parents[2]
BIN_ENV = "CASEPILOT_LABEL_STUDIO_BIN"
ADMIN_PASSWORD_ENV = "CASEPILOT_LABEL_STUDIO_ADMIN_PASSWORD"
EMAIL_DOMAIN = "casepilot.local"
DATABASE = "label_studio.sqlite3"  # Label Studio's SQLite file in its data folder
STUDIO_ENV = {
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "DJANGO_DB": "sqlite",
    "DO_NOT_TRACK": "true",
}


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    token: str  # 40 hex characters: a Django REST framework token key

    @property
    def name(self) -> str:
        return self.email.split("@")[0]


@dataclass(frozen=True)
class StudioCredentials:
    admin: Account
    reviewers: dict[str, Account] = field(default_factory=dict)


def secrets_file(home: Home) -> Path:
    """Beside MLflow's `mlflow-auth.json`, mode 0600."""
    return home.root / "secrets" / "label-studio.json"


def _account(name: str, password: str | None = None) -> Account:
    return Account(
        f"{name}@{EMAIL_DOMAIN}", password or secrets.token_urlsafe(18), secrets.token_hex(20)
    )


def load_or_create_credentials(home: Home, reviewers: tuple[str, ...]) -> StudioCredentials:
    """The stored accounts, adding any reviewer named in params but not stored yet."""
    path = secrets_file(home)
    if path.is_file():
        raw = json.loads(path.read_text(encoding="utf-8"))
        creds = StudioCredentials(
            Account(**raw["admin"]), {k: Account(**v) for k, v in raw["reviewers"].items()}
        )
    else:
        creds = StudioCredentials(_account("admin", os.environ.get(ADMIN_PASSWORD_ENV)))
    missing = [name for name in reviewers if name not in creds.reviewers]
    if not missing and path.is_file():
        return creds
    creds = StudioCredentials(creds.admin, {**creds.reviewers, **{n: _account(n) for n in missing}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the start
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(creds), out, indent=2)
    tmp.replace(path)
    return creds


def studio_bin() -> Path:
    """The `label-studio` executable of the tool environment (`make label-studio`)."""
    path = Path(os.environ.get(BIN_ENV) or REPO / ".venv-labelstudio" / "bin" / "label-studio")
    if not path.is_file():
        raise FileNotFoundError(
            f"Label Studio is not installed at {path}: run `make label-studio` in {REPO} "
            f"(or point {BIN_ENV} at a label-studio executable)"
        )
    return path


def data_dir(home: Home) -> Path:
    return home.root / "label-studio"


def url(params: Params) -> str:
    return f"http://{stack.HOST}:{params.review.port}"


def _env(home: Home, account: Account) -> dict[str, str]:
    return {
        **os.environ,
        **STUDIO_ENV,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir(home)),
        "LABEL_STUDIO_USERNAME": account.email,
        "LABEL_STUDIO_PASSWORD": account.password,
        "LABEL_STUDIO_USER_TOKEN": account.token,
    }


def _launcher() -> list[str]:
    """[python, label-studio]: the script through its own interpreter, so /proc shows this argv
    (flows/platform/stack.py recognises its process groups by their command lines)."""
    script = studio_bin()
    return [str(script.parent / "python"), str(script)]


def init_commands(params: Params) -> list[tuple[list[str], dict[str, str]]]:
    """`label-studio init` per reviewer account (the first creates the database and the
    organisation; `start` adds the admin): one Django boot each, so run once per data folder."""
    creds = load_or_create_credentials(params.home, params.review.reviewers)
    base = [
        *_launcher(),
        "init",
        "--quiet",
        "--data-dir",
        str(data_dir(params.home)),
        "--enable-legacy-api-token",
        "--log-level",
        "ERROR",
    ]
    accounts = [creds.reviewers[n] for n in params.review.reviewers]
    return [(base, _env(params.home, account)) for account in accounts]


def start_command(params: Params) -> tuple[list[str], dict[str, str]]:
    """The server's command line and environment: 127.0.0.1:`review.port`, no browser; it
    creates the admin account from LABEL_STUDIO_USERNAME/PASSWORD/USER_TOKEN if missing."""
    creds = load_or_create_credentials(params.home, params.review.reviewers)
    command = [
        *_launcher(),
        "start",
        "--no-browser",
        "--internal-host",
        stack.HOST,
        "--port",
        str(params.review.port),
        "--data-dir",
        str(data_dir(params.home)),
        "--enable-legacy-api-token",
        "--log-level",
        "WARNING",
    ]
    return command, _env(params.home, creds.admin)


def healthy(base_url: str) -> bool:
    return stack.http_ok(f"{base_url}/health") is not None


def template_database() -> Path:
    """An empty, fully migrated Label Studio database made by `make label-studio`."""
    return studio_bin().parents[1] / "template" / DATABASE


def _seed_database(folder: Path) -> None:
    """Copy the migrated template into a new data folder: Label Studio's ~300 migrations take
    minutes on a busy 2-core machine, and every fresh CASEPILOT_HOME (demo, tests) pays them."""
    import shutil

    template, target = template_database(), folder / DATABASE
    if template.is_file() and not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)


def initialise(params: Params, timeout_s: float = 600.0) -> None:
    """Run the init commands once per data folder (a marker file records the accounts done)."""
    import subprocess

    _seed_database(data_dir(params.home))
    marker = data_dir(params.home) / ".casepilot-accounts"
    done = set(marker.read_text().split()) if marker.is_file() else set()
    todo = [(c, e) for c, e in init_commands(params) if e["LABEL_STUDIO_USERNAME"] not in done]
    log = params.home.logs / "label-studio.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for command, env in todo:
        with log.open("ab") as out:
            subprocess.run(
                command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=True,
            )
        done.add(env["LABEL_STUDIO_USERNAME"])
        marker.write_text("\n".join(sorted(done)))


def start_studio(params: Params, timeout_s: float = 600.0) -> stack.Service:
    """Initialise (first time), start and wait for Label Studio; returns the managed service."""
    if not stack.port_free(params.review.port):
        raise RuntimeError(
            f"port {params.review.port} on {stack.HOST} is taken: stop what listens there or "
            "set review.port in params.yaml"
        )
    started = time.monotonic()
    initialise(params, timeout_s)
    command, env = start_command(params)
    service = stack.launch(
        "label-studio", command, env, params.home.logs / "label-studio.log", url(params)
    )
    try:
        remaining = max(timeout_s - (time.monotonic() - started), 10.0)
        stack.wait_healthy(service, lambda: healthy(service.url), remaining, poll_s=1.0)
    except BaseException:
        stack.stop_group(service)
        raise
    return service


def stop_studio(service: stack.Service) -> str:
    """Stop the server's process group; says what happened."""
    return stack.stop_group(service, timeout_s=20.0)
