"""Signed approval ledgers: who requested and who approved, as the MLflow server authenticated it.

MLflow cannot say who set a model version tag, and a run's `user_id` is whatever the client
sends (the `mlflow.user` tag), not who signed in. What its basic-auth server does enforce is
write permission per experiment. So `casepilot up` gives every MLflow user a ledger experiment,
`casepilot-approvals/<user>`, that only that user (and the admin) may write: a run in it was
created by that user. The root experiment `casepilot-approvals`, writable by the admin alone,
maps ledger experiment ids to users and names the reviewers (flows/platform/mlflow_auth.py
writes it).
Requests and approvals are runs in the signer's ledger; their binding (model, version, the
SHA-256 of the evidence, the request run) is logged as run params, which MLflow never lets
anyone change once logged.

Without a sign-in server (the embedded SQLite store) nobody is authenticated: requests and
approvals are runs in the root experiment carrying the *declared* signer, and every promotion
audit says `unauthenticated store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.registry.store import ensure_experiment, is_remote

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from pipelines.config import Params
    from pipelines.home import Home

ROOT = "casepilot-approvals"
LEDGER_PREFIX = f"{ROOT}/"  # + username: that user's ledger
OWNER_TAG = "casepilot.ledger."  # root tag `casepilot.ledger.<experiment id>` = username
REVIEWERS_TAG = "casepilot.reviewers"  # root tag: comma-separated usernames
SIGNER = "casepilot.signer"  # run tag: who signed (declared; verified from the ledger)
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
UNAUTHENTICATED = "unauthenticated store"
AUTHENTICATED = "MLflow basic-auth"


@dataclass(frozen=True)
class SignIn:
    """Credentials of one MLflow user; the password never appears in a repr or a log."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Ledgers:
    """The root's map: ledger experiment id → its owner, and who the reviewers are."""

    root_id: str
    owners: Mapping[str, str]
    reviewers: frozenset[str]

    def ledger_of(self, username: str) -> str:
        """The experiment id of `username`'s ledger, or PermissionError naming the fix."""
        for experiment_id, owner in self.owners.items():
            if owner == username:
                return experiment_id
        raise PermissionError(
            f"MLflow user {username!r} has no approvals ledger ({LEDGER_PREFIX}{username}): "
            "`casepilot up` creates one for admin, reviewer and promoter; sign in as one of them"
        )


def stored_sign_in(home: Home, username: str = "reviewer") -> SignIn:
    """`username`'s credentials from the 0600 file `casepilot up` keeps (for scripted reviews
    such as the demo's, which say loudly that they are automated)."""
    import json

    from pipelines.registry.tracking import auth_secrets_file

    path = auth_secrets_file(home)
    try:
        password = json.loads(path.read_text(encoding="utf-8"))[f"{username}_password"]
    except (OSError, ValueError, KeyError) as err:
        raise PermissionError(
            f"no stored password for MLflow user {username!r} in {path} ({type(err).__name__}); "
            "run `casepilot up` first, or pass the reviewer's own credentials"
        ) from None
    return SignIn(username, password)


def evidence_sha256(evidence_json: str) -> str:
    """SHA-256 of the evidence exactly as the version's tag holds it (what a reviewer saw)."""
    return hashlib.sha256(evidence_json.encode("utf-8")).hexdigest()


@contextmanager
def signed_in(sign_in: SignIn | None) -> Iterator[None]:
    """Sign this process's MLflow clients in as `sign_in` for the block (None: leave as is)."""
    if sign_in is None:
        yield
        return
    from pipelines.home import environment

    with environment({USERNAME_ENV: sign_in.username, PASSWORD_ENV: sign_in.password}):
        yield


def authenticated_user(tracking_uri: str) -> str | None:
    """The user the MLflow server signs this client in as; None for a store without sign-in.

    Asks the server (`/api/2.0/mlflow/users/current`), so the name is the server's, not ours.
    """
    if not is_remote(tracking_uri):
        return None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    response = http_request(
        get_default_host_creds(tracking_uri), "/api/2.0/mlflow/users/current", "GET"
    )
    if response.status_code == 404:
        return None  # a server without the basic-auth app
    if response.status_code == 401:
        raise PermissionError(
            f"the MLflow server at {tracking_uri} refused the sign-in (401): set "
            f"{USERNAME_ENV}/{PASSWORD_ENV} to a casepilot MLflow user (the passwords are in "
            "CASEPILOT_HOME/secrets/mlflow-auth.json)"
        )
    response.raise_for_status()
    return str(response.json()["user"]["username"])


def read_ledgers(client: MlflowClient) -> Ledgers | None:
    """The root's ledger map, or None when the store has no root experiment yet."""
    root = client.get_experiment_by_name(ROOT)
    if root is None:
        return None
    tags = root.tags or {}
    owners = {k.removeprefix(OWNER_TAG): v for k, v in tags.items() if k.startswith(OWNER_TAG)}
    reviewers = frozenset(r.strip() for r in tags.get(REVIEWERS_TAG, "").split(",") if r.strip())
    return Ledgers(root.experiment_id, owners, reviewers)


def signed_ledgers(client: MlflowClient, signer: str | None) -> Ledgers | None:
    """The ledgers when `signer` was authenticated by the server; None in the local mode.

    An authenticating server that `casepilot up` did not set up (no ledgers) is refused.
    """
    if signer is None:
        return None
    ledgers = read_ledgers(client)
    if ledgers is None or not ledgers.owners:
        raise PermissionError(
            f"the MLflow server signs users in but has no approvals ledgers (experiment {ROOT!r} "
            "with casepilot.ledger.* tags); start it with `casepilot up`, which creates them"
        )
    return ledgers


def record_signed_run(
    client: MlflowClient,
    params: Params,
    ledgers: Ledgers | None,
    signer: str,
    event: str,
    binding: Mapping[str, str],
) -> str:
    """Create a finished run for `event` in `signer`'s ledger (the root when local); its id.

    `binding` is logged as params (immutable once logged); the event and signer as tags.
    """
    from mlflow.entities import Param

    experiment_id = (
        ledgers.ledger_of(signer) if ledgers else ensure_experiment(client, params, ROOT)
    )
    tags = {
        "casepilot.event": event,
        SIGNER: signer,
        "casepilot.store": AUTHENTICATED if ledgers else UNAUTHENTICATED,
    }
    name = f"{event}-{binding.get('model', '')}-v{binding.get('version', '')}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    try:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in binding.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


def signer_of(run: Run, ledgers: Ledgers | None, root_id: str | None) -> str:
    """Who signed `run`: its ledger's owner, or (local mode) the declared signer in the root.

    Raises LookupError when the run is in neither, so it proves nothing.
    """
    experiment_id = run.info.experiment_id
    if ledgers is not None:
        if experiment_id not in ledgers.owners:
            raise LookupError(f"run {run.info.run_id} is not in an approvals ledger")
        return ledgers.owners[experiment_id]
    if experiment_id != root_id or not run.data.tags.get(SIGNER):
        raise LookupError(f"run {run.info.run_id} is not in experiment {ROOT!r}")
    return run.data.tags[SIGNER]
