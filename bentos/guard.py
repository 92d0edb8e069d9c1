"""Request guard for the service: readiness, API key and body size, before any handler runs.

An ASGI middleware, so refusals are plain JSON errors with the status that says why: 503 while
the models load, 401 without an API key and 403 with a wrong one on `/feedback` and
`/admin/*`, 413 for a body over `serve.max_request_bytes` (read bounded when no length is sent).
`GET /` is a JSON index of the routes instead of BentoML's Swagger page, whose HTML loads a
third-party tag manager; its Swagger assets (`/static_content/...`) are 404.

API keys are compared with `hmac.compare_digest` (constant time in the key's content).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from typing import Any

from pipelines.config import ServeConfig

PROTECTED_PREFIXES = ("/feedback", "/admin")
READY_PATHS = ("/suggest",)
NOT_READY = "models are still loading; retry when /readyz returns 200"


def _json_response(status: int, error: str | dict) -> tuple[dict, dict]:
    body = json.dumps(error if isinstance(error, dict) else {"error": error}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class GuardMiddleware:
    """/suggest 503 until models load; API key on /feedback and /admin/*; big bodies 413."""

    def __init__(
        self,
        app: Any,
        *,
        settings: Callable[[], ServeConfig],
        ready: Callable[[], bool],
        on_refused: Callable[[int], None] = lambda status: None,
    ) -> None:
        self.app, self.settings, self.ready, self.on_refused = app, settings, ready, on_refused

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cfg = self.settings()
        path = scope.get("path", "")
        if path == "/" and scope.get("method") in ("GET", "HEAD"):
            from bentos.surfaces import INDEX

            return await self._send(send, 200, INDEX)
        if path.startswith("/static_content"):
            return await self._send(send, 404, "not found (the Swagger UI is disabled)")
        if path in READY_PATHS and not self.ready():
            return await self._send(send, 503, NOT_READY)
        refusal = (
            self._auth(scope, cfg.api_key_env) if path.startswith(PROTECTED_PREFIXES) else None
        )
        if refusal is not None:
            self.on_refused(refusal[0])
            return await self._send(send, *refusal)
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if scope.get("method") == "POST" and kind != b"application/json":
            # every route takes JSON; BentoML answered a multipart type without boundary with 500
            return await self._send(send, 415, "send a JSON body (Content-Type: application/json)")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > cfg.max_request_bytes:
                return await self._send(
                    send,
                    413,
                    f"request body over {cfg.max_request_bytes} bytes (serve.max_request_bytes)",
                )
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        body, more = b"", True  # no length given: read it here, bounded
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > cfg.max_request_bytes:
                return await self._send(
                    send,
                    413,
                    f"request body over {cfg.max_request_bytes} bytes (serve.max_request_bytes)",
                )
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    def _auth(scope: dict, env_name: str) -> tuple[int, str] | None:
        expected = os.environ.get(env_name)
        if not expected:
            return 403, f"this route needs an API key but the server has none; set ${env_name}"
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"").decode("latin-1")
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        if not given:
            return 401, "missing API key: send it in the X-API-Key header"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return 403, "wrong API key"
        return None

    @staticmethod
    async def _send(send: Any, status: int, error: str | dict) -> None:
        start, body = _json_response(status, error)
        await send(start)
        await send(body)
