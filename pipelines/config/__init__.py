"""Typed configuration: `params.yaml` loaded once into frozen pydantic models, one per section.

Unknown keys and bad values fail with a `ConfigError` that names the key and the fix. Endpoints
can be overridden from the environment (see `ENDPOINT_ENV`), and every endpoint left empty
resolves to embedded state under `CASEPILOT_HOME`.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.home import Home


class Section(BaseModel):
    """A params.yaml section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- data


class SourceConfig(Section):
    kind: Literal["folder", "sql"] = Field("folder", description="where fresh batches come from")
    path: str = Field("incoming", description="folder source: relative to CASEPILOT_HOME/data")
    url: str | None = Field(None, description="sql source: SQLAlchemy URL")
    query: str | None = Field(None, description="sql source: query returning LabeledCase columns")
    batch_column: str = Field("batch", description="sql source: column that names the batch")

    @model_validator(mode="after")
    def _sql_needs_url_and_query(self) -> SourceConfig:
        if self.kind == "sql" and not (self.url and self.query):
            raise ValueError("kind 'sql' needs both 'url' and 'query'; set them or use 'folder'")
        return self


class SynthConfig(Section):
    seed: int = 7
    days: int = Field(14, ge=1, le=365)
    cases_per_day: int = Field(300, ge=10)
    topics: int = Field(32, ge=30, description="topics of the fictional payments company")
    not_answerable_share: float = Field(0.2, ge=0.0, lt=1.0)
    label_noise: float = Field(0.02, ge=0.0, lt=1.0, description="share of flipped topic labels")
    pii_share: float = Field(0.1, ge=0.0, le=1.0, description="share of messages with planted PII")
    typo_rate: float = Field(0.15, ge=0.0, le=1.0)
    drift_from_day: int | None = Field(
        8, ge=1, description="from this day a new topic appears and vocabulary shifts; null = never"
    )
    drift_topic_share: float = Field(
        0.15, ge=0.0, le=1.0, description="share of answerable traffic on the new topic after drift"
    )
    followup_share: float = Field(
        0.12, ge=0.0, le=1.0, description="share of answerable cases that are context follow-ups"
    )
    days_root: str | None = Field(
        None,
        description="folder for the daily batches/ and truth/ (relative to CASEPILOT_HOME/data); "
        "null = inside the world folder. The demo keeps them outside CASEPILOT_HOME, with the "
        "outside world, so no raw planted PII lives in the platform's state",
    )


class ValidationConfig(Section):
    min_message_chars: int = Field(2, ge=1)
    max_message_chars: int = Field(4000, ge=10)
    not_answerable_share: tuple[float, float] = (0.02, 0.6)
    max_label_shift: float = Field(
        0.3, gt=0.0, le=1.0, description="total-variation distance of topic mix vs reference"
    )
    max_pii_rate: float = Field(0.25, ge=0.0, le=1.0, description="share of messages with PII")
    max_label_disagreement: float = Field(
        0.15, gt=0.0, le=1.0, description="share of labels an independent labeler disputes"
    )
    max_not_answerable_shift: float = Field(
        0.15, gt=0.0, le=1.0, description="|not-answerable share - the reference's| allowed"
    )
    max_label_conflict_share: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="share of rows whose message (with context) carries another label in the "
        "batch or reference; 0 = none at all (label noise makes a little of it normal)",
    )
    taxonomy: str = Field(
        "taxonomy.json",
        description="JSON topics file (list of names or of {name: ...}, or {topics: [...]}), "
        "relative to CASEPILOT_HOME/data; when absent, the reference's topics are the taxonomy",
    )
    reference: str | None = Field(
        None, description="JSONL/Parquet of LabeledCase to compare with; null = accepted data"
    )
    min_reference_cases: int = Field(
        50, ge=1, description="fewer labeled reference cases skip the reference checks"
    )
    min_rows_for_mix: int = Field(
        50, ge=1, description="smaller batches skip the mix-vs-reference checks (sampling noise)"
    )
    max_reference_cases: int = Field(
        5000, ge=10, description="reference cases embedded for label agreement (stable sample)"
    )
    agreement_k: int = Field(7, ge=1, description="nearest reference neighbours that vote")
    embedder: str = Field("minilm", description="sentence embedder for label agreement")


