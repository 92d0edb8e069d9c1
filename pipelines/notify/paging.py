"""Page on-call: PagerDuty Events API v2, a Slack incoming webhook, a generic webhook, or a log.

Every page carries a dedup key; a page whose key was sent within `cooldown_minutes` is
suppressed. The cooldown state is a small JSON file under CASEPILOT_HOME/logs, so it survives
restarts. Delivery problems never raise: `page()` returns a `PageResult` that says what happened.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from pipelines.config import PagerConfig, Params

STATE_FILE = "paging-state.json"
LOG_FILE = "pages.jsonl"
Severity = Literal["critical", "error", "warning", "info"]

_state_lock = threading.Lock()


class PageEvent(BaseModel):
    """What to page about: a summary, a dedup key, and a link to the evidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: str = Field(min_length=1)
    dedup_key: str = Field(min_length=1, max_length=255)
    severity: Severity = "error"
    source: str = "casepilot"
    link: str | None = Field(None, description="URL of the evidence (dashboard, report, run)")
    link_text: str = "evidence"
    details: dict[str, Any] = Field(default_factory=dict)


class PageResult(BaseModel):
    """The outcome of one `page()` call."""

    model_config = ConfigDict(frozen=True)

    status: Literal["sent", "suppressed", "failed"]
    kind: str
    dedup_key: str
    reason: str
    http_status: int | None = None


class _RetryableStatus(Exception):
    """The receiver answered 429 or 5xx: worth another attempt."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def pagerduty_body(event: PageEvent, routing_key: str, now: datetime) -> dict[str, Any]:
    """The PagerDuty Events API v2 `trigger` body for an event."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": event.dedup_key,
        "client": "casepilot",
        "payload": {
            "summary": event.summary[:1024],
            "source": event.source,
            "severity": event.severity,
            "timestamp": now.isoformat(),
            "custom_details": event.model_dump(mode="json")["details"],
        },
    }
    if event.link:
        body["links"] = [{"href": event.link, "text": event.link_text}]
    return body


def slack_body(event: PageEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message for an event (mrkdwn link to the evidence)."""
    text = f"*{event.severity.upper()}* [{event.source}] {event.summary}"
    if event.link:
        text += f"\n<{event.link}|{event.link_text}>"
    return {"text": text}


def webhook_body(event: PageEvent, now: datetime) -> dict[str, Any]:
    """A generic webhook body: the event as JSON, with links in the PagerDuty shape."""
    body = event.model_dump(mode="json", exclude={"link", "link_text"})
    body["timestamp"] = now.isoformat()
    body["links"] = [{"href": event.link, "text": event.link_text}] if event.link else []
    return body


def page(
    event: PageEvent,
    params: Params,
    *,
    now: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> PageResult:
    """Send `event` to the configured pager unless its dedup key is cooling down.

    `now` (the clock) and `env` (for the routing key) are injectable for tests.
    """
    cfg = params.monitor.pager
    now = (now or datetime.now(UTC)).astimezone(UTC)
    env = os.environ if env is None else env
    state_path = params.home.logs / STATE_FILE

    def result(status: str, reason: str, http_status: int | None = None) -> PageResult:
        return PageResult(
            status=status,
            kind=cfg.kind,
            dedup_key=event.dedup_key,
            reason=reason,
            http_status=http_status,
        )

    with _state_lock:
        state = _read_state(state_path)
        last = state.get(event.dedup_key, {}).get("last_sent_at")
        if last is not None:
            until = datetime.fromisoformat(last) + timedelta(minutes=cfg.cooldown_minutes)
            if now < until:
                entry = state[event.dedup_key]
                entry["suppressed"] = entry.get("suppressed", 0) + 1
                _write_state(state_path, state)
                return result(
                    "suppressed", f"same dedup key paged at {last}; cooling down until {until}"
                )

    if cfg.kind == "log":
        _append_log(params.home.logs / LOG_FILE, webhook_body(event, now))
        outcome = result("sent", f"written to {params.home.logs / LOG_FILE}")
    else:
        outcome = _deliver(event, cfg, now, env, result)

    if outcome.status == "sent":
        with _state_lock:
            state = _read_state(state_path)
            state[event.dedup_key] = {"last_sent_at": now.isoformat(), "suppressed": 0}
            _write_state(state_path, state)
    return outcome


def _deliver(
    event: PageEvent,
    cfg: PagerConfig,
    now: datetime,
    env: Mapping[str, str],
    result: Callable[..., PageResult],
) -> PageResult:
    """Build the kind's body and POST it; every delivery problem becomes a failed result."""
    if cfg.kind == "pagerduty":
        routing_key = env.get(cfg.routing_key_env)
        if not routing_key:
            return result(
                "failed",
                f"no PagerDuty routing key: set the env var {cfg.routing_key_env} "
                "(monitor.pager.routing_key_env names it)",
            )
        body = pagerduty_body(event, routing_key, now)
    elif cfg.kind == "slack":
        body = slack_body(event)
    else:
        body = webhook_body(event, now)

    try:
        response = _post_with_retries(cfg, body)
    except _RetryableStatus as err:
        response = err.response
        return result(
            "failed",
            f"{cfg.url} answered HTTP {response.status_code} after {cfg.retries} attempt(s): "
            f"{response.text[:200]}",
            response.status_code,
        )
    except httpx.HTTPError as err:
        return result(
            "failed", f"could not reach {cfg.url} after {cfg.retries} attempt(s): {err!r}"
        )
    if not response.is_success:
        return result(
            "failed",
            f"{cfg.url} refused the page: HTTP {response.status_code} {response.text[:200]}",
            response.status_code,
        )
    return result("sent", f"{cfg.url} accepted: HTTP {response.status_code}", response.status_code)


def _post_with_retries(cfg: PagerConfig, body: dict[str, Any]) -> httpx.Response:
    """POST JSON to the configured URL, retrying transport errors, 429 and 5xx with backoff."""
    retrying = Retrying(
        stop=stop_after_attempt(cfg.retries),
        wait=wait_exponential(multiplier=cfg.retry_backoff_s, max=30),
        retry=retry_if_exception_type((_RetryableStatus, httpx.TransportError)),
        reraise=True,
    )
    # trust_env=False: no proxy from the environment; the page goes to exactly cfg.url.
    with httpx.Client(timeout=cfg.timeout_s, trust_env=False, follow_redirects=False) as client:
        for attempt in retrying:  # reraise=True: the last error propagates once attempts run out
            with attempt:
                response = client.post(cfg.url, json=body)
                if response.status_code == 429 or response.status_code >= 500:
                    raise _RetryableStatus(response)
    return response


def _read_state(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, OSError):
        return {}  # a damaged state file must not stop a page; it is rewritten on the next send


def _write_state(path: Path, state: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old state or the new one, never half


def _append_log(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(body, default=str) + "\n")
