"""Run the scenario suite through a real cascade and report what failed, where and why.

`run_suite` generates each scenario's messages (`generate.generate_suite`), runs them through
`Cascade.suggest_batch` in one batch, re-asks the same retrieve stage for the hits of cases that
reached it (the cascade's `Suggestion` does not carry hits; the call is the same one the cascade
made: message and predicted topic), and checks every expectation (`checks.check`).

The failure rate is the share of messages with at least one failed expectation; the report also
breaks it down per expectation kind (failed / checked), per persona and per topic, and lists each
failure with its message, what was expected and what happened.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.config import PiiConfig
from pipelines.evaluate.scenarios.checks import MUST_NOT_PREFIX, Failure, Outcome, check
from pipelines.evaluate.scenarios.generate import ScenarioMessage, generate_suite
from pipelines.evaluate.scenarios.schema import Suite


@dataclass(frozen=True)
class MessageResult:
    scenario_id: str
    source: str  # file:line of the scenario
    persona: str
    topic: str  # the situation's topic, or its not-answerable kind
    message: str
    reply: str | None
    abstain_reason: str | None
    checked: tuple[str, ...]
    failures: tuple[Failure, ...]


def _rate(failed: int, total: int) -> dict[str, Any]:
    return {"checked": total, "failed": failed, "failure_rate": failed / total if total else 0.0}


@dataclass
class Report:
    """Every message's result; `summary()` is what gates, MLflow and the benchmark read."""

    results: list[MessageResult] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        failed = sum(1 for r in self.results if r.failures)
        return failed / len(self.results) if self.results else 0.0

    def must_not_failures(self) -> list[MessageResult]:
        """Results that broke a `must_not` expectation (the gate refuses any)."""
        return [
            r for r in self.results if any(f.kind.startswith(MUST_NOT_PREFIX) for f in r.failures)
        ]

    def _grouped(self, key: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[MessageResult]] = defaultdict(list)
        for r in self.results:
            groups[getattr(r, key)].append(r)
        return {
            name: _rate(sum(1 for r in rs if r.failures), len(rs))
            for name, rs in sorted(groups.items())
        }

    def _by_kind(self) -> dict[str, dict[str, Any]]:
        checked: dict[str, int] = defaultdict(int)
        failed: dict[str, int] = defaultdict(int)
        for r in self.results:
            for kind in r.checked:
                checked[kind] += 1
            for kind in {f.kind for f in r.failures}:
                failed[kind] += 1
        return {k: _rate(failed[k], checked[k]) for k in sorted(checked)}

    def summary(self) -> dict[str, Any]:
        return {
            "scenarios": len({r.scenario_id for r in self.results}),
            "messages": len(self.results),
            "failed_messages": sum(1 for r in self.results if r.failures),
            "failure_rate": self.failure_rate,
            "must_not_failed": len(self.must_not_failures()),
            "by_kind": self._by_kind(),
            "by_persona": self._grouped("persona"),
            "by_topic": self._grouped("topic"),
            "versions": self.versions,
        }

    def to_json(self) -> str:
        failures = [asdict(r) for r in self.results if r.failures]
        return json.dumps({**self.summary(), "failures": failures}, indent=2, ensure_ascii=False)

    def dump(self) -> str:
        """Every result (passed ones too) as JSON, for `Report.load`."""
        results = [asdict(r) for r in self.results]
        return json.dumps({"versions": self.versions, "results": results}, ensure_ascii=False)

    @classmethod
    def load(cls, text: str) -> Report:
        raw = json.loads(text)
        results = [
            MessageResult(
                **{**r, "checked": tuple(r["checked"]),
                   "failures": tuple(Failure(**f) for f in r["failures"])}
            )
            for r in raw["results"]
        ]  # fmt: skip
        return cls(results=results, versions=raw["versions"])

    def to_markdown(self, limit: int = 50) -> str:
        s = self.summary()
        lines = [
            f"# Scenario suite: {s['failure_rate']:.1%} of {s['messages']} messages failed "
            f"({s['scenarios']} scenarios; must-not failures: {s['must_not_failed']})",
            "",
            "| expectation | checked | failed | failure rate |",
            "|---|---:|---:|---:|",
        ]
        for kind, row in s["by_kind"].items():
            lines.append(
                f"| {kind} | {row['checked']} | {row['failed']} | {row['failure_rate']:.1%} |"
            )
        for title, key in (("persona", "by_persona"), ("topic", "by_topic")):
            lines += ["", f"| {title} | messages | failed | failure rate |", "|---|---:|---:|---:|"]
            for name, row in s[key].items():
                lines.append(
                    f"| {name} | {row['checked']} | {row['failed']} | {row['failure_rate']:.1%} |"
                )
        failed = [r for r in self.results if r.failures]
        lines += ["", f"## Failures (first {min(limit, len(failed))} of {len(failed)})", ""]
        for r in failed[:limit]:
            lines.append(f"- **{r.scenario_id}** ({r.source}, {r.persona}): {r.message!r}")
            for f in r.failures:
                lines.append(f"  - {f.kind}: expected {f.expected}; happened: {f.happened}")
        return "\n".join(lines) + "\n"


