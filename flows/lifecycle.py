"""The lifecycle on Prefect: `retrain`, `monitor`, `promote` and `rollback` flows.

Each flow is a short list of named steps over `pipelines/` and `monitoring/` (the step
functions live in `flows/lifecycle_steps.py`), takes the path of `params.yaml`, and reports a
failed or crashed run to the alert channel (`flows/lifecycle_hooks.report_failure`).

Resuming: every expensive `retrain` task persists its result under
`CASEPILOT_HOME/prefect/results` with a cache key made of the stage's params, the split and the
data version. A run that was killed (or failed on a registry hiccup) and is started again finds
the finished stages `Cached` and redoes only what is missing; new data or a changed
`params.yaml` section changes the key, so exactly the changed stages train again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Failed

from flows import lifecycle_steps as steps
from flows.lifecycle_hooks import (
    emit_drift_breach,
    load_flow_params,
    page_drift,
    report_failure,
)
from pipelines.config import Params

HOOKS: dict[str, Any] = {"on_failure": [report_failure], "on_crashed": [report_failure]}


def _by_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of a retrain step: the task's name and the `key` it was given."""
    return f"{context.task.name}-{parameters['key']}"


def result_storage(params: Params) -> Any:
    """A saved local-file-system block at CASEPILOT_HOME/prefect/results (one per home).

    Prefect 3 wants result storage saved server-side, so a run on another process (a worker)
    finds the same results; the block's name carries a hash of the folder.
    """
    import hashlib

    from prefect.filesystems import LocalFileSystem

    folder = str(params.home.prefect / "results")
    name = "casepilot-results-" + hashlib.sha256(folder.encode()).hexdigest()[:12]
    storage = LocalFileSystem(basepath=folder)
    storage.save(name, overwrite=True)
    return storage


def _persisted(task_fn: Any, storage: Any) -> Any:
    """The task with results persisted in `storage` and cached by its name and `key`."""
    return task_fn.with_options(persist_result=True, result_storage=storage, cache_key_fn=_by_key)


# ---------------------------------------------------------------- retrain tasks


@task(name="intake", retries=2, retry_delay_seconds=10)
def intake_task(params: Params) -> dict[str, Any]:
    """Pull and validate new batches (a SQL source can fail transiently: retried)."""
    from pipelines.intake.run import run_intake

    report = run_intake(params)
    states = [outcome.state for outcome in report.outcomes]
    return {
        "pulled": len(report.pulled),
        "accepted": states.count("accepted"),
        "quarantined": states.count("quarantined"),
        "unreadable": report.unreadable,
    }


@task(name="dataset-version")
def dataset_task(params: Params) -> str:
    """Check there is enough accepted data to train on; return its version."""
    return steps.load_training_data(params).version


@task(name="train")
def train_task(params: Params, stage: str, key: str, version: str) -> str:
    data = _data(params, version)
    out = steps.model_dir_for(params, stage, key)
    return str(steps.train_stage(params, stage, data, out))


@task(name="quantize")
def quantize_task(params: Params, stage: str, key: str, model_dir: str, version: str) -> list[str]:
    out = steps.model_dir_for(params, stage, key).with_name(f"{key}-quantized")
    folder, method = steps.quantize_stage(
        params, stage, Path(model_dir), _data(params, version), out
    )
    return [str(folder), method]


@task(name="evaluate")
def evaluate_task(
    params: Params, stage: str, key: str, model_dir: str, version: str
) -> dict[str, float]:
    return steps.evaluate_stage(params, stage, Path(model_dir), _data(params, version))


@task(name="register-challenger", retries=3, retry_delay_seconds=[5, 20, 60])
def register_task(
    params: Params, stage: str, key: str, model_dir: str, metrics: dict[str, float],
    version: str, quantization: str,
) -> dict[str, Any]:  # fmt: skip
    """Register in MLflow (a remote registry can fail transiently: retried)."""
    registered = steps.register_challenger(
        params, stage, Path(model_dir), metrics, data_version=version, quantization=quantization
    )
    return {
        "version": registered.version,
        "challenger": registered.gate.passed,
        "gate_reasons": list(registered.gate.reasons),
        "name": registered.name,
        "model_dir": model_dir,
        "quantization": quantization,
    }


