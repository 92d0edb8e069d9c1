"""Record scenario reports in MLflow: run artifacts, metrics, and tags on the model versions.

Two writers: `log_scenario_reports` adds the gate's reports to a registration run (the run the
new version is linked to), and `log_suite_run` records a `casepilot scenarios run` as its own
run (`scenarios-<alias>` in the registry experiment) and tags every version it ran with the
run id and failure rate, so each version's page links to its last suite report.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pipelines.evaluate.scenarios.gate import TAG_FAILING, TAG_GATE, ScenarioGate
from pipelines.evaluate.scenarios.runner import Report

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params
    from pipelines.registry.resolve import ResolvedStage

TAG_RUN = "casepilot.scenario_run_id"


def log_report(client: MlflowClient, run_id: str, report: Report, name: str) -> None:
    """`scenarios/<name>.json` (every failure) and `scenarios/<name>.md` on the run."""
    client.log_text(run_id, report.to_json(), f"scenarios/{name}.json")
    client.log_text(run_id, report.to_markdown(), f"scenarios/{name}.md")


def log_scenario_reports(client: MlflowClient, run_id: str, gate: ScenarioGate) -> None:
    """The gate's candidate and champion reports as artifacts of the registration run."""
    if gate.candidate is not None:
        log_report(client, run_id, gate.candidate, "candidate")
    if gate.champion is not None:
        log_report(client, run_id, gate.champion, "champion")


def scenario_description(gate: ScenarioGate) -> str:
    """The version description: the decision, and which scenarios broke a must_not rule."""
    text = f"Scenario gate {gate.status}: {gate.reason}."
    failing = gate.must_not_failing
    if failing:
        text += f" Must-not failures in: {', '.join(failing[:20])} (tag {TAG_FAILING})."
    if gate.candidate is not None:
        text += " Reports: run artifacts scenarios/candidate.md (and champion.md)."
    return text


def log_suite_run(
    params: Params, alias: str, report: Report, resolved: dict[str, ResolvedStage]
) -> str:
    """A run `scenarios-<alias>` with the report; tags each version with the run and its rate."""
    from mlflow.entities import Metric

    from pipelines.registry.store import ensure_experiment, registry_client

    client = registry_client(params)
    versions = {f"casepilot.version.{s}": f"{r.name}/{r.version}" for s, r in resolved.items()}
    tags = {"casepilot.scenario_alias": alias, **versions, TAG_GATE: "report"}
    run = client.create_run(
        ensure_experiment(client, params), run_name=f"scenarios-{alias}", tags=tags
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = _metrics(report)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    log_report(client, run_id, report, alias)
    client.set_terminated(run_id, "FINISHED")
    for r in resolved.values():
        client.set_model_version_tag(r.name, r.version, TAG_RUN, run_id)
        client.set_model_version_tag(
            r.name,
            r.version,
            f"casepilot.scenario_{alias}_failure_rate",
            f"{report.failure_rate:.4f}",
        )
    return run_id


def _metrics(report: Report) -> dict[str, Any]:
    summary = report.summary()
    out = {"scenario_failure_rate": summary["failure_rate"]}
    out["scenario_must_not_failed"] = float(summary["must_not_failed"])
    for kind, row in summary["by_kind"].items():
        out[f"scenario_{kind.replace(':', '_')}_failure_rate"] = row["failure_rate"]
    return out
