"""The MLflow registry store: its client, model names, experiment, and alias lookups.

The shared ground of `register`, `resolve`, `promote`, `bootstrap` and `rollback`, kept apart
so that they can import it without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.data.contract import STAGES

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params, RegisterConfig

CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous-champion"
# Version tags written by promotion and rollback, read by the automatic rollback check
PROMOTED_AT, PREVIOUS_TAG = "casepilot.promoted_at", "casepilot.previous_champion"
RESTORED_AT, ROLLED_BACK_AT = "casepilot.restored_at", "casepilot.rolled_back_at"
# The offline gates' decision on a registered version: "passed"/"failed", and why it failed
GATE, GATE_REASONS = "casepilot.gate", "casepilot.gate_reasons"


def registry_client(params: Params) -> MlflowClient:
    """Return an MlflowClient on `params.mlflow_tracking_uri` (tracking and registry) — through
    the sign-in server when `casepilot up` runs one over it (`pipelines.registry.tracking`)."""
    from mlflow import MlflowClient

    from pipelines.registry.tracking import client_tracking_uri

    uri = client_tracking_uri(params)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registered_model_name(register: RegisterConfig, stage: str) -> str:
    """Return the registered model name of `stage`, e.g. 'casepilot-topic'
    (`register.model_prefix` + the stage name)."""
    from pipelines.stages.registry import stage_names

    if stage not in stage_names():
        raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(stage_names())}")
    return f"{register.model_prefix}{stage}"


def is_remote(uri: str) -> bool:
    """Return True for an MLflow server URI (its artifact root is the server's to choose)."""
    return uri.startswith(("http://", "https://", "databricks"))


def ensure_experiment(client: MlflowClient, params: Params, name: str | None = None) -> str:
    """Return the id of experiment `name`, creating it with artifacts under CASEPILOT_HOME.

    A database store gets `home/mlflow/artifacts/<name>` (not `./mlruns` in the working
    directory); a server store uses the server's artifact root.
    """
    name = name or params.register.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not is_remote(params.mlflow_tracking_uri):
        location = (params.home.mlflow / "artifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    """Return alias → version of registered model `name` ({} when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def stages_with_challenger(params: Params) -> tuple[str, ...]:
    """The stages whose registered model has a `challenger` now, in cascade order."""
    client = registry_client(params)
    return tuple(
        s
        for s in STAGES
        if CHALLENGER in aliases_of(client, registered_model_name(params.register, s))
    )
