"""The MLflow model registry for every stage: register with lineage, gate, alias, load by alias.

Each stage folder (safetensors weights, tokenizer files, `stage.json`) is packaged as an MLflow
pyfunc model whose code is a small "model from code" file stored with it (nothing pickled):
its `load_context` calls `pipelines.stages.<stage>.load` on the folder, so
`mlflow.pyfunc.load_model("models:/casepilot-topic@champion")` works, while the cascade loads the
downloaded folder itself (`resolve_cascade_dirs`). A version that passes the offline gates gets
the alias `challenger`; only promotion (`bootstrap_champion`, `promote_challenger`) ever moves
`champion`.

This module registers and gates; it also re-exports the registry's whole public surface, so
`from pipelines.registry.register import …` stays the one import for callers: `store` (client,
names, aliases), `model` (the pyfunc side), `resolve` (alias → downloaded folder), `bootstrap`
and `promote` (champion moves).
The model-from-code file stored with every registered version imports `load_stage_folder` and
`predict_with_stage` from here: keep them exported.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.evaluate.scenarios.gate import ScenarioGate, scenario_gate
from pipelines.evaluate.scenarios.record import log_scenario_reports, scenario_description
from pipelines.quantize.report import quantization_tags
from pipelines.registry.bootstrap import bootstrap_champion
from pipelines.registry.lineage import Lineage
from pipelines.registry.model import (
    STAGE_ARTIFACT,
    _package,
    load_stage_folder,
    predict_with_stage,
)
from pipelines.registry.promote import Promotion, promote_challenger
from pipelines.registry.resolve import ResolvedStage, resolve_cascade_dirs, resolve_stage
from pipelines.registry.store import (
    CHALLENGER,
    CHAMPION,
    GATE,
    GATE_REASONS,
    PREVIOUS_CHAMPION,
    aliases_of,
    ensure_experiment,
    is_remote,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS_CHAMPION",
    "STAGE_ARTIFACT",
    "GateResult",
    "Promotion",
    "RegisteredVersion",
    "ResolvedStage",
    "aliases_of",
    "bootstrap_champion",
    "ensure_experiment",
    "is_remote",
    "load_stage_folder",
    "meets_thresholds",
    "predict_with_stage",
    "promote_challenger",
    "register_stage",
    "registered_model_name",
    "registry_client",
    "resolve_cascade_dirs",
    "resolve_stage",
]


@dataclass(frozen=True)
class GateResult:
    """An offline gate's decision and, when it fails, why."""

    passed: bool
    reasons: tuple[str, ...] = ()


def meets_thresholds(metrics: Mapping[str, Any], thresholds: Mapping[str, float]) -> GateResult:
    """Return whether every thresholded metric is present and at least its minimum."""
    reasons = []
    for name, minimum in sorted(thresholds.items()):
        value = metrics.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            reasons.append(f"{name}: missing (needs >= {minimum:g})")
        elif value < minimum:
            reasons.append(f"{name}: {value:.4f} < {minimum:g}")
    return GateResult(passed=not reasons, reasons=tuple(reasons))


@dataclass(frozen=True)
class RegisteredVersion:
    """A stage version just registered: its name, version, aliases and gate decision."""

    stage: str
    name: str
    version: str
    aliases: tuple[str, ...]
    gate: GateResult
    run_id: str
    model_id: str
    # the scenario gate's record (its `casepilot.scenario_*` tags); None when it did not run
    scenario_gate: dict[str, str] | None = None


def _metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    return {
        f"metric.{name}": str(value)
        for name, value in metrics.items()
        if isinstance(value, str | int | float | bool)
    }


