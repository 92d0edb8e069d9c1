"""params.yaml `register:` and `promote:`: the MLflow registry, its gates, and promotion."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.section import Section


class RegisterConfig(Section):
    tracking_uri: str | None = Field(None, description="null = SQLite under CASEPILOT_HOME")
    model_prefix: str = "casepilot-"
    experiment: str = Field(
        "casepilot-registry", description="MLflow experiment that holds the registration runs"
    )
    server_port: int = Field(
        5000, ge=1, le=65535, description="`casepilot mlflow-server start`: port on 127.0.0.1"
    )
    server_workers: int = Field(1, ge=1, description="`mlflow server` worker processes")
    # minimum offline metric per stage for the `challenger` alias, e.g. {topic: {accuracy: 0.9}}
    gates: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "trigger": {"auroc": 0.9},
            "topic": {"accuracy": 0.8},
            "retrieve": {"recall_at_k": 0.7},
            "answer": {"rouge_l": 0.2},
            "tone": {"faithfulness": 0.7},
        }
    )
    # The scenario gate (pipelines/evaluate/scenarios/gate.py), after the offline gates.
    scenario_suite: str | None = Field(
        "scenarios",
        description="folder of scenario YAML files (relative: to the repo root); null = no "
        "scenario gate",
    )
    scenario_tolerance: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="`challenger` only if the suite's failure rate with this version swapped "
        "into the champion cascade exceeds the champion's by at most this (and no must_not fails)",
    )
    scenario_messages_per_scenario: int = Field(
        1, ge=1, le=50, description="persona messages generated per scenario for the gate"
    )
    scenario_seed: int = Field(0, description="seed of the generated scenario messages")


class PromoteConfig(Section):
    min_cases: int = Field(200, ge=1, description="shadow cases before a decision")
    significance: float = Field(0.05, gt=0, lt=1)
    max_stage_regression: float = Field(0.02, ge=0, le=1)
    approval_tag: str = "casepilot.approved_by"
    rollback_drop: float = Field(0.05, gt=0, le=1, description="match-rate drop that rolls back")
    rollback_min_cases: int = Field(
        50, ge=1, description="cases served by a new champion before a rollback decision"
    )
    mlflow_ui_url: str | None = Field(
        None,
        description="MLflow UI for links in requests and pages; null = the tracking server, "
        "else `casepilot mlflow-server` on 127.0.0.1:register.server_port",
    )
    replay_max_cases: int = Field(
        2000,
        ge=1,
        description="most recent shadow cases per challenger stage that `monitor` "
        "replays through the champion cascade with only that stage swapped in",
    )
    notify_urls_env: str = Field(
        "CASEPILOT_NOTIFY_URLS",
        min_length=1,
        description="env var with extra apprise URLs "
        "(space separated, e.g. mailto://...) that also get promotion requests; secrets stay "
        "out of params.yaml",
    )
