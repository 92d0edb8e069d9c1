"""The project's alert channel: `send_alert` records an alert and logs it.

For now the sink is a JSON-lines file, `CASEPILOT_HOME/logs/alerts.jsonl` (one alert per line,
append-only), plus a log line. Paging (PagerDuty / Slack / webhooks, `monitor.pager`) is added
behind this same function, so callers never change. Alerts carry ids, counts and names of
failed checks, never customer text.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.config import Params

log = logging.getLogger("casepilot.alerts")
Severity = Literal["info", "warning", "critical"]
_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class Alert(BaseModel):
    """Something a human should look at: what happened, how bad, and the details to act on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(min_length=1, description="machine-readable event, e.g. 'batch_quarantined'")
    summary: str = Field(min_length=1, description="one line for a human")
    severity: Severity = "warning"
    source: str = Field("casepilot", description="the component that raised it, e.g. 'intake'")
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def alerts_path(params: Params) -> Path:
    """The alert sink file under CASEPILOT_HOME/logs."""
    return params.home.logs / "alerts.jsonl"


def send_alert(alert: Alert, params: Params) -> Path:
    """Append `alert` as one JSON line to the sink, log it, and return the sink's path."""
    path = alerts_path(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink:
        sink.write(alert.model_dump_json() + "\n")
    log.log(_LEVEL[alert.severity], "ALERT %s [%s] %s", alert.kind, alert.source, alert.summary)
    return path


def read_alerts(params: Params) -> list[Alert]:
    """Every alert in the sink, oldest first (empty when none was sent)."""
    path = alerts_path(params)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Alert.model_validate_json(line) for line in lines if line.strip()]
