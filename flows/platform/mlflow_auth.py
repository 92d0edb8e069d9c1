"""Built-in authentication of the local `mlflow server` (`--app-name basic-auth`).

Promotion without approval must not be slipped past, so the server `casepilot up` starts refuses
anonymous calls (401) and gives every signed-in user READ only (`default_permission`). Two users
can change the registry: `reviewer` (EDIT on every registered model) and `promoter` (MANAGE on
every registered model: registers versions, moves aliases). Grants go through roles with the `*`
pattern so they cover models registered later.

Approvals (`pipelines.registry.approval_ledger`): every user gets a ledger experiment
`casepilot-approvals/<user>` that only they may write, mapped to them in the admin-only root
experiment `casepilot-approvals`, which also names the reviewers. So the promoter holds no
experiment-wide EDIT (it could write a reviewer's ledger): it gets EDIT on each other experiment
that exists when `up` runs, and MLflow makes it MANAGE of the experiments it creates.

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
from dataclasses import asdict, dataclass, field
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
    "casepilot-promoters": (("registered_model", "MANAGE"),),
}
# grants earlier versions gave that must go: an experiment-wide EDIT writes every ledger
REVOKED: dict[str, tuple[tuple[str, str], ...]] = {"casepilot-promoters": (("experiment", "*"),)}
MEMBERS = {REVIEWER: "casepilot-reviewers", PROMOTER: "casepilot-promoters"}


@dataclass(frozen=True)
class Credentials:
    """Who may sign in to the local MLflow server; kept only in the 0600 secrets file."""

    admin_username: str
    admin_password: str = field(repr=False)
    reviewer_password: str = field(repr=False)
    promoter_password: str = field(repr=False)
    flask_secret_key: str = field(repr=False)

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
    """Where the credentials live; clients read the promoter's (pipelines/registry/tracking.py)."""
    from pipelines.registry.tracking import auth_secrets_file

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
        "grant_default_workspace_access = false\n"
        # MLflow re-hashes the password (PBKDF2) on every request unless it caches the check:
        # ~1.5 s per call on a busy box. The cache is per process, keyed by an HMAC of the
        # credential, and dropped at once when a password or user changes.
        "auth_cache_ttl_seconds = 60\n",
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
    from pipelines.registry.approval_ledger import SignIn
    from pipelines.registry.approval_ledger import signed_in as signed_in_as

    with signed_in_as(SignIn(username, creds.password(username))):
        yield


def ensure_registry_users(url: str, creds: Credentials) -> None:
    """Create `reviewer` and `promoter` with their roles and approvals ledgers; idempotent."""
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
            for p in client.list_role_permissions(role.id):
                if (p.resource_type, p.resource_pattern) in REVOKED.get(name, ()):
                    client.remove_role_permission(p.id)
            roles[name] = role
        for username, role_name in MEMBERS.items():
            if role_name not in {r.name for r in client.list_user_roles(username)}:
                client.assign_role(username, roles[role_name].id)
    ensure_approval_ledgers(url, creds)


def ensure_approval_ledgers(url: str, creds: Credentials) -> dict[str, str]:
    """Give each user a ledger only they may write, mapped in the root; user → experiment id.

    Run as the admin right after `ensure_registry_users`. Idempotent. A ledger that exists
    unmapped with runs in it (written behind the server's back) is refused, not adopted.
    """
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    from pipelines.registry.approval_ledger import LEDGER_PREFIX, OWNER_TAG, REVIEWERS_TAG, ROOT

    auth, users = AuthServiceClient(url), (creds.admin_username, REVIEWER, PROMOTER)
    with signed_in(creds, creds.admin_username):
        client = MlflowClient(tracking_uri=url)
        root = client.get_experiment_by_name(ROOT)
        root_id = root.experiment_id if root else client.create_experiment(ROOT)
        mapped = {
            v: k.removeprefix(OWNER_TAG)
            for k, v in ((root.tags or {}).items() if root else ())
            if k.startswith(OWNER_TAG)
        }
        ledgers = {
            user: mapped.get(user) or _new_ledger(client, LEDGER_PREFIX + user) for user in users
        }
        for user, experiment_id in ledgers.items():
            client.set_experiment_tag(root_id, f"{OWNER_TAG}{experiment_id}", user)
        client.set_experiment_tag(root_id, REVIEWERS_TAG, REVIEWER)
        for owner, experiment_id in {**ledgers, creds.admin_username: root_id}.items():
            _only_owner_writes(auth, experiment_id, owner, users, creds.admin_username)
        _promoter_edits_the_rest(client, auth, {root_id, *ledgers.values()})
    return ledgers


def _new_ledger(client: object, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is None:
        return client.create_experiment(name)
    if client.search_runs([existing.experiment_id], max_results=1):
        raise RuntimeError(
            f"experiment {name!r} already holds runs that `casepilot up` did not sign: refusing "
            "to trust it as an approvals ledger; rename or delete it in the MLflow UI, then run "
            "`casepilot up` again"
        )
    return existing.experiment_id


def _only_owner_writes(
    auth: object, experiment_id: str, owner: str, users: tuple[str, ...], admin: str
) -> None:
    """Grant `owner` EDIT on the experiment and make sure no other user can write it."""
    if owner != admin:
        _grant_edit(auth, owner, experiment_id)
    for user in users:
        if user in (owner, admin):
            continue
        level = auth.get_user_permission(user, "experiment", experiment_id).permission
        if level not in ("READ", "NO_PERMISSIONS", "DENY"):
            auth.revoke_user_permission(user, "experiment", experiment_id)
            level = auth.get_user_permission(user, "experiment", experiment_id).permission
        if level not in ("READ", "NO_PERMISSIONS", "DENY"):
            raise RuntimeError(
                f"MLflow user {user!r} can still write experiment {experiment_id} ({level}, from "
                f"a role): remove that grant, or {owner!r}'s approvals could be forged"
            )


def _promoter_edits_the_rest(client: object, auth: object, ledgers: set[str]) -> None:
    """EDIT for the promoter on every existing experiment that is not a ledger or the root."""
    for experiment in client.search_experiments():
        if experiment.experiment_id in ledgers:
            continue
        _grant_edit(auth, PROMOTER, experiment.experiment_id)


def _grant_edit(auth: object, user: str, experiment_id: str) -> None:
    """EDIT for `user` on the experiment unless it already has it (the server refuses a second
    grant with RESOURCE_ALREADY_EXISTS, so `casepilot up` run again must not ask twice)."""
    level = auth.get_user_permission(user, "experiment", experiment_id).permission
    if level not in ("EDIT", "MANAGE"):
        auth.grant_user_permission(user, "experiment", experiment_id, "EDIT")
