"""Paging against a real HTTP receiver on 127.0.0.1: formats, dedup cooldown, failures."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.config import ConfigError, Params, params_from_mapping
from pipelines.home import Home
from pipelines.notify.paging import LOG_FILE, STATE_FILE, PageEvent, page

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
EVENT = PageEvent(
    summary="Embedding drift 0.71 > 0.55 in 2 of the last 3 windows",
    dedup_key="casepilot-drift-message",
    severity="critical",
    source="casepilot-monitor",
    link="http://127.0.0.1:8000/projects/casepilot",
    link_text="Evidently dashboard",
    details={"drift_score": 0.71, "window_end": T0},
)
ENV = {"CASEPILOT_PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY"}


class Receiver:
    """A loopback HTTP server that records every POST and answers with `status`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 202
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b'{"status": "success"}' if receiver.status < 300 else b"boom")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v2/enqueue"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def make_params(tmp_path: Path, **pager) -> Params:
    pager = {"cooldown_minutes": 60, "retries": 2, "retry_backoff_s": 0, "timeout_s": 5, **pager}
    return params_from_mapping({"monitor": {"pager": pager}}, home=Home(tmp_path / "home"), env={})


def test_pagerduty_event_then_cooldown_then_again(receiver: Receiver, tmp_path: Path) -> None:
    params = make_params(tmp_path, kind="pagerduty", url=receiver.url)

    sent = page(EVENT, params, now=T0, env=ENV)
    assert sent.status == "sent" and sent.http_status == 202
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/v2/enqueue" and request["type"] == "application/json"
    body = request["json"]
    assert body["routing_key"] == "R0UT1NGKEY"
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "casepilot-drift-message"
    assert body["payload"]["summary"] == EVENT.summary
    assert body["payload"]["severity"] == "critical"
    assert body["payload"]["source"] == "casepilot-monitor"
    assert body["payload"]["custom_details"]["drift_score"] == 0.71
    assert body["links"] == [{"href": EVENT.link, "text": "Evidently dashboard"}]

    again = page(EVENT, params, now=T0 + timedelta(minutes=59), env=ENV)
    assert again.status == "suppressed" and "cooling down" in again.reason
    assert len(receiver.requests) == 1

    other = EVENT.model_copy(update={"dedup_key": "casepilot-match-rate"})
    assert page(other, params, now=T0 + timedelta(minutes=1), env=ENV).status == "sent"

    state = json.loads((params.home.logs / STATE_FILE).read_text())
    assert state["casepilot-drift-message"]["suppressed"] == 1

    later = page(EVENT, params, now=T0 + timedelta(minutes=61), env=ENV)
    assert later.status == "sent"
    assert [r["json"]["dedup_key"] for r in receiver.requests] == [
        "casepilot-drift-message",
        "casepilot-match-rate",
        "casepilot-drift-message",
    ]


def test_cooldown_survives_a_restart(receiver: Receiver, tmp_path: Path) -> None:
    params = make_params(tmp_path, kind="webhook", url=receiver.url)
    assert page(EVENT, params, now=T0).status == "sent"
    # a new process: nothing in memory, only the state file under CASEPILOT_HOME/logs
    reloaded = make_params(tmp_path, kind="webhook", url=receiver.url)
    assert page(EVENT, reloaded, now=T0 + timedelta(minutes=5)).status == "suppressed"
    assert len(receiver.requests) == 1


def test_slack_format(receiver: Receiver, tmp_path: Path) -> None:
    receiver.status = 200
    params = make_params(tmp_path, kind="slack", url=receiver.url)
    assert page(EVENT, params, now=T0).status == "sent"
    body = receiver.requests[0]["json"]
    assert set(body) == {"text"}
    assert EVENT.summary in body["text"] and "CRITICAL" in body["text"]
    assert f"<{EVENT.link}|Evidently dashboard>" in body["text"]


def test_generic_webhook_format(receiver: Receiver, tmp_path: Path) -> None:
    params = make_params(tmp_path, kind="webhook", url=receiver.url)
    assert page(EVENT, params, now=T0).status == "sent"
    body = receiver.requests[0]["json"]
    assert body["summary"] == EVENT.summary and body["dedup_key"] == EVENT.dedup_key
    assert body["severity"] == "critical" and body["timestamp"] == T0.isoformat()
    assert body["links"] == [{"href": EVENT.link, "text": "Evidently dashboard"}]
    assert body["details"]["window_end"] == T0.isoformat().replace("+00:00", "Z")


def test_server_error_is_a_failed_result_after_retries(receiver: Receiver, tmp_path: Path) -> None:
    receiver.status = 500
    params = make_params(tmp_path, kind="pagerduty", url=receiver.url, retries=3)
    result = page(EVENT, params, now=T0, env=ENV)
    assert result.status == "failed" and result.http_status == 500
    assert "HTTP 500 after 3 attempt(s)" in result.reason and "boom" in result.reason
    assert len(receiver.requests) == 3
    # a failed page does not start the cooldown: the next try goes out
    receiver.status = 202
    assert page(EVENT, params, now=T0 + timedelta(minutes=1), env=ENV).status == "sent"


def test_client_error_is_not_retried(receiver: Receiver, tmp_path: Path) -> None:
    receiver.status = 400
    params = make_params(tmp_path, kind="pagerduty", url=receiver.url, retries=3)
    result = page(EVENT, params, now=T0, env=ENV)
    assert result.status == "failed" and "refused the page: HTTP 400" in result.reason
    assert len(receiver.requests) == 1


def test_unreachable_receiver_is_a_failed_result(tmp_path: Path) -> None:
    closed = Receiver()
    closed.stop()  # nothing listens on that port any more
    params = make_params(tmp_path, kind="webhook", url=closed.url)
    result = page(EVENT, params, now=T0)
    assert result.status == "failed" and "could not reach" in result.reason


def test_missing_routing_key_names_the_env_var(receiver: Receiver, tmp_path: Path) -> None:
    params = make_params(tmp_path, kind="pagerduty", url=receiver.url)
    result = page(EVENT, params, now=T0, env={})
    assert result.status == "failed" and "CASEPILOT_PAGERDUTY_ROUTING_KEY" in result.reason
    assert receiver.requests == []


def test_log_kind_writes_a_json_line_with_dedup(tmp_path: Path) -> None:
    params = make_params(tmp_path, kind="log")
    assert page(EVENT, params, now=T0).status == "sent"
    assert page(EVENT, params, now=T0 + timedelta(minutes=1)).status == "suppressed"
    lines = (params.home.logs / LOG_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["dedup_key"] == EVENT.dedup_key


def test_http_kinds_need_a_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs 'url'"):
        make_params(tmp_path, kind="slack")
