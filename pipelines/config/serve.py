"""params.yaml `serve:`: the BentoML service, its shadow, batching and prediction log."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.section import Section


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