class PiiConfig(Section):
    """PII redaction (pipelines/data/redact.py): Presidio recognizers, offline."""

    phone_regions: tuple[str, ...] = Field(
        ("US", "GB", "DE", "FR", "IE", "NL", "ES", "IT"),
        description="ISO regions whose national phone formats `phonenumbers` looks for",
    )
    detect_person: bool = Field(True, description="redact person names (name lists + cues)")
    min_score: float = Field(0.35, ge=0.0, le=1.0, description="Presidio score to redact at")


class WeakConfig(Section):
    """Weak supervision (pipelines/data/weak/): labeling functions + Snorkel label model."""

    knn_k: int = Field(7, ge=1, description="gold neighbours that vote in the kNN labeler")
    knn_min_similarity: float = Field(
        0.55, ge=-1.0, le=1.0, description="kNN abstains below this cosine similarity"
    )
    macro_min_score: float = Field(
        85.0, ge=0.0, le=100.0, description="rapidfuzz score for 'agent reply is a macro'"
    )
    keywords_per_topic: int = Field(6, ge=0, description="keyword LFs mined per topic")
    keyword_min_precision: float = Field(0.85, gt=0.0, le=1.0, description="on gold cases")
    keyword_min_count: int = Field(3, ge=1, description="gold cases a keyword must appear in")
    holdout_share: float = Field(
        0.3, gt=0.0, lt=1.0, description="gold slice kept out of LF mining to measure accuracy"
    )
    label_model_epochs: int = Field(100, ge=1, description="Snorkel LabelModel training epochs")
    seed: int = 13


class DataConfig(Section):
    source: SourceConfig = SourceConfig()
    synth: SynthConfig = SynthConfig()
    validation: ValidationConfig = ValidationConfig()
    pii: PiiConfig = PiiConfig()
    weak: WeakConfig = WeakConfig()
    raw_retention_days: float = Field(
        0.0,
        ge=0.0,
        description="days a raw (unredacted) staged batch is kept after it was accepted or "
        "released; 0 = deleted as soon as its redacted copy is written",
    )
    quarantine_retention_days: float = Field(
        14.0,
        ge=0.0,
        description="days a quarantined raw batch waits for a person to fix and release it; "
        "then it is purged (the ledger keeps its hash, row count and failed expectations)",
    )
    validation_share: float = Field(0.15, gt=0.0, lt=0.5, description="held-out share")
    split_seed: int = 13


# ---------------------------------------------------------------- model stages