def _data(params: Params, version: str) -> steps.TrainingData:
    data = steps.load_training_data(params)
    if data.version != version:
        raise RuntimeError(
            f"the accepted data changed during this run ({version} -> {data.version}); "
            "run retrain again to train on the new version"
        )
    return data


@flow(name="retrain", **HOOKS)
def retrain(params_file: str = "params.yaml", stages: list[str] | None = None) -> dict[str, Any]:
    """Intake → validate → train changed stages → quantize → evaluate → register challenger.

    `stages` limits retraining to these stages (default: all five, in cascade order). Returns,
    per stage, `{"version", "challenger", "gate_reasons", "name", "model_dir", "quantization"}`:
    the MLflow model version registered, whether it passed the gates (and became `challenger`),
    why not, and the (quantized) folder that was registered. A stage whose
    params section and data did not change since its last run comes back from the persisted
    results (`Cached`) without training or registering again.
    """
    params = load_flow_params(params_file)
    selected = steps.check_stages(stages)
    logger = get_run_logger()
    logger.info("intake: %s", intake_task(params))
    version = dataset_task(params)
    storage = result_storage(params)
    train, quantize, evaluate, register = (
        _persisted(t, storage) for t in (train_task, quantize_task, evaluate_task, register_task)
    )
    registered = {}
    for stage in selected:
        key = steps.stage_key(params, stage, version)
        model_dir = train(params, stage, key, version)
        after = steps.downstream_key(params, stage, key)
        folder, method = quantize(params, stage, after, model_dir, version)
        metrics = evaluate(params, stage, after, folder, version)
        registry = steps.registry_key(params, after)
        registered[stage] = register(params, stage, registry, folder, metrics, version, method)
        logger.info("%s: %s", stage, registered[stage])
    return registered


# ---------------------------------------------------------------- monitor


@task(name="monitor-window")
def monitor_task(params: Params) -> Any:
    from monitoring.monitor import run_monitor
    from monitoring.prediction_log import PredictionLog
    from pipelines.intake.store import load_accepted

    reference = load_accepted(params)
    if not reference:
        raise ValueError(
            "no accepted training data to compare against; run intake (`casepilot data intake`)"
        )
    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        window = log.window(limit=params.monitor.window_cases)
    finally:
        log.close()
    return run_monitor(params, reference, window)


@task(name="rollback-check", retries=2, retry_delay_seconds=[5, 20])
def rollback_task(params: Params, link: str | None) -> dict[str, dict[str, Any]]:
    """Roll back a promoted champion whose match rate fell (flows/lifecycle_rollback.py)."""
    from flows.lifecycle_rollback import check_rollbacks

    return check_rollbacks(params, link=link)


@task(name="decide-challengers", retries=2, retry_delay_seconds=[5, 20])
def decide_task(params: Params, link: str | None) -> dict[str, dict[str, Any]]:
    """Per-stage promotion evidence → request + notify, or reject (flows/lifecycle_decide.py)."""
    from flows.lifecycle_decide import decide_challengers

    return decide_challengers(params, link=link)


@task(name="reload-service", retries=2, retry_delay_seconds=[5, 20])
def reload_task(params: Params) -> dict[str, Any]:
    """Ask the running service to serve the moved aliases now (flows/lifecycle_promote.py)."""
    from flows.lifecycle_promote import reload_service

    outcome = reload_service(params)
    if outcome["status"] == "failed":
        raise RuntimeError(f"service reload failed: {outcome['reason']}")
    return outcome


