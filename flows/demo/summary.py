"""The demo's record of what happened: one `StepResult` per lifecycle step, and the final table.

Every step is timed and recorded as it ends — done, skipped (with why) or failed (with the
error) — so the table printed at the end, even after a failure, says exactly what ran.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

Status = Literal["done", "skipped", "failed"]
STYLE = {"done": "green", "skipped": "yellow", "failed": "red"}


@dataclass
class StepResult:
    """One lifecycle step: its name, outcome, one-line result, wall time and any data to check."""

    name: str
    status: Status
    result: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    by: str = ""  # who did it: a Prefect flow run of a deployment, or the outside world
    ended_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class StepHandle:
    """What a running step fills in: its result line, its data, or that it was skipped."""

    result: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    by: str = ""

    def skip(self, why: str) -> None:
        self.result, self.skipped = why, True


@dataclass
class DemoSummary:
    """Every step so far, the links to the UIs, and the total wall time."""

    steps: list[StepResult] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    console: Console | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[StepHandle]:
        """Time a step and record it: done, skipped (`handle.skip`) or failed (re-raised)."""
        if self.console is not None:
            self.console.rule(f"[bold cyan]{name}")
        handle, started = StepHandle(), time.perf_counter()
        try:
            yield handle
        except BaseException as err:
            self.steps.append(
                StepResult(
                    name,
                    "failed",
                    f"{type(err).__name__}: {err}"[:300],
                    time.perf_counter() - started,
                    handle.data,
                    handle.by,
                )  # fmt: skip
            )
            raise
        status: Status = "skipped" if handle.skipped else "done"
        self.steps.append(
            StepResult(
                name, status, handle.result, time.perf_counter() - started, handle.data, handle.by
            )
        )
        if self.console is not None:
            self.console.print(f"[{STYLE[status]}]{name}: {status}[/] — {handle.result}")

    def find(self, name: str) -> StepResult | None:
        """The last step recorded under `name`."""
        return next((s for s in reversed(self.steps) if s.name == name), None)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def table(self) -> Table:
        table = Table(title="casepilot demo — summary", show_lines=True)
        for column in ("step", "status", "result", "done by", "wall time"):
            table.add_column(column, overflow="fold")
        for step in self.steps:
            table.add_row(
                step.name,
                f"[{STYLE[step.status]}]{step.status}[/]",
                step.result,
                step.by,
                f"{step.seconds:.0f} s",
            )
        table.add_row("total", "", "", "", f"{self.seconds:.0f} s")
        return table

    def links_table(self) -> Table:
        table = Table(title="where to look", show_lines=False)
        table.add_column("what")
        table.add_column("link / command", overflow="fold")
        for what, link in self.links.items():
            table.add_row(what, link)
        return table