class ClassifierConfig(Section):
    """A fine-tuned encoder classifier (trigger, topic)."""

    base_model: str = Field("minilm", description="'minilm' (packaged) or a local path / hub id")
    max_length: int = Field(64, ge=8, le=512)
    epochs: float = Field(4.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int = Field(2, ge=1)
    target_precision: float = Field(0.95, gt=0, lt=1, description="threshold chosen to meet it")
    seed: int = 42
    deepspeed: str | None = Field(None, description="path to a DeepSpeed ZeRO config, or null")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of steps warming up the lr")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (tests)")
    metric_for_best_model: Literal["loss", "accuracy", "f1"] = Field(
        "f1", description="validation metric that early stopping and best-model reload follow"
    )
    class_weights: Literal["balanced", "sqrt", "none"] = Field(
        "balanced", description="weighted cross-entropy: inverse class frequency, its root, or off"
    )
    bf16: bool = Field(False, description="bf16 autocast while training (CPU AMX / GPU)")
    torch_threads: int = Field(2, ge=1, description="torch intra-op threads on CPU")
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="head input: BERT [CLS] pooler, or the normalised mean of token states"
    )
    head_init: Literal["random", "linear_probe"] = Field(
        "random", description="linear_probe: head starts as a logistic regression on frozen input"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")


class TriggerConfig(ClassifierConfig):
    target_precision: float = Field(0.97, gt=0, lt=1)


class TopicConfig(ClassifierConfig):
    target_precision: float = Field(0.93, gt=0, lt=1)
    pooling: Literal["cls", "mean"] = "mean"
    head_init: Literal["random", "linear_probe"] = "linear_probe"


class RetrieveConfig(Section):
    embedder: str = Field(
        "minilm", description="'minilm' (packaged) or a sentence-transformers path"
    )
    qdrant_location: str | None = Field(
        None,
        description="Qdrant server URL (scale-out), or null: each process restores the index "
        "from its stage folder into an in-process Qdrant (no shared folder lock)",
    )
    top_k: int = Field(20, ge=1, le=200)
    min_similarity: float = Field(
        0.35, ge=-1, le=1, description="abstain when the best hit's cosine similarity is below it"
    )
    batch_size: int = Field(
        64, ge=1, description="texts per embedding batch, queries per search batch"
    )
    passage_chars: int = Field(
        600, ge=50, description="doc bodies are split into passages this long"
    )
    oversample: int = Field(
        10, ge=1, description="embedded Qdrant: search top_k×oversample unfiltered, then by topic"
    )
    relevance_match: float = Field(
        0.8,
        gt=0,
        le=1,
        description="evaluation: a hit is relevant when its reply matches this well",
    )


class GeneratorConfig(Section):
    """A decoder-only LM stage (answer, tone)."""

    base_model: str | None = Field(
        None, description="local path or cached hub id; null builds a small model from `tiny`"
    )
    # Sized for 2 CPU cores: ~0.6 CPU-s per step of 16 prompts (~160 tokens) on the synthetic world.
    tiny_layers: int = Field(3, ge=1)
    tiny_hidden: int = Field(192, ge=16)
    tiny_heads: int = Field(4, ge=1)
    vocab_size: int = Field(4000, ge=256, description="tokenizer trained on the corpus")
    max_length: int = Field(
        256, ge=32, description="prompt + reply tokens; the prompt is cut first"
    )
    max_new_tokens: int = Field(64, ge=1)
    epochs: float = Field(4.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    batch_size: int = Field(16, ge=1)
    lora: bool = Field(False, description="LoRA adapter (peft) instead of full fine-tuning")
    lora_rank: int = Field(16, ge=1)
    seed: int = 42
    deepspeed: str | None = None


class AnswerConfig(GeneratorConfig):
    min_confidence: float = Field(0.35, ge=0, le=1)
    min_groundedness: float = Field(0.5, ge=0, le=1)
    retrieved_match_similarity: float = Field(
        0.65,
        ge=0,
        le=1,
        description="return a retrieved reply as is when its retrieval cosine is at least this",
    )
    max_passages: int = Field(3, ge=1, description="retrieved passages put in the prompt")
    passage_chars: int = Field(200, ge=50, description="doc passage length in training prompts")


class ToneConfig(GeneratorConfig):
    lora: bool = True
    min_faithfulness: float = Field(0.8, ge=0, le=1, description="below it, keep the draft")
    identity_share: float = Field(
        0.2, ge=0, le=1, description="extra (reply → same reply) pairs so house style is left alone"
    )


class QuantizeConfig(Section):
    method: Literal[
        "auto",
        "none",
        "bf16",
        "int8_dynamic",
        "quanto_int8",
        "quanto_int4",
        "onnx",
        "onnx_int8",
        "gptq",
    ] = Field("auto", description="'auto' measures the CPU candidates and keeps the best")
    max_metric_drop: float = Field(0.01, ge=0, le=1, description="in metric units (0.01 = 1 point)")
    gptq_bits: Literal[2, 3, 4, 8] = 4
    gptq_group_size: int = Field(128, ge=1, description="shrunk to divide a tiny model's widths")
    auto_candidates: tuple[
        Literal["bf16", "int8_dynamic", "quanto_int8", "quanto_int4", "onnx", "onnx_int8"], ...
    ] = Field(
        ("bf16", "int8_dynamic", "quanto_int8", "quanto_int4", "onnx", "onnx_int8"),
        description="what 'auto' measures against fp32 (onnx*: encoder stages only)",
    )
    onnx_per_channel: bool = Field(True, description="onnx_int8: one weight scale per column")
    onnx_reduce_range: bool = Field(
        False, description="onnx_int8: 7-bit weights (only for CPUs without VNNI)"
    )
    onnx_weight_type: Literal["qint8", "quint8"] = Field(
        "qint8", description="onnx_int8: signed weights (VNNI's u8×s8) or unsigned"
    )
    max_val_cases: int = Field(
        400, ge=1, description="validation cases scored per candidate (generation is slow)"
    )
    latency_batch: int = Field(32, ge=1, description="examples in the timed workload")
    latency_rounds: int = Field(5, ge=1, description="interleaved timing rounds (median kept)")
    torch_threads: int = Field(2, ge=1, description="torch intra-op threads while measuring")
    generator_metric: Literal["rouge_l", "mean_logprob"] = Field(
        "rouge_l",
        description="answer/tone key metric: ROUGE-L of generations, or reference log-prob",
    )


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


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    prediction_log_url: str | None = Field(None, description="null = SQLite under CASEPILOT_HOME")
    shadow: dict[str, bool] = Field(
        default_factory=lambda: dict.fromkeys(
            ("trigger", "topic", "retrieve", "answer", "tone"), True
        )
    )
    shadow_timeout_s: float = Field(5.0, gt=0)
    shadow_queue_size: int = Field(256, ge=1)
    api_key_env: str = Field("CASEPILOT_API_KEY", description="env var holding the API key")
    max_request_bytes: int = Field(65536, ge=1024)
    reload_poll_s: float = Field(30.0, gt=0)
    registry_timeout_s: int = Field(
        15,
        ge=1,
        description="each MLflow server request of a reload (alias lookups, downloads) waits "
        "this long for an answer (MLFLOW_HTTP_REQUEST_TIMEOUT; the environment's own wins)",
    )
    registry_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="retries of a failed MLflow server request during a reload (MLflow's own "
        "default, 7 with backoff, holds a reload ~4 minutes when the server is down)",
    )
    max_batch_size: int = Field(
        32, ge=1, description="most requests per cascade batch (1 = no batching)"
    )
    max_latency_ms: int = Field(
        200, ge=1, description="cap on batch_linger_ms: the longest a request waits for batch-mates"
    )
    batch_linger_ms: float = Field(
        0.0,
        ge=0,
        description="extra wait for batch-mates when the model is idle; 0 = greedy batching "
        "(a batch is what queued while the previous one ran, so an idle service adds no wait)",
    )
    torch_threads: int = Field(
        1,
        ge=1,
        description="torch intra-op threads of each model thread (champion, shadow); more than "
        "1 on a small, busy CPU makes every op wait for a second core",
    )
    shadow_max_batch: int = Field(
        8,
        ge=1,
        description="most requests per shadow batch: a smaller batch frees the CPU sooner when "
        "a champion request arrives while the shadow runs",
    )
    shadow_quiet_ms: float = Field(
        50.0,
        ge=0,
        description="the shadow starts a batch only after no champion request has been in flight "
        "for this long; queued shadow jobs wait (and are shed past shadow_queue_size)",
    )
    log_commit_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="how long /suggest waits for its prediction-log row to commit; past it the "
        "champion still answers, with logged=false (the row stays queued), never a 5xx",
    )
    shadow_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="OS priority (nice) of the shadow threads. 0: the shadow holds the GIL while "
        "it runs Python, so at a low priority on a busy box it is preempted holding it and the "
        "champion waits (and the shadow starves into timeouts); shadow_quiet_ms does the yielding",
    )


