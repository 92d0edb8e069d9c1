"""The copilot service: champion suggestions, challenger in shadow, a prediction log, reloads.

    bentoml serve bentos.service:CopilotService --host 127.0.0.1 --port 3000  # or casepilot serve

Routes: `POST /suggest`, `POST /feedback` (API key), `POST /admin/reload` and `POST /admin/flush`
(API key), BentoML's `/livez`, `/readyz` (503 until the models are loaded) and `/metrics`.
Models come from the MLflow registry by alias (`champion`, shadow `challenger`); with
`CASEPILOT_MODELS_DIR` set, from `<dir>/<alias>/<stage>/` folders instead. Params are read from
`CASEPILOT_PARAMS` (default `params.yaml`). The API handlers hand requests to the same
`Cascade` every other caller uses; batching, shadowing and logging live in `bentos/`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field

from bentos.batching import MicroBatcher
from bentos.guard import NOT_READY, GuardMiddleware
from bentos.inflight import InFlight
from bentos.reload import CHALLENGER, CHAMPION, FolderSource, RegistrySource, Reloader, StageCache
from bentos.shadow import FAILURES, ShadowJob, ShadowResult, ShadowRunner
from pipelines.config import Params, load_params
from pipelines.contract import Feedback, PredictionRecord, Suggestion, Turn

log = logging.getLogger("casepilot.service")

PARAMS_ENV = "CASEPILOT_PARAMS"
MODELS_DIR_ENV = "CASEPILOT_MODELS_DIR"
ALIAS_ENV, SHADOW_ALIAS_ENV = "CASEPILOT_SERVE_ALIAS", "CASEPILOT_SHADOW_ALIAS"
# Test hook, off unless set: a file whose content ("crash", "hang", "slow" or "none") makes the
# shadow challenger fail that way, so tests can show the champion is unaffected.
TEST_FAULT_ENV = "CASEPILOT_TEST_SHADOW_FAULT_FILE"
MAX_MESSAGE_CHARS, MAX_TURNS, MAX_ID_CHARS = 4000, 50, 200


@functools.cache
def serve_params() -> Params:
    """params.yaml of this process (`CASEPILOT_PARAMS`), loaded once."""
    params = load_params(os.environ.get(PARAMS_ENV, "params.yaml"))
    params.home.apply()
    return params


# ---------------------------------------------------------------- IO models


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


class FeedbackResponse(BaseModel):
    case_id: str
    stored: bool


class ModelsResponse(BaseModel):
    reloaded: bool
    champion: dict[str, str]
    shadow: dict[str, str] | None
    last_error: str | None = None


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
    }


# ---------------------------------------------------------------- the service


def _fault_hook() -> None:
    """Test hook (`CASEPILOT_TEST_SHADOW_FAULT_FILE`): make the shadow run crash, hang or stall."""
    path = os.environ.get(TEST_FAULT_ENV)
    if not path:
        return
    mode = Path(path).read_text(encoding="utf-8").strip() if Path(path).exists() else "none"
    if mode == "crash":
        raise RuntimeError("injected shadow crash (test hook)")
    if mode == "slow":
        time.sleep(1.5 * serve_params().serve.shadow_timeout_s)
    while mode == "hang":  # until the test clears the file
        time.sleep(0.05)
        mode = Path(path).read_text(encoding="utf-8").strip() if Path(path).exists() else "none"


def _torch_threads(threads: int) -> None:
    """Set torch intra-op threads for the calling thread (OpenMP keeps that per thread)."""
    import torch

    torch.set_num_threads(threads)


def _redacted(text: str) -> str:
    """The text with PII replaced; a placeholder if redaction fails (raw text is never logged)."""
    from pipelines.redact import redact_text

    try:
        return redact_text(text).text
    except Exception:  # noqa: BLE001 - never log unredacted text
        log.exception("redaction failed; logging a placeholder")
        return "<REDACTION_FAILED>"


@bentoml.service(
    name="casepilot-copilot",
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 512},
    http={"host": "127.0.0.1"},
)
class CopilotService:
    """Serves the champion cascade; shadows the challenger; logs every request and feedback."""

    def __init__(self) -> None:
        from monitoring.prediction_log import PredictionLog
        from monitoring.prediction_writer import BufferedPredictionWriter

        params = serve_params()
        cfg = params.serve
        self.log = PredictionLog.from_url(params.prediction_log_url)
        self.writer = BufferedPredictionWriter(self.log, max_batch=64, flush_interval_s=0.2)
        models_dir = os.environ.get(MODELS_DIR_ENV)
        source = FolderSource(Path(models_dir)) if models_dir else RegistrySource(params)
        self.reloader = Reloader(
            source,
            StageCache(self._load_stage),
            cfg.shadow,
            champion_alias=os.environ.get(ALIAS_ENV, CHAMPION),
            shadow_alias=os.environ.get(SHADOW_ALIAS_ENV, CHALLENGER),
            on_reload=lambda result: metrics()["reloads"].labels(result=result).inc(),
        )
        self.champion = MicroBatcher(
            self._champion_batch,
            max_batch_size=cfg.max_batch_size,
            linger_ms=min(cfg.batch_linger_ms, cfg.max_latency_ms),
            name="champion",
            initializer=functools.partial(_torch_threads, cfg.torch_threads),
        )
        self.in_flight = InFlight()  # champion requests being served: the shadow yields to them
        self.shadow = ShadowRunner(
            self._shadow_batch,
            self._record,
            timeout_s=cfg.shadow_timeout_s,
            queue_size=cfg.shadow_queue_size,
            max_batch=cfg.shadow_max_batch,
            initializer=functools.partial(_torch_threads, cfg.torch_threads),
            in_flight=self.in_flight,
            quiet_s=cfg.shadow_quiet_ms / 1000,
            nice=cfg.shadow_nice,
        )
        self._loader = threading.Thread(target=self._first_load, name="model-load", daemon=True)
        self._loader.start()

    # ------------------------------------------------------------ models

    @staticmethod
    def _load_stage(stage: str, local_dir: Path) -> Any:
        from pipelines.registry import load_stage_folder

        return load_stage_folder(stage, local_dir, qdrant_location=serve_params().qdrant_location)

    def _first_load(self) -> None:
        try:
            self.reloader.check(force=True)
        except Exception:  # noqa: BLE001 - readiness stays false; the poller retries (<= 5 s)
            log.exception("initial model load failed; /readyz stays 503 until it succeeds")
        self.reloader.start(serve_params().serve.reload_poll_s)

    def __is_ready__(self) -> bool:
        return self.reloader.current is not None

    def _champion_batch(self, items: Sequence[tuple[str, tuple[Turn, ...]]]) -> list[Suggestion]:
        models = self.reloader.current
        assert models is not None
        return models.champion.suggest_batch([m for m, _ in items], [c for _, c in items])

    def _shadow_batch(self, jobs: Sequence[ShadowJob]) -> list[Suggestion | None]:
        models = self.reloader.current
        if models is None or models.shadow is None:
            return [None] * len(jobs)
        _fault_hook()
        return models.shadow.suggest_batch([j.message for j in jobs], [j.context for j in jobs])

    def _record(self, result: ShadowResult) -> None:
        """Write one request's record (champion, shadow, versions, latency) to the log."""
        job = result.job
        metrics()["shadow"].labels(outcome=result.outcome).inc()
        if result.outcome in FAILURES:
            metrics()["shadow_failures"].labels(kind=result.outcome).inc()
            log.warning(
                "shadow %s for request %s: %s", result.outcome, job.request_id, result.error
            )
        self.writer.submit(
            PredictionRecord(
                request_id=job.request_id,
                case_id=job.case_id,
                created_at=job.created_at,
                message=_redacted(job.message),
                champion=job.champion,
                shadow=result.suggestion,
                shadow_error=result.error,
                latency_ms=job.latency_ms,
            )
        )

    # ------------------------------------------------------------ routes

    @bentoml.api(route="/suggest")
    async def suggest(
        self,
        case_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)],
        message: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)],
        context: Annotated[list[TurnIn], Field(max_length=MAX_TURNS)] = [],  # noqa: B006
    ) -> SuggestResponse:
        """A suggested reply for the customer's message, or an abstention with its reason."""
        started = time.perf_counter()
        if self.reloader.current is None:
            raise ServiceUnavailable(NOT_READY)
        turns = tuple(Turn(role=t.role, text=t.text) for t in context)
        with self.in_flight.track():
            suggestion = await self.champion.submit((message, turns))
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = uuid.uuid4().hex
        outcome = "abstained" if suggestion.text is None else "emitted"
        metrics()["suggestions"].labels(outcome=outcome).inc()
        if suggestion.stopped_at:
            metrics()["abstentions"].labels(stage=suggestion.stopped_at).inc()
        self.shadow.submit(
            ShadowJob(
                request_id, case_id, message, turns, suggestion, latency_ms, datetime.now(UTC)
            )
        )
        return SuggestResponse(
            request_id=request_id,
            case_id=case_id,
            abstained=outcome == "abstained",
            suggestion=suggestion,
            latency_ms=latency_ms,
        )

    @bentoml.api(route="/feedback")
    async def feedback(
        self,
        case_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)],
        sent_reply: Annotated[str, Field(max_length=4 * MAX_MESSAGE_CHARS)],
        used_suggestion: bool,
    ) -> FeedbackResponse:
        """Store what the agent actually sent (redacted) and whether they used the suggestion."""
        item = Feedback(
            case_id=case_id,
            sent_reply=sent_reply,
            used_suggestion=used_suggestion,
            created_at=datetime.now(UTC),
        )

        def store() -> int:
            return self.log.write_feedback(
                item.model_copy(update={"sent_reply": _redacted(item.sent_reply)})
            )

        stored = await anyio.to_thread.run_sync(store)
        return FeedbackResponse(case_id=case_id, stored=stored == 1)

    @bentoml.api(route="/admin/reload")
    async def reload(self, force: bool = False) -> ModelsResponse:
        """Re-resolve the aliases now and swap models if they moved (or when `force`)."""
        reloaded = await anyio.to_thread.run_sync(lambda: self._check(force))
        models = self.reloader.current
        return ModelsResponse(
            reloaded=reloaded,
            champion=models.champion.versions if models else {},
            shadow=models.shadow.versions if models and models.shadow else None,
            last_error=self.reloader.last_error,
        )

    def _check(self, force: bool) -> bool:
        try:
            return self.reloader.check(force=force)
        except Exception:  # noqa: BLE001 - reported in last_error
            return False

    @bentoml.api(route="/admin/flush")
    async def flush(self, timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0) -> FlushResponse:
        """Wait until every request so far is shadowed and written to the prediction log."""

        def wait() -> bool:
            deadline = time.monotonic() + timeout_s
            drained = self.shadow.drain(timeout_s)
            return drained and self.writer.flush(max(0.0, deadline - time.monotonic()))

        flushed = await anyio.to_thread.run_sync(wait)
        return FlushResponse(
            flushed=flushed,
            shadow=self.shadow.stats(),
            written=self.writer.stats().written,
            batches=self.champion.stats(),
        )

    @bentoml.on_shutdown
    def close(self) -> None:
        """Stop polling, finish shadow jobs (as 'stopped'), flush the prediction log."""
        self.reloader.stop()
        self.shadow.close(timeout=30)
        self.champion.close()
        self.writer.close()
        self.log.close()


def _models_ready() -> bool:
    try:
        service = bentoml.get_current_service()
    except BentoMLException:
        return False
    return getattr(getattr(service, "reloader", None), "current", None) is not None


CopilotService.add_asgi_middleware(
    GuardMiddleware,
    settings=lambda: serve_params().serve,
    ready=_models_ready,
    on_refused=lambda status: metrics()["auth_refused"].labels(status=str(status)).inc(),
)
