"""The copilot service: champion suggestions, challenger in shadow, a prediction log, reloads.

    bentoml serve bentos.service:CopilotService --host 127.0.0.1 --port 3000  # or casepilot serve

Routes: `POST /suggest`, `POST /feedback` (API key), `POST /admin/reload`, `/admin/flush` and
`/admin/status` (API key), BentoML's `/livez`, `/readyz` (503 until the models are loaded) and
`/metrics`; `GET /` is a JSON index (bentos/surfaces.py).

Durability: `/suggest` answers only after the request's row (champion, redacted message) is
committed to the prediction log (`logged: true` in the response); the shadow's result is added
to that row later, or the row says why it is missing (`shadow_status`: error, timeout, shed, ...,
`lost` with the reason when the service restarted first). If the log cannot commit within
`serve.log_commit_timeout_s` the champion still answers, with `logged: false` (the record stays
queued and lands when the log is back, unless the process dies first).
Models come from the MLflow registry by alias (`champion`, shadow `challenger`); with
`CASEPILOT_MODELS_DIR` set, from `<dir>/<alias>/<stage>/` folders instead. Params are read from
`CASEPILOT_PARAMS` (default `params.yaml`). The API handlers hand requests to the same
`Cascade` every other caller uses; batching, shadowing and logging live in `bentos/`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import bentoml
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import Field, StrictBool

from bentos.api import (
    MAX_MESSAGE_CHARS,
    FeedbackResponse,
    FlushResponse,
    ModelsResponse,
    StatusResponse,
    SuggestResponse,
    TurnIn,
    metrics,
)
from bentos.batching import MicroBatcher
from bentos.guard import NOT_READY, GuardMiddleware
from bentos.inflight import InFlight
from bentos.request_log import RequestLog
from bentos.runtime import build_reloader, serve_params, shadow_fault_hook, torch_threads
from bentos.shadow import ShadowJob, ShadowRunner
from bentos.surfaces import bounded_metrics, install_log_filter
from pipelines.data.contract import Suggestion, Turn

log = logging.getLogger("casepilot.service")

MAX_TURNS, MAX_ID_CHARS = 50, 200


@bentoml.service(
    name="casepilot-copilot",
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 512},
    http={"host": "127.0.0.1"},
)
class CopilotService:
    """Serves the champion cascade; shadows the challenger; logs every request and feedback."""

    def __init__(self) -> None:
        install_log_filter()
        self._closing = threading.Event()
        params = serve_params()
        cfg = params.serve
        self.requests = RequestLog(params.prediction_log_url)  # the prediction log's writer
        self.reloader = build_reloader(params)
        self.champion = MicroBatcher(
            self._champion_batch,
            max_batch_size=cfg.max_batch_size,
            linger_ms=min(cfg.batch_linger_ms, cfg.max_latency_ms),
            name="champion",
            initializer=functools.partial(torch_threads, cfg.torch_threads),
        )
        self.in_flight = InFlight()  # champion requests being served: the shadow yields to them
        self.shadow = ShadowRunner(
            self._shadow_batch,
            self.requests.record_shadow,
            timeout_s=cfg.shadow_timeout_s,
            queue_size=cfg.shadow_queue_size,
            max_batch=cfg.shadow_max_batch,
            initializer=functools.partial(torch_threads, cfg.torch_threads),
            in_flight=self.in_flight,
            quiet_s=cfg.shadow_quiet_ms / 1000,
            nice=cfg.shadow_nice,
        )
        self._loader = threading.Thread(target=self._first_load, name="model-load", daemon=True)
        self._loader.start()
        threading.Thread(
            target=self._exit_when_orphaned, args=(os.getppid(),), name="orphan-watch", daemon=True
        ).start()

    def _exit_when_orphaned(self, parent: int) -> None:
        """Exit once BentoML's arbiter is gone (e.g. kill -9 of its process group).

        The worker runs in a process group of its own, so killing the arbiter's group leaves it
        running, holding the port, the embedded Qdrant lock and the prediction log. It stops
        taking work, writes what it has (bounded) and exits.
        """
        while not self._closing.wait(1.0):
            if os.getppid() == parent:
                continue
            log.error("arbiter (pid %d) is gone; flushing the prediction log and exiting", parent)
            with contextlib.suppress(Exception):
                self.shadow.close(timeout=5)
            with contextlib.suppress(Exception):
                self.requests.writer.close(timeout=10)
            os._exit(70)

    # ------------------------------------------------------------ models

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
        shadow_fault_hook()
        return models.shadow.suggest_batch([j.message for j in jobs], [j.context for j in jobs])

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
        job = ShadowJob(
            request_id, case_id, message, turns, suggestion, latency_ms, datetime.now(UTC)
        )
        # durable before the 200 (or logged=false)
        logged = await self.requests.commit(job, serve_params().serve.log_commit_timeout_s)
        self.shadow.submit(job)  # after the row was queued: its update can never come first
        return SuggestResponse(
            request_id=request_id,
            case_id=case_id,
            abstained=outcome == "abstained",
            suggestion=suggestion,
            latency_ms=latency_ms,
            logged=logged,
        )

    @bentoml.api(route="/feedback")
    async def feedback(
        self,
        case_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)],
        sent_reply: Annotated[str, Field(max_length=4 * MAX_MESSAGE_CHARS)],
        used_suggestion: StrictBool,
        ctx: bentoml.Context,
    ) -> FeedbackResponse:
        """Store what the agent sent (redacted) and whether they used the suggestion.

        404 for a case with no logged suggestion, 409 for a second, different feedback on a
        case; the same feedback again is idempotent (200, `stored: false`). `used_suggestion`
        must be a JSON boolean (`"yes"` or 1 is a 400).
        """
        status, stored, error = await self.requests.store_feedback(
            case_id, sent_reply, used_suggestion
        )
        ctx.response.status_code = status
        return FeedbackResponse(case_id=case_id, stored=stored, error=error)

    @bentoml.api(route="/admin/reload")
    async def reload(self, force: bool = False) -> ModelsResponse:
        """Re-resolve the aliases now and swap models if they moved (or when `force`)."""
        reloaded = await anyio.to_thread.run_sync(lambda: self._check(force))
        return ModelsResponse(reloaded=reloaded, **self._models())

    def _models(self) -> dict[str, Any]:
        models, source = self.reloader.current, self.reloader.source
        return {
            "champion": models.champion.versions if models else {},
            "shadow": models.shadow.versions if models and models.shadow else None,
            "last_error": self.reloader.last_error,
            "shadow_error": self.reloader.shadow_error,
            "store_replaced": getattr(source, "store_replaced", None),
        }

    @bentoml.api(route="/admin/status")
    async def status(self) -> StatusResponse:
        """What the service runs and why not more: models, errors, log writes, shadow runs."""
        return StatusResponse(
            reloaded=False,
            **self._models(),
            log=self.requests.counts(),
            shadow_runs=self.shadow.stats(),
        )

    def _check(self, force: bool) -> bool:
        try:
            return self.reloader.check(force=force)
        except Exception:  # noqa: BLE001 - reported in last_error
            return False

    @bentoml.api(route="/admin/flush")
    async def flush(
        self, timeout_s: Annotated[float, Field(ge=0.001, le=300)] = 30.0
    ) -> FlushResponse:
        """Wait until every request so far is shadowed and written to the prediction log."""

        def wait() -> bool:
            deadline = time.monotonic() + timeout_s
            drained = self.shadow.drain(timeout_s)
            return drained and self.requests.flush(max(0.0, deadline - time.monotonic()))

        flushed = await anyio.to_thread.run_sync(wait)
        return FlushResponse(
            flushed=flushed,
            shadow=self.shadow.stats(),
            written=self.requests.written(),
            batches=self.champion.stats(),
        )

    async def __metrics__(self, content: str) -> str:
        """/metrics with unknown request paths folded into one label set (bentos/surfaces.py)."""
        return bounded_metrics(content)

    @bentoml.on_shutdown
    def close(self) -> None:
        """Stop polling, finish shadow jobs (as 'stopped'), flush the prediction log."""
        self._closing.set()
        self.reloader.stop()
        self.shadow.close(timeout=30)
        self.champion.close()
        self.requests.close()


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