def _retrieved(
    cascade: Any, messages: list[ScenarioMessage], suggestions: list, wanted: set[str]
) -> list[tuple]:
    """The hit texts and titles of the cases that reached retrieval and whose scenario (in
    `wanted`) expects a retrieved document; empty for the others."""
    reached = [
        i
        for i, s in enumerate(suggestions)
        if s.stopped_at not in ("trigger", "topic")
        and s.topic
        and messages[i].scenario_id in wanted
    ]
    out: list[tuple] = [()] * len(messages)
    if not reached:
        return out
    predictions = cascade.retrieve.predict(
        [messages[i].message for i in reached], [suggestions[i].topic for i in reached]
    )
    for i, p in zip(reached, predictions, strict=True):
        out[i] = tuple(
            text for hit in p.hits for text in (hit.text, getattr(hit, "title", None)) if text
        )
    return out


def run_suite(
    cascade: Any,
    suite: Suite,
    *,
    per_scenario: int = 1,
    seed: int = 0,
    pii: PiiConfig | None = None,
    batch_size: int = 64,
) -> Report:
    """Run every scenario's `per_scenario` messages through `cascade`; return the report."""
    pii = pii or PiiConfig()
    messages = generate_suite(suite, per_scenario, seed)
    by_id = {s.id: s for s in suite.scenarios}
    wanted = {s.id for s in suite.scenarios if s.expect.retrieved_includes}
    report = Report(versions=dict(getattr(cascade, "versions", {})))
    for start in range(0, len(messages), batch_size):
        batch = messages[start : start + batch_size]
        suggestions = cascade.suggest_batch([m.message for m in batch], [m.context for m in batch])
        hits = _retrieved(cascade, batch, suggestions, wanted)
        for m, s, retrieved in zip(batch, suggestions, hits, strict=True):
            scenario = by_id[m.scenario_id]
            checked, failures = check(
                scenario.expect, m.message, Outcome(s, retrieved), suite.facts, pii
            )
            report.results.append(
                MessageResult(
                    scenario_id=scenario.id,
                    source=suite.sources.get(scenario.id, ""),
                    persona=scenario.persona,
                    topic=scenario.situation.topic or scenario.situation.kind,
                    message=m.message,
                    reply=s.text,
                    abstain_reason=s.abstain_reason,
                    checked=tuple(checked),
                    failures=tuple(failures),
                )
            )
    return report


def failing_scenarios(results: Iterable[MessageResult]) -> list[str]:
    """The distinct scenario ids of `results`, in order."""
    return list(dict.fromkeys(r.scenario_id for r in results))