class PagerConfig(Section):
    """Where pages go (monitoring/notify/paging.py): a JSON-lines log, PagerDuty, Slack or a webhook."""

    kind: Literal["log", "pagerduty", "slack", "webhook"] = "log"
    url: str | None = Field(
        None,
        description="endpoint to POST to; PagerDuty: https://events.pagerduty.com/v2/enqueue",
    )
    routing_key_env: str = Field(
        "CASEPILOT_PAGERDUTY_ROUTING_KEY", description="env var holding the PagerDuty routing key"
    )
    cooldown_minutes: float = Field(
        60.0, ge=0, description="a page with the same dedup key within this is suppressed"
    )
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout per attempt")
    retries: int = Field(3, ge=1, description="attempts on connection errors, 429 and 5xx")
    retry_backoff_s: float = Field(1.0, ge=0, description="first wait between attempts, doubling")

    @model_validator(mode="after")
    def _http_kinds_need_url(self) -> PagerConfig:
        if self.kind != "log" and not self.url:
            raise ValueError(
                f"pager kind '{self.kind}' needs 'url' (PagerDuty: "
                "https://events.pagerduty.com/v2/enqueue); set it or use kind 'log'"
            )
        return self


class MonitorConfig(Section):
    window_cases: int = Field(200, ge=10, description="cases per monitoring window")
    drift_share: float = Field(
        0.5, gt=0, le=1, description="share of drifted columns that breaches"
    )
    embedding_drift_threshold: float = Field(0.55, gt=0, le=1)
    breach_n: int = Field(2, ge=1, description="page when N of the last M windows breach")
    breach_m: int = Field(3, ge=1)
    match_threshold: float = Field(0.8, gt=0, le=1, description="suggestion ~ sent reply")
    evidently_project: str = "casepilot"
    column_drift_p_value: float = Field(
        0.05, gt=0, lt=1, description="a column signal drifts when its test's p-value is below"
    )
    max_reference_cases: int = Field(
        600, ge=50, description="reference cases sampled (stable seed) into each drift report"
    )
    ui_port: int = Field(
        8000, ge=1, le=65535, description="`evidently ui` port on 127.0.0.1 (evidence links)"
    )
    embedding_tsne: bool = Field(
        False,
        description="add Evidently's EmbeddingsDrift widget (a t-SNE picture: 5-70 s per window "
        "on 2 cores); the embedding drift score is computed and plotted either way",
    )
    history_file: str = Field(
        "monitor_history.json", description="per-window breach history, under CASEPILOT_HOME/logs"
    )
    pager: PagerConfig = PagerConfig()

    @model_validator(mode="after")
    def _n_of_m(self) -> MonitorConfig:
        if self.breach_n > self.breach_m:
            raise ValueError(f"breach_n ({self.breach_n}) must be <= breach_m ({self.breach_m})")
        return self


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


