"""The service's request and response models and its own Prometheus counters.

Kept apart from `bentos.service` so the route handlers read as a short list; the response
fields are the API's contract (`SuggestResponse.logged` says what the prediction log holds).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import bentoml
from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.contract import Suggestion

MAX_MESSAGE_CHARS = 4000


class TurnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["customer", "agent"]
    text: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class SuggestResponse(BaseModel):
    request_id: str
    case_id: str
    abstained: bool
    suggestion: Suggestion
    latency_ms: float
    logged: bool = Field(
        description="true: this request's row was committed to the prediction log before this "
        "response was sent; false: the log did not commit in time (the row is queued)"
    )


class FeedbackResponse(BaseModel):
    case_id: str
    stored: bool
    error: str | None = None


class ModelsResponse(BaseModel):
    reloaded: bool
    champion: dict[str, str]
    shadow: dict[str, str] | None
    last_error: str | None = None
    shadow_error: str | None = None  # why the challenger is not shadowed (failed to load)
    store_replaced: str | None = None  # the MLflow store file changed under the service


class StatusResponse(ModelsResponse):
    log: dict[str, int]
    shadow_runs: dict[str, int]


class FlushResponse(BaseModel):
    flushed: bool
    shadow: dict[str, int]
    written: int
    batches: dict[str, int] = Field(default_factory=dict)  # champion: batches, items, largest


# ---------------------------------------------------------------- metrics


@functools.cache
def metrics() -> dict[str, Any]:
    """The service's own Prometheus counters (served on BentoML's /metrics)."""
    return {
        "suggestions": bentoml.metrics.Counter(
            name="casepilot_suggestions_total",
            documentation="Champion suggestions by outcome",
            labelnames=["outcome"],
        ),
        "abstentions": bentoml.metrics.Counter(
            name="casepilot_abstentions_total",
            documentation="Champion abstentions by stage",
            labelnames=["stage"],
        ),
        "shadow": bentoml.metrics.Counter(
            name="casepilot_shadow_runs_total",
            documentation="Shadow runs by outcome",
            labelnames=["outcome"],
        ),
        "shadow_failures": bentoml.metrics.Counter(
            name="casepilot_shadow_failures_total",
            documentation="Shadow runs that failed (error, timeout, paused); shed is not a failure",
            labelnames=["kind"],
        ),
        "reloads": bentoml.metrics.Counter(
            name="casepilot_model_reloads_total",
            documentation="Model (re)loads by result",
            labelnames=["result"],
        ),
        "auth_refused": bentoml.metrics.Counter(
            name="casepilot_auth_refused_total",
            documentation="Requests refused for the API key",
            labelnames=["status"],
        ),
        "unlogged": bentoml.metrics.Counter(
            name="casepilot_unlogged_responses_total",
            documentation="Answers sent before their prediction-log row committed (logged=false)",
            labelnames=["reason"],
        ),
    }