@flow(name="monitor", **HOOKS)
def monitor(params_file: str = "params.yaml") -> dict[str, Any]:
    """One monitoring window: drift + online metrics → Evidently snapshot → event and page;
    then the regression check of newly promoted champions (automatic rollback), then the
    per-stage decision on every challenger (flows/lifecycle_decide.py: request + notify the
    reviewers, or reject).

    On a drift breach it emits the Prefect event `casepilot.drift.breach` (resource
    `casepilot.monitor.<evidently_project>`, payload with the evidence URL), which the
    `retrain-on-drift` automation turns into a `retrain` run; it pages on-call only when
    `monitor.breach_n` of the last `monitor.breach_m` windows breached, the latest included.
    A champion whose match rate since its promotion fell `promote.rollback_drop` below its
    predecessor's (over at least `promote.rollback_min_cases` cases) is rolled back and paged,
    with the snapshot as evidence — even when the drift step failed (the run then still fails).
    Returns `{"breach", "page", "paged", "event_id", "evidence_url", "reasons", "rollback",
    "promotion"}` (per stage: `flows.lifecycle_rollback.check_rollbacks`,
    `flows.lifecycle_decide.decide_challengers`).
    """
    params = load_flow_params(params_file)
    state = monitor_task(params, return_state=True)
    report = state.result(raise_on_failure=False) if state.is_completed() else None
    logger = get_run_logger()
    if report is not None:
        event_id = emit_drift_breach(params, report) if report.drift.breach else None
        paged = page_drift(params, report) if report.page else "not needed"
        logger.info("monitor: %s; page: %s", report.summary, paged)
    link = report.evidence_url if report is not None else None
    rolled = rollback_task(params, link)
    for stage, outcome in rolled.items():
        if outcome["status"] != "skipped":
            logger.info("rollback check %s: %s (%s)", stage, outcome["status"], outcome["reason"])
    if any(o["status"] == "rolled back" for o in rolled.values()):
        logger.info("reload after rollback: %s", reload_task(params))
    decided = decide_task(params, link)
    for stage, outcome in decided.items():
        logger.info("challenger %s: %s (%s)", stage, outcome["status"], outcome.get("reason"))
    if report is None:  # the drift step failed: the run fails with its error (and alerts)
        state.result()  # re-raises it
        raise RuntimeError(f"monitor-window ended {state.name}: {state.message}")
    return {
        "breach": report.drift.breach,
        "page": report.page,
        "paged": paged,
        "event_id": event_id,
        "evidence_url": report.evidence_url,
        "reasons": list(report.drift.reasons),
        "rollback": rolled,
        "promotion": decided,
    }


# ---------------------------------------------------------------- promote / rollback


@flow(name="promote", **HOOKS)
def promote(params_file: str = "params.yaml", stage: str | None = None) -> Any:
    """Move `champion` to the approved challenger of `stage` (default: every stage with one),
    then ask the running service to reload (`POST /admin/reload` with its API key).

    The `promote` deployment runs this every `schedule.promote_poll_seconds` with no `stage`:
    challengers nobody approved yet are `waiting` and the run is a quiet Completed one.
    Returns `{stage: {"status": "promoted"|"refused"|"waiting"|"skipped", ...}}` plus
    `"service"` (the reload's outcome) when something was promoted. Asked for one `stage`, a
    refusal (no approval recorded on the challenger, see pipelines/registry_promote.py) makes
    the run Failed — so it is alerted — with the same outcomes as the state's data:
    `promote(..., return_state=True).result(raise_on_failure=False)`.
    """
    from flows.lifecycle_promote import promote_stages

    params = load_flow_params(params_file)
    outcomes = promote_stages(params, stage)
    logger = get_run_logger()
    for name, outcome in outcomes.items():
        logger.info("%s: %s %s", name, outcome["status"], outcome.get("reason", ""))
    if any(o["status"] == "promoted" for o in outcomes.values()):
        outcomes["service"] = reload_task(params)  # serve the new champion now, no restart
    refused = {s: o for s, o in outcomes.items() if o["status"] == "refused"}
    if refused:
        reasons = "; ".join(f"{s}: {o['reason']}" for s, o in refused.items())
        return Failed(message=f"promotion refused: {reasons}", data=outcomes)
    return outcomes


@flow(name="rollback", **HOOKS)
def rollback(params_file: str, stage: str, reason: str) -> Any:
    """Move `champion` of `stage` back to `previous-champion`, recording `reason`, and page.

    Returns `{"stage", "name", "from_version", "to_version", "reason", "audit_run_id", "page",
    "service"}` (`page`: the page's status; `service`: the reload's outcome). No previous
    champion to return to fails the run (alerted).
    """
    from flows.lifecycle_promote import rollback_stage

    params = load_flow_params(params_file)
    outcome = rollback_stage(params, stage, reason)
    outcome["service"] = reload_task(params)  # serve the restored champion now
    return outcome


# `casepilot up` registers through these (flows/lifecycle_deploy.py holds them).
from flows.lifecycle_deploy import ensure_work_pool, register_deployments  # noqa: E402

__all__ = ["ensure_work_pool", "monitor", "promote", "register_deployments", "retrain", "rollback"]
