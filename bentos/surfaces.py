"""What the service shows the outside besides its API: error logs, /metrics, the index page.

- `QuietClientErrors`: BentoML logs every rejected request (pydantic validation, bad JSON, any
  4xx `BentoMLException`) at ERROR with a traceback, and pydantic's traceback carries the raw
  `input_value` (a card number in the message ends up in the log). This logging filter turns
  those records into one WARNING line naming the route, the error count and the fields; the
  input never reaches a handler. Server errors (5xx) keep their traceback.
- `bounded_metrics`: BentoML's HTTP metrics middleware runs outside every user middleware and
  labels by the raw request path, so each unknown path would add label sets to /metrics. The
  service's `__metrics__` hook passes the exposition through this, which folds every endpoint
  that is not a route of the service into one `endpoint="<other>"` label set (summing values).
- `INDEX`: the JSON served at `/` instead of BentoML's Swagger page (which loads a third-party
  tag manager, against the project's telemetry-off stance).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from pydantic import ValidationError

OTHER_ENDPOINT = "<other>"
ROUTES = (
    "/suggest",
    "/feedback",
    "/admin/reload",
    "/admin/flush",
    "/admin/status",
    "/livez",
    "/readyz",
    "/healthz",
    "/metrics",
    "/docs.json",
    "/schema.json",
    "/",
)
INDEX = {
    "service": "casepilot-copilot",
    "routes": {
        "POST /suggest": "a suggested reply for a customer message, or an abstention",
        "POST /feedback": "what the agent sent (API key)",
        "POST /admin/reload": "re-resolve the model aliases (API key)",
        "POST /admin/flush": "wait for shadow runs and log writes (API key)",
        "POST /admin/status": "models, challenger error, log and shadow counts (API key)",
        "GET /livez, /readyz": "liveness; readiness (503 until the models are loaded)",
        "GET /metrics": "Prometheus metrics",
        "GET /docs.json": "OpenAPI specification",
    },
}
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>.*)\} (?P<value>\S+)(?P<rest>.*)$")
_ENDPOINT = re.compile(r'endpoint="((?:[^"\\]|\\.)*)"')


def _client_error(exc: BaseException | None) -> bool:
    from bentoml.exceptions import BentoMLException

    if isinstance(exc, ValidationError):
        return True
    return isinstance(exc, BentoMLException) and int(exc.error_code) < 500


class QuietClientErrors(logging.Filter):
    """Rewrites BentoML's ERROR-with-traceback for a rejected request into one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not _client_error(exc):
            return True
        route = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        if isinstance(exc, ValidationError):
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            why = f"{exc.error_count()} validation error(s) in {', '.join(fields) or 'body'}"
        else:
            why = f"{type(exc).__name__} ({int(exc.error_code)})"  # type: ignore[union-attr]
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "rejected request to %s: %s", (route, why)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install_log_filter() -> None:
    """Attach `QuietClientErrors` to the loggers BentoML reports request errors on."""
    for name in ("bentoml._internal.server.http_app", "bentoml.serve", "bentoml"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietClientErrors) for f in logger.filters):
            logger.addFilter(QuietClientErrors())


def _number(text: str) -> float:
    return float(text)


def bounded_metrics(exposition: str, routes: Iterable[str] = ROUTES) -> str:
    """The exposition with every unknown `endpoint` label folded into one `<other>` label set."""
    known = set(routes)
    out: list[str] = []
    folded: dict[str, float] = {}  # new sample line head -> summed value
    where: dict[str, int] = {}  # its index in `out`
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        endpoint = _ENDPOINT.search(match["labels"]) if match else None
        if match is None or endpoint is None or endpoint.group(1) in known:
            out.append(line)
            continue
        labels = _ENDPOINT.sub(f'endpoint="{OTHER_ENDPOINT}"', match["labels"], count=1)
        head = f"{match['name']}{{{labels}}}"
        if head not in folded:
            folded[head], where[head] = 0.0, len(out)
            out.append("")
        folded[head] += _number(match["value"])
    for head, total in folded.items():
        out[where[head]] = f"{head} {total!r}"
    return "\n".join(out) + "\n"