class ScheduleConfig(Section):
    """Prefect deployments (flows/lifecycle/deploy.py), registered by `casepilot schedule`."""

    prefect_api_url: str | None = Field(None, description="null = ephemeral / `casepilot up`")
    work_pool: str = Field(
        "casepilot-process", min_length=1, description="process work pool the flows run in"
    )
    retrain_cron: str = Field("0 3 * * *", description="cron of the `retrain` deployment")
    monitor_cron: str = Field("0 * * * *", description="cron of the `monitor` deployment")
    review_cron: str = Field(
        "0 6 * * *", description="cron of the `review` deployment (the day's sample to reviewers)"
    )
    review_collect_cron: str = Field(
        "0 18 * * *",
        description="cron of the `review-collect` deployment (finished labels back, accuracy)",
    )
    timezone: str = Field("UTC", description="IANA time zone the crons are read in")
    retrain_interval_seconds: int | None = Field(
        None, ge=1, description="when set, `retrain` runs every N seconds instead of its cron"
    )
    monitor_interval_seconds: int | None = Field(
        None, ge=1, description="when set, `monitor` runs every N seconds instead of its cron"
    )
    review_interval_seconds: int | None = Field(
        None, ge=1, description="when set, `review` runs every N seconds instead of its cron"
    )
    review_collect_interval_seconds: int | None = Field(
        None,
        ge=1,
        description="when set, `review-collect` runs every N seconds instead of its cron",
    )
    promote_poll_seconds: int = Field(
        60,
        ge=1,
        description="interval of the `promote` deployment: approved challengers are "
        "promoted (and the service reloaded) at most this long after the approval",
    )
    service_url: str | None = Field(
        None,
        description="the BentoML service that promote/rollback ask to reload "
        "(POST /admin/reload); null = the one `casepilot up` started (its state file)",
    )
    drift_retrain_stages: tuple[str, ...] | None = Field(
        None,
        description="stages the drift automation retrains (null = all five; the rest keep "
        "their champion until the scheduled retrain)",
    )

    @model_validator(mode="after")
    def _known_stages(self) -> ScheduleConfig:
        from pipelines.data.contract import STAGES

        unknown = sorted(set(self.drift_retrain_stages or ()) - set(STAGES))
        if unknown or self.drift_retrain_stages == ():
            raise ValueError(
                f"drift_retrain_stages: {unknown or 'empty'}; use stages from "
                f"{', '.join(STAGES)}, or null for all"
            )
        return self

    @model_validator(mode="after")
    def _known_timezone(self) -> ScheduleConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA time zone; use e.g. 'UTC' or "
                "'Europe/Berlin'"
            ) from None
        return self