def register_stage(
    params: Params,
    stage: str,
    model_dir: Path,
    *,
    metrics: Mapping[str, Any],
    lineage: Lineage,
    lock_file: Path | None = None,
) -> RegisteredVersion:
    """Register `model_dir` as a new version of `casepilot-<stage>`, tagged with its lineage.

    The version gets `challenger` when `metrics` meet `params.register.gates[stage]` and the
    scenario gate passes (`pipelines.evaluate.scenarios.gate`: the suite with this version
    swapped into the champion cascade, recorded in `casepilot.scenario_*` tags, the version
    description and the run's artifacts `scenarios/`); otherwise no alias and the reasons in
    the tag `casepilot.gate_reasons`. Never touches `champion`. `lock_file` (the workspace's
    dvc.lock) is logged on the registration run as `lineage/dvc.lock`: with the git commit tag
    it reproduces this version (`dvc repro`).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "stage.json").is_file():
        raise FileNotFoundError(
            f"{model_dir}/stage.json missing: not a trained stage folder; train it with "
            f"`casepilot train {stage} --out DIR` and register that DIR"
        )
    name = registered_model_name(params.register, stage)
    gate, scenarios = _gates(params, stage, model_dir, metrics)
    tags = {
        "casepilot.stage": stage,
        **lineage.tags(),
        **_metric_tags(metrics),
        GATE: "passed" if gate.passed else "failed",
        GATE_REASONS: "; ".join(gate.reasons),
        **quantization_tags(model_dir),
        **(scenarios.tags() if scenarios is not None else {}),
    }
    client = registry_client(params)
    experiment_id = ensure_experiment(client, params)
    run = client.create_run(experiment_id, run_name=f"register-{stage}", tags=tags)
    run_id = run.info.run_id
    try:
        _log_registration(client, run_id, metrics, scenarios, lock_file)
        model_id = _log_stage_model(client, experiment_id, stage, run_id, tags, model_dir)
        version = _create_version(client, name, stage, run_id, model_id, tags, scenarios)
        if gate.passed:
            client.set_registered_model_alias(name, CHALLENGER, version)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return RegisteredVersion(
        stage=stage,
        name=name,
        version=version,
        aliases=(CHALLENGER,) if gate.passed else (),
        gate=gate,
        run_id=run_id,
        model_id=model_id,
        scenario_gate=scenarios.tags() if scenarios is not None else None,
    )


def _log_registration(
    client: MlflowClient,
    run_id: str,
    metrics: Mapping[str, Any],
    scenarios: ScenarioGate | None,
    lock_file: Path | None,
) -> None:
    """Log the offline (and scenario) metrics, the dvc.lock and the scenario reports."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    numeric = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    numeric |= scenarios.metrics() if scenarios is not None else {}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in numeric.items()])
    if lock_file is not None and Path(lock_file).is_file():
        client.log_artifact(run_id, str(lock_file), artifact_path="lineage")
    if scenarios is not None:
        log_scenario_reports(client, run_id, scenarios)


def _log_stage_model(
    client: MlflowClient,
    experiment_id: str,
    stage: str,
    run_id: str,
    tags: Mapping[str, str],
    model_dir: Path,
) -> str:
    """Package the stage folder as a pyfunc logged model of the run; its model id."""
    logged = client.create_logged_model(
        experiment_id,
        name=stage,
        source_run_id=run_id,
        tags=dict(tags),
        model_type="casepilot-stage",
    )
    with tempfile.TemporaryDirectory(prefix="casepilot-register-") as tmp:
        client.log_model_artifacts(logged.model_id, str(_package(stage, model_dir, Path(tmp))))
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def _create_version(
    client: MlflowClient,
    name: str,
    stage: str,
    run_id: str,
    model_id: str,
    tags: Mapping[str, str],
    scenarios: ScenarioGate | None,
) -> str:
    """Create the registered model if needed and the logged model's new version; its number."""
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(
            name,
            tags={"casepilot.stage": stage},
            description=f"casepilot {stage} stage (aliases: champion, challenger)",
        )
    # The artifact location, not `models:/<model_id>`: MLflow 3.17's SQL registry resolves the
    # latter through the *global* tracking URI, which this module never sets.
    version = client.create_model_version(
        name,
        source=client.get_logged_model(model_id).artifact_location,
        run_id=run_id,
        tags=dict(tags),
        model_id=model_id,
        description=scenario_description(scenarios) if scenarios is not None else None,
    )
    return str(version.version)


def _gates(
    params: Params, stage: str, model_dir: Path, metrics: Mapping[str, Any]
) -> tuple[GateResult, ScenarioGate | None]:
    """The offline gates' decision, and the scenario gate's (pipelines/evaluate/scenarios/gate.py)
    for a version the offline gates pass, when a suite is configured; a failed suite fails both."""
    gate = meets_thresholds(metrics, params.register.gates.get(stage, {}))
    if not gate.passed or params.register.scenario_suite is None:
        return gate, None
    scenarios = scenario_gate(params, stage, model_dir)
    if not scenarios.passed:
        gate = GateResult(passed=False, reasons=(*gate.reasons, f"scenarios: {scenarios.reason}"))
    return gate, scenarios
