"""The lifecycle on Prefect: `retrain`, `monitor`, `promote` and `rollback` flows.

`retrain` executes dvc.yaml (the one definition of how data becomes registered models) in the
home's DVC workspace (pipelines/repro/workspace.py): each DVC stage is a Prefect task, run with
`dvc repro --single-item`, so DVC decides what is up to date, the stage's output goes to the
run's log and its state is in the Prefect UI. A stage DVC finds up to date ends `Skipped`.
A killed run's running stage stops with it (pipelines/repro/guard.py); started again, the
run redoes only what DVC finds missing or changed (benchmarks/retrain_resume.py measures it).
The other flows are short lists of steps over `pipelines/` and `monitoring/`. Every flow takes
the path of `params.yaml` and reports a failed or crashed run to the alert channel
(`flows/lifecycle/hooks.report_failure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.states import Completed, Failed

from flows.lifecycle.hooks import (
    FLOW_OPTIONS,
    TASK_OPTIONS,
    emit_drift_breach,
    load_flow_params,
    page_drift,
)
from flows.lifecycle.outcomes import monitor_message, monitor_result, promote_message
from pipelines.config import Params

if TYPE_CHECKING:
    from monitoring.monitor import MonitorReport

# stages that talk to something remote (a SQL source, the registry) get more retries
FLAKY_RETRIES, RETRIES = 3, 1


# ---------------------------------------------------------------- retrain


@task(
    name="dvc-stage", task_run_name="{stage}", retries=RETRIES, retry_delay_seconds=10,
    cache_policy=NONE,  # DVC decides what is up to date, not a Prefect cache
    **TASK_OPTIONS,
)  # fmt: skip
def dvc_stage_task(workspace: Any, stage: str) -> Any:
    """Reproduce one DVC stage; `Skipped` (Completed) when DVC finds it up to date."""
    from pipelines.repro.run import run_stage

    logger = get_run_logger()
    done = run_stage(workspace, stage, logger.info)
    if not done.ran:
        return Completed(name="Skipped", message="up to date (DVC)", data=False)
    return done.seconds


def _stage_task(stage: str) -> Any:
    flaky = stage == "intake" or stage.startswith("register_")
    return dvc_stage_task.with_options(retries=FLAKY_RETRIES if flaky else RETRIES)


@flow(name="retrain", **FLOW_OPTIONS)
def retrain(params_file: str = "params.yaml", stages: list[str] | None = None) -> dict[str, Any]:
    """Reproduce dvc.yaml for `stages` (default all five) in the home's DVC workspace.

    Runs the shared stages (synth, intake, validate, split, and evaluate_cascade when all five
    are selected) and every `*_<stage>` DVC stage of the selected stages, dependencies first.
    Returns `{"registered": {stage: {"version", "challenger", "gate_reasons", "name",
    "model_dir", "quantization", "data_version"}}, "ran": [...], "up_to_date": [...],
    "seconds": {dvc stage: s}, "data_version", "workspace"}`: `registered` holds the stages whose
    `register_<stage>` ran in this run (the MLflow version, whether it passed the gates and
    became `challenger`, why not, the registered folder); `ran`/`up_to_date` name the DVC stages
    (in order), `seconds` the wall time of those that ran.
    """
    from pipelines.repro.run import check_stages, model_stage_of, plan, registration
    from pipelines.repro.workspace import dvc_workspace

    params = load_flow_params(params_file)
    selected = check_stages(stages)
    workspace = dvc_workspace(params_file, params.home)
    logger = get_run_logger()
    logger.info("DVC workspace %s (params %s)", workspace.root, workspace.params_file)
    seconds, up_to_date = {}, []
    for stage in plan(workspace, selected):
        outcome = _stage_task(stage)(workspace, stage)  # seconds, or the Skipped state
        if isinstance(outcome, float):
            seconds[stage] = round(outcome, 1)
        else:
            up_to_date.append(stage)
    registered = {
        model_stage_of(name): registration(workspace, model_stage_of(name))
        for name in seconds
        if name.startswith("register_")
    }
    for stage, info in registered.items():
        logger.info("%s: %s", stage, info)
    return {
        "registered": registered,
        "ran": list(seconds),
        "up_to_date": up_to_date,
        "seconds": seconds,
        "data_version": workspace.data_version(),
        "workspace": str(workspace.root),
    }


# ---------------------------------------------------------------- monitor


@task(name="monitor-window", **TASK_OPTIONS)
def monitor_task(params: Params) -> Any:
    """The latest window's MonitorReport, or why it is not judged yet (a string)."""
    from flows.lifecycle.window import judge_latest_window

    return judge_latest_window(params)


