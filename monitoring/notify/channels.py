"""Tell the reviewers about a promotion request, through the paging channel, with apprise.

Delivery is apprise's (https://github.com/caronc/apprise, a maintained notification library
that Prefect itself depends on), not hand-written HTTP. The channel is the one pages use
(`monitor.pager`), mapped to an apprise URL:

- `webhook` → `json://` / `jsons://` at the same host, port and path (apprise's JSON body:
  `{"version", "title", "message", "attachments", "type"}`);
- `slack` → the Slack incoming-webhook URL itself (apprise parses it natively);
- `pagerduty` → `pagerduty://<routing key>@<api key>` (Events API v2: the routing key from
  `monitor.pager.routing_key_env`; apprise also sends an API key, `PAGERDUTY_API_KEY` if set,
  which the Events API does not check);
- `log` → a line in `CASEPILOT_HOME/logs/notifications.jsonl` (no network).

Extra apprise URLs (e.g. `mailto://...`) come from the env var `promote.notify_urls_env`, so
their secrets stay out of params.yaml. Failures never raise: the result says what happened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pipelines.config import Params

LOG_FILE = "notifications.jsonl"


@dataclass(frozen=True)
class NotifyResult:
    """What happened to one notification: `sent` or `failed`, where, and why."""

    status: Literal["sent", "failed"]
    channels: tuple[str, ...]  # the channel kinds (no URLs: they can hold secrets)
    reason: str


def apprise_urls(params: Params, env: Mapping[str, str] | None = None) -> list[str]:
    """The apprise URLs of the paging channel plus the extra ones from the env; [] for `log`."""
    env = os.environ if env is None else env
    cfg = params.monitor.pager
    urls: list[str] = []
    if cfg.kind == "webhook" and cfg.url:
        parts = urlsplit(cfg.url)
        scheme = "jsons" if parts.scheme == "https" else "json"
        query = f"?{parts.query}" if parts.query else ""
        urls.append(f"{scheme}://{parts.netloc}{parts.path}{query}")
    elif cfg.kind == "slack" and cfg.url:
        urls.append(cfg.url)
    elif cfg.kind == "pagerduty":
        key = env.get(cfg.routing_key_env)
        if not key:
            raise ValueError(
                f"no PagerDuty routing key to notify reviewers: set the env var "
                f"{cfg.routing_key_env} (monitor.pager.routing_key_env names it)"
            )
        urls.append(f"pagerduty://{key}@{env.get('PAGERDUTY_API_KEY', key)}")
    urls.extend(env.get(params.promote.notify_urls_env, "").split())
    return urls


def notify_reviewers(
    params: Params,
    title: str,
    body: str,
    details: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> NotifyResult:
    """Send `title`/`body` to every reviewer channel; the `log` channel writes `details` too."""
    import apprise

    kinds: list[str] = []
    if params.monitor.pager.kind == "log":
        _append(params, title, body, details)
        kinds.append("log")
    try:
        urls = apprise_urls(params, env)
    except ValueError as err:
        return NotifyResult("failed", tuple(kinds), str(err))
    if not urls:
        return NotifyResult("sent", tuple(kinds), f"written to {params.home.logs / LOG_FILE}")
    sender = apprise.Apprise()
    bad = [urlsplit(url).scheme for url in urls if not sender.add(url)]
    if bad:
        return NotifyResult(
            "failed", tuple(kinds), f"apprise cannot parse the {', '.join(bad)} URL(s)"
        )
    kinds.extend(urlsplit(url).scheme for url in urls)
    if sender.notify(title=title, body=body):
        return NotifyResult("sent", tuple(kinds), f"apprise delivered to {len(urls)} channel(s)")
    return NotifyResult(
        "failed", tuple(kinds), "apprise could not deliver to every channel (see its log)"
    )


def _append(params: Params, title: str, body: str, details: Mapping[str, Any]) -> None:
    path = params.home.logs / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"at": datetime.now(UTC).isoformat(), "title": title, "body": body, **details}
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, default=str) + "\n")
