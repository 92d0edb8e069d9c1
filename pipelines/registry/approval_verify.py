"""What the promote step checks before `champion` moves: the signed request and approval.

The version's tags only point the way (MLflow lets anyone with EDIT on the model change them);
what counts are the ledger runs (`pipelines.registry.approval_ledger`): the request run must
bind this exact version to the SHA-256 of the evidence the version shows now, and an approval
run must name that request run, be signed by a reviewer, and by neither the requester nor the
promoter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipelines.registry.approval_ledger import (
    AUTHENTICATED,
    UNAUTHENTICATED,
    Ledgers,
    evidence_sha256,
    read_ledgers,
    signer_of,
)
from pipelines.registry.audit import version_url

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from pipelines.config import Params

REQUESTED = "casepilot.promotion_requested"
REQUESTED_AT = "casepilot.promotion_requested_at"
REQUESTED_BY = "casepilot.promotion_requested_by"
REQUEST_RUN = "casepilot.promotion_request_run"  # the signed request run in the ledger
EVIDENCE = "casepilot.promotion_evidence"  # the decision as JSON
EVIDENCE_SHA = "casepilot.evidence_sha256"
LINK = "casepilot.promotion_link"  # this version's page in the MLflow UI
APPROVED_AT = "casepilot.approved_at"
APPROVAL_RUN = "casepilot.approval_run_id"
BOOTSTRAP = "casepilot.bootstrap"
README_SECTION = "README.md, 'Promotion and approval'"


class PromotionRefused(PermissionError):
    """The challenger may not become champion: no promotion request, or no reviewer approval."""


class UnapprovedChampion(PermissionError):
    """`champion` points at a version nobody approved (nor bootstrapped): refuse to load it."""


@dataclass(frozen=True)
class Approval:
    """Who approved a version and when; `bootstrap` for a first champion set by an operator.

    `store` says how the approver's identity is known: `MLflow basic-auth` (the server signed
    them in and only they can write their ledger) or `unauthenticated store` (declared).
    """

    by: str
    at: str | None
    bootstrap: bool = False
    run_id: str | None = None
    requested_by: str | None = None
    store: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    """The request run a version's tags point at, checked against the version."""

    run_id: str
    requested_by: str
    evidence_sha256: str


def iso_time(millis: int | None) -> str | None:
    """A run's start time (ms since the epoch) as ISO 8601 UTC, like every casepilot time."""
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def _binding_mismatch(run: Run, expected: Mapping[str, str]) -> str | None:
    """Which bound param of `run` differs from `expected`, as a sentence; None if all match."""
    logged = run.data.params
    for key, value in expected.items():
        if logged.get(key) != value:
            return f"it binds {key}={logged.get(key)!r}, the current request has {value!r}"
    return None


def current_request(
    client: MlflowClient, params: Params, version: ModelVersion, ledgers: Ledgers | None
) -> SignedRequest:
    """The signed request for `version` as it stands, or PromotionRefused saying what is off."""
    from mlflow.exceptions import MlflowException

    name, number, tags = version.name, str(version.version), version.tags or {}
    where = f"{name} version {number} ({version_url(params, name, number)})"
    if tags.get(REQUESTED) != "true" or not tags.get(REQUEST_RUN):
        raise PromotionRefused(
            f"{where} has no promotion request: only a challenger that beat the champion on "
            "shadow traffic gets one (the promote flow records it with its evidence)"
        )
    sha = evidence_sha256(tags.get(EVIDENCE, ""))
    try:
        run = client.get_run(tags[REQUEST_RUN])
    except MlflowException as err:
        raise PromotionRefused(f"{where}: its request run is unreadable ({err})") from None
    root = read_ledgers(client)
    try:
        requester = signer_of(run, ledgers, root.root_id if root else None)
    except LookupError as err:
        raise PromotionRefused(f"{where}: its request is not signed: {err}") from None
    mismatch = _binding_mismatch(run, {"model": name, "version": number, "evidence_sha256": sha})
    if mismatch:
        raise PromotionRefused(
            f"{where}: the request run {run.info.run_id} does not match this version's evidence "
            f"({mismatch}); record a new promotion request"
        )
    return SignedRequest(run.info.run_id, requester, sha)