@task(name="rollback-check", retries=2, retry_delay_seconds=[5, 20], **TASK_OPTIONS)
def rollback_task(params: Params, link: str | None) -> dict[str, dict[str, Any]]:
    """Roll back a promoted champion whose match rate fell (flows/lifecycle/rollback.py)."""
    from flows.lifecycle.rollback import check_rollbacks

    return check_rollbacks(params, link=link)


@task(name="decide-challengers", retries=2, retry_delay_seconds=[5, 20], **TASK_OPTIONS)
def decide_task(params: Params, link: str | None) -> dict[str, dict[str, Any]]:
    """Per-stage promotion evidence → request + notify, or reject (flows/lifecycle/decide.py)."""
    from flows.lifecycle.decide import decide_challengers

    return decide_challengers(params, link=link)


@task(name="reload-service", retries=2, retry_delay_seconds=[5, 20], **TASK_OPTIONS)
def reload_task(params: Params) -> dict[str, Any]:
    """Ask the running service to serve the moved aliases now (flows/lifecycle/promote.py)."""
    from flows.lifecycle.promote import reload_service

    outcome = reload_service(params)
    if outcome["status"] == "failed":
        raise RuntimeError(f"service reload failed: {outcome['reason']}")
    return outcome


@flow(name="monitor", **FLOW_OPTIONS)
def monitor(params_file: str = "params.yaml") -> dict[str, Any]:
    """One monitoring window: drift + online metrics → Evidently snapshot → event and page;
    then the regression check of newly promoted champions (automatic rollback), then the
    per-stage decision on every challenger (flows/lifecycle/decide.py: request + notify the
    reviewers, or reject).

    A window is judged once it holds `monitor.window_cases` predictions newer than the last
    judged one (`monitoring.monitor.unjudged_window_problem`); until then the run only does the
    rollback check and the challenger decisions. When `monitor.breach_n` of the last
    `monitor.breach_m` windows breached, the latest included, it pages on-call and emits the
    Prefect event `casepilot.drift.breach` (resource `casepilot.monitor.<evidently_project>`,
    payload with the evidence URL), which the `retrain-on-drift` automation turns into a
    `retrain` run — once per incident: while the page cools down, a breach emits no new event.
    A champion whose match rate since its promotion fell `promote.rollback_drop`
    below its predecessor's (over at least `promote.rollback_min_cases` cases) is rolled back and
    paged, with the snapshot as evidence — even when the drift step failed (the run then still
    fails). Returns (as a Completed state whose message is the one-line outcome)
    `{"breach", "page", "paged", "event_id", "evidence_url", "reasons", "waiting", "rollback",
    "promotion"}` (per stage: `flows.lifecycle.rollback.check_rollbacks`,
    `flows.lifecycle.decide.decide_challengers`).
    """
    params = load_flow_params(params_file)
    state = monitor_task(params, return_state=True)
    outcome = state.result(raise_on_failure=False) if state.is_completed() else None
    report = outcome if not isinstance(outcome, str | None) else None
    waiting = outcome if isinstance(outcome, str) else None
    drift = _announce_drift(params, report, waiting)
    link = report.evidence_url if report is not None else None
    rolled = _roll_back_regressions(params, link)
    decided = decide_task(params, link)
    logger = get_run_logger()
    for stage, result in decided.items():
        logger.info("challenger %s: %s (%s)", stage, result["status"], result.get("reason"))
    if state.is_failed() or state.is_crashed():  # the drift step failed: fail with its error
        state.result()  # re-raises it
        raise RuntimeError(f"monitor-window ended {state.name}: {state.message}")
    result = monitor_result(report, waiting, drift, rolled, decided)
    return Completed(message=monitor_message(result), data=result)


