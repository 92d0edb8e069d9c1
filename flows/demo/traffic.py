"""Synthetic traffic: a simulated day's customer messages through the running service over HTTP.

Each message goes to `POST /suggest` as an agent's tool would send it; then the agent's feedback
goes to `POST /feedback` (API key): the reply the synthetic agent actually sent that day, and
whether it used the suggestion (it did when the suggestion matches what it sent). Several agents
work at once, so the service's micro-batching sees concurrent requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.demo.service import ServiceClient
from monitoring.decisions.promotion import suggestion_matches
from pipelines.data.contract import LabeledCase

REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DayTraffic:
    """One simulated day sent through the service: when, how much, and what came back."""

    day: int
    since: datetime  # the prediction-log window of this day is [since, until)
    until: datetime
    requests: int
    suggestions: int  # champion answered (did not abstain)
    feedback: int
    used: int  # feedback where the agent used the suggestion
    failed: int  # requests that got no 200
    seconds: float


def _one_case(
    client: httpx.Client, service: ServiceClient, case: LabeledCase, match_threshold: float
) -> tuple[bool, bool, bool, bool]:
    """Send one case and its feedback; returns (ok, suggested, feedback stored, used)."""
    body = {
        "case_id": case.case_id,
        "message": case.message,
        "context": [{"role": t.role, "text": t.text} for t in case.context],
    }
    response = client.post(f"{service.url}/suggest", json=body)
    if response.status_code != 200:
        return False, False, False, False
    text = response.json()["suggestion"].get("text")
    if case.agent_reply is None:  # the agent sent nothing (e.g. a closing "thanks")
        return True, text is not None, False, False
    used = bool(suggestion_matches([text], [case.agent_reply], match_threshold)[0])
    stored = client.post(
        f"{service.url}/feedback",
        json={"case_id": case.case_id, "sent_reply": case.agent_reply, "used_suggestion": used},
        headers=service.headers(),
    )
    return True, text is not None, stored.status_code == 200, used


def send_day(
    service: ServiceClient,
    day: int,
    cases: Sequence[LabeledCase],
    *,
    concurrency: int,
    match_threshold: float,
    console: Console,
    label: str = "traffic",
) -> DayTraffic:
    """Send a day's cases with their feedback, as agents' tools would."""
    started, since = time.perf_counter(), datetime.now(UTC)
    counts = [0, 0, 0, 0, 0]  # ok, suggested, feedback, used, failed
    columns = (
        TextColumn(f"{label} day {day}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with (
        Progress(*columns, console=console) as progress,
        httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client,
        ThreadPoolExecutor(concurrency, thread_name_prefix="agent") as agents,
    ):
        task = progress.add_task("messages", total=len(cases), note="")
        futures = [
            agents.submit(_one_case, client, service, case, match_threshold) for case in cases
        ]
        for future in as_completed(futures):
            ok, suggested, stored, used = future.result()
            for i, flag in enumerate((ok, suggested, stored, used, not ok)):
                counts[i] += int(flag)
            progress.update(task, advance=1, note=f"{counts[1]} suggested, {counts[3]} used")
    return DayTraffic(
        day, since, datetime.now(UTC), counts[0], counts[1], counts[2], counts[3], counts[4],
        time.perf_counter() - started,
    )  # fmt: skip
