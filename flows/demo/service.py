"""The demo's view of the copilot service `casepilot up` started: an HTTP client, nothing more.

Agents' tools call `POST /suggest` and `POST /feedback` (with the platform's API key, read from
the secrets file `casepilot up` wrote). The demo never restarts or reloads the service: it waits
until the service's own registry poll serves the versions the platform promoted, sending light
traffic meanwhile and counting any request that failed during the switch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from pipelines.config import Params

REQUEST_TIMEOUT_S = 120.0
PROBE = {"case_id": "demo-switch-probe", "message": "How do I pause payouts?", "context": []}


@dataclass(frozen=True)
class Switch:
    """What light traffic saw while waiting for a model switch."""

    versions: dict[str, str]
    seconds: float
    requests: int
    failed: int


@dataclass
class ServiceClient:
    """The running service's URL and API key."""

    url: str
    api_key: str

    @classmethod
    def for_platform(cls, params: Params) -> ServiceClient:
        from flows.platform.service_key import service_api_key

        key = service_api_key(params)
        if not key:
            raise RuntimeError("`casepilot up` stored no service API key; is the service up?")
        return cls(f"http://127.0.0.1:{params.serve.port}", key)

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def models(self) -> dict[str, Any]:
        """Which versions the service runs, and its shadow runs (`/admin/status`, read-only)."""
        response = httpx.post(
            f"{self.url}/admin/status", json={}, headers=self.headers(), timeout=60
        )
        response.raise_for_status()
        return response.json()

    def wait_for_versions(self, expected: dict[str, str], timeout_s: float) -> Switch:
        """Send one request per poll until the answers come from `expected` {stage: version}."""
        from flows.demo.platform import POLL_S

        started, requests, failed, seen_ok = time.monotonic(), 0, 0, False
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            while True:
                requests += 1
                try:
                    answer = client.post(f"{self.url}/suggest", json=PROBE)
                except httpx.TransportError:
                    answer = None
                if answer is None or answer.status_code != 200:
                    failed += int(seen_ok)  # a 503 before the first load is "not ready yet"
                else:
                    seen_ok = True
                    served = answer.json()["suggestion"].get("versions") or {}
                    if all(served.get(s, "").endswith(f"/{v}") for s, v in expected.items()):
                        return Switch(served, time.monotonic() - started, requests, failed)
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(
                        f"the service at {self.url} did not serve {expected} within "
                        f"{timeout_s:.0f} s (last answer: {answer.text[:300] if answer else None})"
                    )
                time.sleep(POLL_S)

    def wait_for_shadow(self, expected: dict[str, str], timeout_s: float) -> dict[str, str]:
        """The shadow cascade's versions once they include `expected` {stage: version}."""
        from flows.demo.platform import wait_until

        def shadowing() -> dict[str, str] | None:
            shadow = self.models().get("shadow") or {}
            ok = all(shadow.get(s, "").endswith(f"/{v}") for s, v in expected.items())
            return shadow if ok else None

        return wait_until(f"the service to shadow {expected}", shadowing, timeout_s)
