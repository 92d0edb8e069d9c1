"""params.yaml `monitor:`: drift windows, breach rule and the pager."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.section import Section


class PagerConfig(Section):
    """Where pages go (pipelines/notify/paging.py): a JSON-lines log, PagerDuty, Slack, webhook."""

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