def _announce_drift(
    params: Params, report: MonitorReport | None, waiting: str | None
) -> tuple[str, str | None]:
    """Page and emit the drift event when the judged window says so; (page status, event id)."""
    logger = get_run_logger()
    if report is None:
        if waiting is not None:
            logger.info("window not judged: %s", waiting)
        return "not needed", None
    # the drift automation retrains on the same N-of-M rule that pages: one noisy window
    # neither wakes anyone nor starts a retrain; and once per incident, like the page: while
    # the page cools down (monitor.pager.cooldown_minutes) a breach starts no new retrain
    paged = page_drift(params, report) if report.page else "not needed"
    emit = report.page and paged != "suppressed"
    event_id = emit_drift_breach(params, report) if emit else None
    logger.info("monitor: %s; page: %s", report.summary, paged)
    return paged, event_id


def _roll_back_regressions(params: Params, link: str | None) -> dict[str, dict[str, Any]]:
    """The rollback check (logged), and a service reload when it rolled something back."""
    logger = get_run_logger()
    rolled = rollback_task(params, link)
    for stage, result in rolled.items():
        if result["status"] != "skipped":
            logger.info("rollback check %s: %s (%s)", stage, result["status"], result["reason"])
    if any(o["status"] == "rolled back" for o in rolled.values()):
        logger.info("reload after rollback: %s", reload_task(params))
    return rolled


# ---------------------------------------------------------------- promote / rollback


@flow(name="promote", **FLOW_OPTIONS)
def promote(params_file: str = "params.yaml", stage: str | None = None) -> Any:
    """Move `champion` to the approved challenger of `stage` (default: every stage with one),
    then ask the running service to reload (`POST /admin/reload` with its API key).

    The `promote` deployment runs this every `schedule.promote_poll_seconds` with no `stage`:
    challengers nobody approved yet are `waiting` and the run is a quiet Completed one.
    Returns (as a Completed state whose message is the one-line outcome, e.g. `promoted
    retrieve → v2; service reload: reloaded`) `{stage: {"status": "promoted"|"refused"|"waiting"|
    "skipped", ...}}` plus `"service"` (the reload's outcome) when something was promoted.
    Asked for one `stage`, a refusal (no approval recorded on the challenger, see
    pipelines/registry/promote.py) makes the run Failed — so it is alerted — with the same
    outcomes as the state's data:
    `promote(..., return_state=True).result(raise_on_failure=False)`.
    """
    from flows.lifecycle.promote import promote_stages

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
    return Completed(message=promote_message(outcomes), data=outcomes)


@flow(name="rollback", **FLOW_OPTIONS)
def rollback(params_file: str, stage: str, reason: str) -> Any:
    """Move `champion` of `stage` back to `previous-champion`, recording `reason`, and page.

    Returns `{"stage", "name", "from_version", "to_version", "reason", "audit_run_id", "page",
    "service"}` (`page`: the page's status; `service`: the reload's outcome). No previous
    champion to return to fails the run (alerted).
    """
    from flows.lifecycle.promote import rollback_stage

    params = load_flow_params(params_file)
    outcome = rollback_stage(params, stage, reason)
    outcome["service"] = reload_task(params)  # serve the restored champion now
    return outcome


# `casepilot up` registers through these (flows/lifecycle/deploy.py holds them).
from flows.lifecycle.deploy import ensure_work_pool, register_deployments  # noqa: E402

__all__ = ["ensure_work_pool", "monitor", "promote", "register_deployments", "retrain", "rollback"]