class ReviewConfig(Section):
    """The daily review queue in Label Studio (flows/lifecycle/review.py, monitoring/review_*)."""

    daily_size: int = Field(
        60,
        ge=4,
        description="predictions sent to reviewers per review run: the day's first run samples "
        "the last lookback_hours, a later run that day only the requests logged since",
    )
    lookback_hours: float = Field(
        24.0, gt=0, description="the day's sample is drawn from the log's last N hours"
    )
    seed: int = Field(11, description="sampling seed; the day's date is mixed in")
    low_confidence: float = Field(
        0.6, gt=0, lt=1, description="topic probability below which an answer is low-confidence"
    )
    stratum_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "answered": 1.0,
            "abstained": 2.0,
            "disagreement": 3.0,
            "low_confidence": 2.0,
        },
        description="oversampling weight per decision stratum (allocation ~ size x weight); "
        "topics are spread within each stratum (systematic sampling in topic order)",
    )
    double_label_share: float = Field(
        0.2, ge=0, le=1, description="share of sampled items labelled by two reviewers"
    )
    reviewers: tuple[str, ...] = Field(
        ("reviewer-1", "reviewer-2"),
        min_length=1,
        description="Label Studio reviewer accounts (passwords/tokens in the secrets folder)",
    )
    demo_error_rate: float = Field(
        0.05, ge=0, le=1, description="the demo's simulated reviewer mislabels this share"
    )
    port: int = Field(8089, ge=1, le=65535, description="Label Studio on 127.0.0.1")
    start_with_up: bool = Field(
        True,
        description="`casepilot up` starts Label Studio (false: the review flows use one "
        "already running on review.port)",
    )
    startup_timeout_s: float = Field(
        600.0,
        gt=0,
        description="how long `casepilot up` waits for Label Studio (first start: accounts, "
        "migrations check; minutes on a busy 2-core machine)",
    )
    project_title: str = Field("casepilot review", min_length=1)
    batch_prefix: str = Field(
        "review", min_length=1, description="reviewed batches land as <prefix>-<date>.jsonl"
    )

    @model_validator(mode="after")
    def _known_strata(self) -> ReviewConfig:
        known = {"answered", "abstained", "disagreement", "low_confidence"}
        unknown = set(self.stratum_weights) - known
        if unknown or any(w <= 0 for w in self.stratum_weights.values()):
            raise ValueError(
                f"stratum_weights: keys must be among {sorted(known)} with weights > 0 "
                f"(got {self.stratum_weights})"
            )
        return self


