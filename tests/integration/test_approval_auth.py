"""Approvals against a real `mlflow server --app-name basic-auth` with casepilot's users.

One server for the module (started by flows/platform/services.py on 127.0.0.1, users, roles and
approvals
ledgers set up by flows/platform/mlflow_auth.py exactly as `casepilot up` does). The clients sign in
through MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD: the server decides who they are.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.platform import mlflow_auth
from flows.platform.services import free_port, start_mlflow_server, stop_mlflow_server
from pipelines.config import Params, params_from_mapping
from pipelines.home import Home
from pipelines.registry.approval import (
    APPROVAL_RUN,
    REQUEST_RUN,
    PromotionRefused,
    SignIn,
    UnapprovedChampion,
    approve_request,
    request_promotion,
)
from pipelines.registry.approval_ledger import (
    AUTHENTICATED,
    ROOT,
    read_ledgers,
    signed_in,
    stored_sign_in,
)
from pipelines.registry.register import (
    CHALLENGER,
    CHAMPION,
    aliases_of,
    bootstrap_champion,
    promote_challenger,
    registry_client,
)
from pipelines.registry.resolve import refuse_unapproved_champion
from tests.integration.test_registry import winning_decision

pytestmark = pytest.mark.slow  # one real MLflow server with sign-in for the module
STAGE = "topic"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Params, object, str]]:
    """(params, credentials, server URL) of a sign-in server over a fresh home's store."""
    home = Home(tmp_path_factory.mktemp("auth-home")).ensure()
    params = params_from_mapping({"register": {"server_port": free_port()}}, home=home, env={})
    patch = pytest.MonkeyPatch()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        patch.delenv(key, raising=False)
    creds = mlflow_auth.load_or_create_credentials(home)
    info = start_mlflow_server(params, auth_env=mlflow_auth.server_env(home, creds), timeout_s=240)
    try:
        mlflow_auth.ensure_registry_users(info.url, creds)
        yield params, creds, info.url
    finally:
        stop_mlflow_server(params)
        patch.undo()


def as_user(creds, username: str) -> SignIn:
    return SignIn(username, creds.password(username))


