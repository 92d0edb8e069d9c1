"""A local webhook receiver on 127.0.0.1 standing in for on-call's pager during the demo.

The demo points `monitor.pager` at it (kind `webhook`), so a drift page travels the same HTTP
path a real PagerDuty / Slack / webhook page does, and the demo can show what arrived.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class PageReceiver:
    """The receiver's URL and every JSON body it accepted, in arrival order."""

    url: str
    pages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.pages)


def _handler(receiver: PageReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self.send_response(400)
                self.end_headers()
                return
            if isinstance(body, dict):  # when it arrived: the demo's latency figures use it
                body.setdefault("received_at", datetime.now(UTC).isoformat())
            with receiver.lock:
                receiver.pages.append(body)
            self.send_response(202)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # the demo prints what arrived; no access log on the console

    return Handler


@contextmanager
def page_receiver() -> Iterator[PageReceiver]:
    """Serve a receiver on a free 127.0.0.1 port for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(PageReceiver("")))
    receiver = PageReceiver(f"http://127.0.0.1:{server.server_address[1]}/page")
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, name="page-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
