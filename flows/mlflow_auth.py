"""Built-in authentication of the local `mlflow server` (`--app-name basic-auth`).

Promotion without approval must not be slipped past, so the server `casepilot up` starts refuses
anonymous calls (401) and gives every signed-in user READ only (`default_permission`). Two users
can change the registry: `reviewer` (EDIT on every registered model: sets the approval tag) and
`promoter` (MANAGE on every registered model, EDIT on experiments: registers versions, moves
aliases). Grants go through roles with the `*` pattern so they cover models registered later.

Credentials never live in the repo. The admin comes from MLflow's own `MLFLOW_AUTH_ADMIN_USERNAME`
/ `MLFLOW_AUTH_ADMIN_PASSWORD`, the others from `CASEPILOT_MLFLOW_REVIEWER_PASSWORD` /
`CASEPILOT_MLFLOW_PROMOTER_PASSWORD`; whatever is unset is generated. The first `up` writes them to
`CASEPILOT_HOME/secrets/mlflow-auth.json` (mode 0600) and later runs reuse that file: the user
store keeps the passwords it was created with. Clients sign in with `MLFLOW_TRACKING_USERNAME` /
`MLFLOW_TRACKING_PASSWORD` (`client_env`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.home import Home

ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
REVIEWER, PROMOTER = "reviewer", "promoter"
PASSWORD_ENV = {
    REVIEWER: "CASEPILOT_MLFLOW_REVIEWER_PASSWORD",
    PROMOTER: "CASEPILOT_MLFLOW_PROMOTER_PASSWORD",
}
WORKSPACE = "default"  # MLflow keeps role grants in the default workspace when workspaces are off
# role → (resource type, permission) granted on every resource of that type ("*")
ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    "casepilot-reviewers": (("registered_model", "EDIT"),),
    "casepilot-promoters": (("registered_model", "MANAGE"), ("experiment", "EDIT")),
}
MEMBERS = {REVIEWER: "casepilot-reviewers", PROMOTER: "casepilot-promoters"}


@dataclass(frozen=True)
class Credentials:
    """Who may sign in to the local MLflow server; kept only in the 0600 secrets file."""

    admin_username: str
    admin_password: str
    reviewer_password: str
    promoter_password: str
    flask_secret_key: str

    def password(self, username: str) -> str:
        by_user = {
            self.admin_username: self.admin_password,
            REVIEWER: self.reviewer_password,
            PROMOTER: self.promoter_password,
        }
        if username not in by_user:
            raise KeyError(f"no casepilot MLflow user {username!r}; known: {sorted(by_user)}")
        return by_user[username]


def secrets_file(home: Home) -> Path:
    """Where the credentials live; clients read the promoter's from it (pipelines/tracking.py)."""
    from pipelines.tracking import auth_secrets_file

    return auth_secrets_file(home)


def auth_config_file(home: Home) -> Path:
    return home.mlflow / "basic_auth.ini"


def load_or_create_credentials(home: Home) -> Credentials:
    """The stored credentials, or new ones from the environment (generated where unset)."""
    path = secrets_file(home)
    if path.is_file():
        return Credentials(**json.loads(path.read_text(encoding="utf-8")))
    env = os.environ
    creds = Credentials(
        admin_username=env.get(ADMIN_USERNAME_ENV) or "admin",
        admin_password=env.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(18),
        reviewer_password=env.get(PASSWORD_ENV[REVIEWER]) or secrets.token_urlsafe(18),
        promoter_password=env.get(PASSWORD_ENV[PROMOTER]) or secrets.token_urlsafe(18),
        flask_secret_key=secrets.token_hex(32),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    # created 0600 from the start: the passwords never sit in a world-readable file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(creds), out, indent=2)
    return creds


def write_auth_config(home: Home, creds: Credentials) -> Path:
    """Write the auth app's ini (user store under CASEPILOT_HOME, no password in it)."""
    path = auth_config_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{home.mlflow / 'basic_auth.db'}\n"
        f"admin_username = {creds.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n",
        encoding="utf-8",
    )
    return path


def server_env(home: Home, creds: Credentials) -> dict[str, str]:
    """Environment of the `mlflow server --app-name basic-auth` process."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(home, creds)),
        ADMIN_USERNAME_ENV: creds.admin_username,
        ADMIN_PASSWORD_ENV: creds.admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.flask_secret_key,
    }


def client_env(creds: Credentials, username: str) -> dict[str, str]:
    """Environment that signs MLflow clients in as `username`."""
    return {
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": creds.password(username),
    }


@contextlib.contextmanager
def signed_in(creds: Credentials, username: str) -> Iterator[None]:
    """Sign this process's MLflow clients in as `username` for the block, then restore."""
    saved = {
        key: os.environ.get(key) for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    os.environ.update(client_env(creds, username))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_registry_users(url: str, creds: Credentials) -> None:
    """Create `reviewer` and `promoter` with their roles on the server at `url`; idempotent."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(url)
    with signed_in(creds, creds.admin_username):
        for username in (REVIEWER, PROMOTER):
            try:
                client.get_user(username)
            except MlflowException:
                client.create_user(username, creds.password(username))
        roles = {role.name: role for role in client.list_roles(WORKSPACE)}
        for name, grants in ROLES.items():
            role = roles.get(name) or client.create_role(WORKSPACE, name, "casepilot registry")
            held = {
                (p.resource_type, p.resource_pattern) for p in client.list_role_permissions(role.id)
            }
            for resource_type, permission in grants:
                if (resource_type, "*") not in held:
                    client.add_role_permission(role.id, resource_type, "*", permission)
            roles[name] = role
        for username, role_name in MEMBERS.items():
            if role_name not in {r.name for r in client.list_user_roles(username)}:
                client.assign_role(username, roles[role_name].id)