# `register` is a section name and also ABCMeta.register on every pydantic model; harmless here.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    """All of params.yaml, plus the resolved state folder."""

    data: DataConfig = DataConfig()
    trigger: TriggerConfig = TriggerConfig()
    topic: TopicConfig = TopicConfig()
    retrieve: RetrieveConfig = RetrieveConfig()
    answer: AnswerConfig = AnswerConfig()
    tone: ToneConfig = ToneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    register: RegisterConfig = RegisterConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    promote: PromoteConfig = PromoteConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    review: ReviewConfig = ReviewConfig()
    home: Home = Field(default_factory=Home.from_env, exclude=True)

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI: configured, or SQLite under CASEPILOT_HOME."""
        return self.register.tracking_uri or f"sqlite:///{self.home.mlflow / 'mlflow.db'}"

    @property
    def qdrant_location(self) -> str:
        """A Qdrant server URL (or folder) when configured, else ':memory:'.

        In memory, every process (a retrain's stages, the service, its shadow) restores the
        index from its own copy of the stage folder: nothing holds a folder lock that another
        process needs, so a retrain succeeds while the service serves.
        """
        return self.retrieve.qdrant_location or ":memory:"

    @property
    def prediction_log_url(self) -> str:
        """The prediction log's SQLAlchemy URL: configured, or SQLite under CASEPILOT_HOME."""
        return self.serve.prediction_log_url or f"sqlite:///{self.home.logs / 'predictions.db'}"


# (section, key) ← environment variable; the environment wins over params.yaml.
ENDPOINT_ENV: dict[tuple[str, str], str] = {
    ("register", "tracking_uri"): "CASEPILOT_MLFLOW_TRACKING_URI",
    ("schedule", "prefect_api_url"): "CASEPILOT_PREFECT_API_URL",
    ("retrieve", "qdrant_location"): "CASEPILOT_QDRANT_LOCATION",
    ("serve", "prediction_log_url"): "CASEPILOT_PREDICTION_LOG_URL",
}


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the key and the fix."""


def load_params(
    path: str | Path = "params.yaml",
    *,
    home: Home | None = None,
    env: Mapping[str, str] | None = None,
) -> Params:
    """Read params.yaml (a missing file means all defaults), apply env overrides, validate."""
    path = Path(path)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}"
        )
    return params_from_mapping(
        raw, source=str(path), home=home, env=os.environ if env is None else env
    )


def params_from_mapping(
    raw: Mapping[str, Any],
    *,
    source: str = "params.yaml",
    home: Home | None = None,
    env: Mapping[str, str] | None = None,
) -> Params:
    """Validate an already-parsed params mapping (see `load_params`)."""
    merged = {
        section: dict(value) if isinstance(value, dict) else value for section, value in raw.items()
    }
    for (section, key), var in ENDPOINT_ENV.items():
        if env and env.get(var):
            if not isinstance(merged.get(section, {}), dict):
                continue  # reported by validation below
            merged.setdefault(section, {})[key] = env[var]
    try:
        return Params.model_validate({**merged, "home": home or Home.from_env(env)})
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} problem(s):"]
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        key = ".".join(loc)
        if problem["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key. {_did_you_mean(loc)}")
        else:
            got = problem.get("input")
            lines.append(f"  - {key}: {problem['msg']} (got {got!r}). {_field_help(loc)}")
    return "\n".join(lines)


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Params
    for part in loc:
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return model


def _did_you_mean(loc: list[str]) -> str:
    parent = _model_at(loc[:-1])
    known = sorted(name for name in (parent.model_fields if parent else {}) if name != "home")
    close = difflib.get_close_matches(loc[-1], known, n=1)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    return f"{hint}Known keys here: {', '.join(known)}."


def _field_help(loc: list[str]) -> str:
    parent = _model_at(loc[:-1])
    field = parent.model_fields.get(loc[-1]) if parent else None
    if (
        field is None
        or isinstance(field.annotation, type)
        and issubclass(field.annotation, BaseModel)
    ):
        return "Fix the values of that section in params.yaml."
    described = f" ({field.description})" if field.description else ""
    default = field.get_default(call_default_factory=True)
    return f"Fix: set a valid value{described}; the default is {default!r}."