def check_approval(
    client: MlflowClient,
    params: Params,
    version: ModelVersion,
    *,
    promoter: str,
    ledgers: Ledgers | None,
) -> Approval:
    """The approval that lets `version` become champion, or PromotionRefused saying why not.

    `ledgers` are the signed ledgers (None: a store without sign-in, names are declared);
    `promoter` is who runs the promotion — as the server signed them in, when it does.
    """
    name, number = version.name, str(version.version)
    request = current_request(client, params, version, ledgers)
    root = read_ledgers(client)
    experiments = sorted(ledgers.owners) if ledgers else ([root.root_id] if root else [])
    runs = client.search_runs(
        experiments,
        filter_string=(
            f"params.request_run_id = '{request.run_id}' and tags.`casepilot.event` = 'approval'"
        ),
        order_by=["attributes.start_time ASC"],
    )
    expected = {"model": name, "version": number, "evidence_sha256": request.evidence_sha256}
    refusals = []
    for run in runs:
        approver = signer_of(run, ledgers, root.root_id if root else None)
        reason = _binding_mismatch(run, expected)
        if reason is None and ledgers is not None and approver not in ledgers.reviewers:
            reason = f"{approver!r} is not a reviewer"
        if reason is None and approver == request.requested_by:
            reason = f"{approver!r} requested this promotion and cannot approve it"
        if reason is None and approver == promoter:
            reason = f"{approver!r} runs the promotion and cannot also approve it"
        if reason is None:
            store = AUTHENTICATED if ledgers is not None else UNAUTHENTICATED
            at = iso_time(run.info.start_time)
            return Approval(approver, at, run_id=run.info.run_id,
                            requested_by=request.requested_by, store=store)  # fmt: skip
        refusals.append(f"approval run {run.info.run_id} by {approver!r}: {reason}")
    where = f"{name} version {number} ({version_url(params, name, number)})"
    raise PromotionRefused(
        f"{where} is not approved"
        + (f" ({'; '.join(refusals)})" if refusals else "")
        + f": a reviewer other than {request.requested_by!r} (who requested it) and "
        f"{promoter!r} (who promotes) runs `casepilot approve {_stage_of(params, name)} "
        f"--version {number}` signed in as themselves ({README_SECTION})"
    )


def _stage_of(params: Params, name: str) -> str:
    return name.removeprefix(params.register.model_prefix)


_VERIFIED: set[tuple[str, str, str, str]] = set()  # (server, model, version, approval run)


def unsigned_champion(params: Params, version: ModelVersion) -> str | None:
    """Why a champion carrying an approval tag lacks a signed approval; None when it has one.

    Under sign-in, tags and aliases can be set by hand; the approval run that promotion recorded
    on the version (`casepilot.approval_run_id`) must sit in a reviewer's ledger and approve this
    model and version. Without sign-in there is nothing more to check than the tags (None).
    A verified run is remembered per process, so a polling service asks the server once.
    """
    from mlflow.exceptions import MlflowException

    from pipelines.registry.approval_ledger import authenticated_user
    from pipelines.registry.store import registry_client
    from pipelines.registry.tracking import client_tracking_uri

    name, number, tags = version.name, str(version.version), version.tags or {}
    uri = client_tracking_uri(params)
    key = (uri, name, number, tags.get(APPROVAL_RUN, ""))
    if key in _VERIFIED or authenticated_user(uri) is None:
        return None
    if not key[3]:
        return f"no signed approval (no tag `{APPROVAL_RUN}`: it was not promoted)"
    client = registry_client(params)
    try:
        run = client.get_run(key[3])
    except MlflowException as err:
        return f"its approval run {key[3]} is unreadable ({err.error_code})"
    ledgers = read_ledgers(client)
    owner = ledgers.owners.get(run.info.experiment_id) if ledgers else None
    if ledgers is None or owner not in ledgers.reviewers:
        return f"its approval run {key[3]} is not in a reviewer's ledger"
    approved = (run.data.params.get("model"), run.data.params.get("version"))
    if approved != (name, number):
        return f"its approval run {key[3]} approves {approved[0]} v{approved[1]}, not this version"
    _VERIFIED.add(key)
    return None