def _http(url: str, body: dict, auth: tuple[str, str] | None) -> int:
    """Status of a JSON POST to the server, anonymous or with basic-auth."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _new_version(params: Params, challenger: bool = True) -> str:
    """A version of the topic model (a tiny logged artifact), as the promoter registers it."""
    client = registry_client(params)
    name = f"{params.register.model_prefix}{STAGE}"
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    experiment = client.get_experiment_by_name("approval-auth-models")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment("approval-auth-models")
    )
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "weights", "model/weights.txt")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    if challenger:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def _forge_approval(client, experiment_id: str, name: str, version: str) -> None:
    """An approval run written by hand into `experiment_id`, bound to the current request."""
    from mlflow.entities import Param

    tags = client.get_model_version(name, version).tags
    run = client.create_run(experiment_id, tags={"casepilot.event": "approval"})
    binding = {"model": name, "version": version, "stage": STAGE,
               "evidence_sha256": tags["casepilot.evidence_sha256"],
               "request_run_id": tags[REQUEST_RUN]}  # fmt: skip
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in binding.items()])


def test_only_a_reviewer_other_than_requester_and_promoter_can_approve(signed) -> None:
    params, creds, url = signed
    name = f"{params.register.model_prefix}{STAGE}"
    promoter, reviewer = as_user(creds, "promoter"), as_user(creds, "reviewer")
    with signed_in(promoter):
        v1 = _new_version(params, challenger=False)
        bootstrap_champion(params, by="ops", stages=[STAGE])
        v2 = _new_version(params)
        request = request_promotion(params, STAGE, winning_decision(params))
    assert (request.version, request.requested_by) == (v2, "promoter")
    client = registry_client(params)
    ledgers = read_ledgers(client)
    assert ledgers.reviewers == {"reviewer"}
    reviewer_ledger = ledgers.ledger_of("reviewer")

    # anonymous: the server refuses the sign-in and any write into a ledger
    create_run = f"{url}/api/2.0/mlflow/runs/create"
    assert _http(create_run, {"experiment_id": reviewer_ledger}, None) == 401
    with pytest.raises(PermissionError, match="refused the sign-in"):
        approve_request(params, STAGE, v2, sign_in=SignIn("reviewer", "not-the-password"))
    # the promoter: not a reviewer, and the server will not let it write a reviewer's ledger
    with pytest.raises(PromotionRefused, match="'promoter' is not a reviewer"):
        approve_request(params, STAGE, v2, sign_in=promoter)
    promoter_auth = ("promoter", creds.promoter_password)
    assert _http(create_run, {"experiment_id": reviewer_ledger}, promoter_auth) == 403
    with signed_in(promoter):
        _forge_approval(registry_client(params), ledgers.ledger_of("promoter"), name, v2)
        with pytest.raises(PromotionRefused, match="'promoter' is not a reviewer"):
            promote_challenger(params, STAGE)  # its own ledger proves it wrote it: no reviewer
        registry_client(params).set_model_version_tag(name, v2, "casepilot.approved_by", "reviewer")
        with pytest.raises(PromotionRefused, match="is not approved"):
            promote_challenger(params, STAGE)  # a tag says nothing
    assert aliases_of(client, name)[CHAMPION] == v1

    # the reviewer approves v2; v3 is registered and requested: v2's approval does not carry over
    approval = approve_request(params, STAGE, v2, sign_in=reviewer)
    assert (approval.by, approval.requested_by, approval.store) == ("reviewer", "promoter",
                                                                   AUTHENTICATED)  # fmt: skip
    with signed_in(promoter):
        v3 = _new_version(params)
        request_promotion(params, STAGE, winning_decision(params))
        with pytest.raises(PromotionRefused, match=f"{name} version {v3} .*is not approved"):
            promote_challenger(params, STAGE)
        v2_request = registry_client(params).get_model_version(name, v2).tags[REQUEST_RUN]
        registry_client(params).set_model_version_tag(name, v3, REQUEST_RUN, v2_request)
        with pytest.raises(PromotionRefused, match="binds version='2'"):
            promote_challenger(params, STAGE)  # pointing v3 at v2's request does not help
    assert aliases_of(client, name) == {CHAMPION: v1, CHALLENGER: v3}

    # a reviewer who requested cannot approve their own request, by the API or by hand
    with signed_in(reviewer):
        request_promotion(params, STAGE, winning_decision(params))
    with pytest.raises(PromotionRefused, match="'reviewer' requested the promotion"):
        approve_request(params, STAGE, v3, sign_in=reviewer)
    with signed_in(reviewer):
        _forge_approval(registry_client(params), reviewer_ledger, name, v3)
    with signed_in(promoter), pytest.raises(PromotionRefused, match="requested this promotion"):
        promote_challenger(params, STAGE)

    # the promoter requests, the reviewer approves, a new request with new evidence voids it
    with signed_in(promoter):
        request_promotion(params, STAGE, winning_decision(params))
    approve_request(params, STAGE, v3, sign_in=reviewer)
    with signed_in(promoter):
        request_promotion(params, STAGE, winning_decision(params, cases=80))
        with pytest.raises(PromotionRefused, match="is not approved"):
            promote_challenger(params, STAGE)
    approved = approve_request(params, STAGE, v3, sign_in=reviewer)
    with signed_in(promoter):
        moved = promote_challenger(params, STAGE, promoted_by="someone-else")
    assert (moved.version, moved.previous, moved.approved_by) == (v3, v1, "reviewer")
    assert aliases_of(client, name)[CHAMPION] == v3
    audit = client.get_run(moved.audit_run_id).data.tags
    assert audit["casepilot.promoted_by"] == "promoter"  # the server's name, not the caller's
    assert audit["casepilot.requested_by"] == "promoter"
    assert audit["casepilot.approval_store"] == AUTHENTICATED
    assert audit[APPROVAL_RUN] == approved.run_id

    # the loader: a signed champion loads; one moved by hand with a tag (or a borrowed approval
    # run) is refused, though the promoter may set tags and aliases
    refuse_unapproved_champion(params, STAGE, client.get_model_version(name, v3))
    with signed_in(promoter):
        by_hand = registry_client(params)
        by_hand.set_registered_model_alias(name, CHAMPION, v2)
        with pytest.raises(UnapprovedChampion, match="no signed approval"):
            refuse_unapproved_champion(params, STAGE, by_hand.get_model_version(name, v2))
        by_hand.set_model_version_tag(name, v2, APPROVAL_RUN, approved.run_id)
        with pytest.raises(UnapprovedChampion, match=f"approves {name} v{v3}, not this version"):
            refuse_unapproved_champion(params, STAGE, by_hand.get_model_version(name, v2))


def test_the_registry_and_the_server_log_hold_no_secret(signed) -> None:
    """After the approvals above: no password or key in any tag, param, description or log."""
    params, creds, url = signed
    secrets = [creds.admin_password, creds.reviewer_password, creds.promoter_password,
               creds.flask_secret_key]  # fmt: skip
    written: list[str] = []
    with signed_in(as_user(creds, creds.admin_username)):
        client = registry_client(params)
        for model in client.search_registered_models():
            written += [model.description or "", json.dumps(model.tags)]
            for version in client.search_model_versions(f"name = '{model.name}'"):
                written += [version.description or "", json.dumps(version.tags), version.source]
        experiments = client.search_experiments()
        assert ROOT in {e.name for e in experiments}
        for experiment in experiments:
            written.append(json.dumps(experiment.tags))
            for run in client.search_runs([experiment.experiment_id]):
                written += [json.dumps(run.data.tags), json.dumps(run.data.params)]
    written.append((params.home.logs / "mlflow-server.log").read_text(errors="replace"))
    assert len(written) > 10 and any("promotion-request" in text for text in written)
    for secret in secrets:
        assert len(secret) >= 20
        assert not any(secret in text for text in written)


def test_credentials_are_never_in_a_repr(signed) -> None:
    _, creds, _ = signed
    sign_in = as_user(creds, "reviewer")
    assert creds.reviewer_password not in repr(sign_in) and "reviewer" in repr(sign_in)
    for secret in (creds.admin_password, creds.promoter_password, creds.flask_secret_key):
        assert secret not in repr(creds) and secret not in str(creds)


def test_the_secrets_file_is_0600_in_a_0700_folder(signed) -> None:
    params, creds, _ = signed
    path = mlflow_auth.secrets_file(params.home)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Path(path).parent.stat().st_mode & 0o777 == 0o700
    assert stored_sign_in(params.home) == as_user(creds, "reviewer")  # what the demo signs in as
    with pytest.raises(PermissionError, match="no stored password for MLflow user 'mallory'"):
        stored_sign_in(params.home, "mallory")
