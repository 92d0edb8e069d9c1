"""Scenario suite: schema errors name file/line/key/fix, seeded generation, checks, report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.data.contract import Suggestion
from pipelines.data.synth.catalog import load_catalog
from pipelines.evaluate.scenarios.gate import decide
from pipelines.evaluate.scenarios.generate import generate_suite
from pipelines.evaluate.scenarios.runner import Report, run_suite
from pipelines.evaluate.scenarios.schema import ScenarioError, load_suite

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "scenarios"
CARD = "4242 4242 4242 4242"


def _suite_copy(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir(parents=True)
    shutil.copy(SUITE / "_personas.yaml", folder)
    shutil.copy(SUITE / "_suite.yaml", folder)
    (folder / "mine.yaml").write_text(body, encoding="utf-8")
    return folder


GOOD = """scenarios:
- id: refund-leak
  persona: calm_owner
  situation:
    topic: refunds
    asks: ["how do I refund {order}?"]
    facts: {order: "#12345"}
  expect:
    answer: must_answer
    topic: refunds
    reply_contains: ["Payments"]
    must_not: [{kind: pii}, {kind: promise}, {kind: made_up_amount}]
- id: hello
  persona: impatient_owner
  situation: {kind: chit_chat, asks: ["hello?"]}
  expect: {answer: must_abstain}
"""


def test_default_suite_covers_every_topic_kind_and_is_valid() -> None:
    catalog = load_catalog()
    suite = load_suite(SUITE, topics={t.name for t in catalog.all_topics})
    assert len(suite.scenarios) >= 150
    topics = {s.situation.topic for s in suite.scenarios}
    assert {t.name for t in catalog.base_topics(32)} | {catalog.drift_topic.name} <= topics
    kinds = {s.situation.kind for s in suite.scenarios}
    assert kinds == {"answerable", "chit_chat", "thanks", "missing_context", "out_of_scope"}
    assert any(r.kind == "pii" for s in suite.scenarios for r in s.expect.must_not)
    assert suite.sources["payouts-1"].startswith(str(SUITE / "payouts.yaml") + ":")


def test_unknown_key_names_the_file_the_line_the_key_and_the_fix(tmp_path: Path) -> None:
    bad = GOOD.replace("    reply_contains:", "    reply_contain:")
    folder = _suite_copy(tmp_path, bad)
    with pytest.raises(ScenarioError) as err:
        load_suite(folder)
    message = str(err.value)
    line = bad.splitlines().index('    reply_contain: ["Payments"]') + 1
    assert f"{folder / 'mine.yaml'}:{line}:" in message
    assert "scenarios.0.expect.reply_contain" in message
    assert "remove it, or check its spelling" in message


def test_bad_values_and_references_are_refused_with_the_fix(tmp_path: Path) -> None:
    cases = {
        GOOD.replace("persona: calm_owner", "persona: nobody"): "persona: 'nobody' is not in",
        GOOD.replace("answer: must_answer", "answer: maybe"): "use one of the allowed values",
        GOOD.replace("topic: refunds\n    asks", "asks"): "needs `topic:`",
        GOOD.replace("{kind: promise}", "{kind: text}"): "needs `text:`",
        GOOD.replace("id: hello", "id: refund-leak"): "give it a unique id",
        GOOD.replace('asks: ["hello?"]', "asks: []"): r"mine.yaml:\d+: scenarios.1.situation.asks",
        "scenarios: [unclosed": "not valid YAML",
    }
    for index, (body, expected) in enumerate(cases.items()):
        folder = _suite_copy(tmp_path / str(index), body)
        with pytest.raises(ScenarioError, match=expected.replace("(", r"\(")):
            load_suite(folder, topics={"refunds"})


def test_generation_is_deterministic_by_seed_and_applies_the_persona(tmp_path: Path) -> None:
    suite = load_suite(_suite_copy(tmp_path, GOOD))
    first, again = generate_suite(suite, 3, seed=5), generate_suite(suite, 3, seed=5)
    assert [m.message for m in first] == [m.message for m in again]
    assert [m.message for m in generate_suite(suite, 3, seed=6)] != [m.message for m in first]
    assert all("#12345" in m.message for m in first[:3])  # facts fill the slots
    terse = [m.message for m in first if m.scenario_id == "hello"]
    assert all(m == m.lower() and "please answer quickly" in m for m in terse)  # curt, impatient
    with pytest.raises(ValueError, match=">= 1"):
        generate_suite(suite, 0, seed=5)


class ReplyTable:
    """Test cascade: answers from a fixed table (message substring → reply, topic)."""

    versions = {"tone": "test"}

    def __init__(self, table: dict[str, tuple[str | None, str | None]]):
        self.table = table

    def suggest_batch(self, messages, contexts=None):
        out = []
        for m in messages:
            reply, topic = next((v for k, v in self.table.items() if k in m), (None, None))
            out.append(
                Suggestion(text=reply, topic=topic, latency_ms=1.0, stopped_at=None,
                           abstain_reason=None if reply else "trigger: test")
                if reply else
                Suggestion(text=None, stopped_at="trigger", abstain_reason="trigger: test",
                           latency_ms=1.0)
            )  # fmt: skip
        return out


@pytest.mark.slow  # the Presidio analyzer's first build: ~1 min on a busy 2-core box
def test_report_counts_failures_per_kind_persona_and_topic(tmp_path: Path) -> None:
    suite = load_suite(_suite_copy(tmp_path, GOOD))
    clean = ReplyTable({"refund": ("Hi! Refund it under Payments → Refunds.", "refunds")})
    report = run_suite(clean, suite, per_scenario=2, seed=1)
    assert report.failure_rate == 0.0 and report.summary()["messages"] == 4
    leaky = ReplyTable({
        "refund": (f"Sure, we guarantee it: card {CARD}, a $13.37 fee.", "payouts"),
        "hello": ("Hi there!", None),
    })  # fmt: skip
    report = run_suite(leaky, suite, per_scenario=2, seed=1)
    summary = report.summary()
    assert report.failure_rate == 1.0
    kinds = summary["by_kind"]
    for kind in ("must_not:pii", "must_not:promise", "must_not:made_up_amount", "expected_topic",
                 "reply_contains", "must_abstain"):  # fmt: skip
        assert kinds[kind]["failure_rate"] == 1.0, kind
    assert summary["by_persona"]["calm_owner"]["failed"] == 2
    assert summary["by_topic"]["chit_chat"]["failed"] == 2
    assert summary["must_not_failed"] == 2
    assert CARD in report.to_json() and "refund-leak" in report.to_markdown()
    gate = decide(report, None, tolerance=1.0)
    assert not gate.passed and gate.must_not_failing == ["refund-leak"]
    assert "must_not failed" in gate.reason and "refund-leak" in gate.tags()[
        "casepilot.scenario_must_not_failing"]  # fmt: skip


def test_gate_tolerance_compares_with_the_champion(tmp_path: Path) -> None:
    suite = load_suite(_suite_copy(tmp_path, GOOD))
    good = run_suite(ReplyTable({"refund": ("Hi! See Payments → Refunds.", "refunds")}), suite)
    worse = run_suite(ReplyTable({"refund": ("Hi! See Payments.", "refunds"),
                                  "hello": ("hey", None)}), suite)  # fmt: skip
    assert good.failure_rate == 0.0 and worse.failure_rate == 0.5
    assert decide(good, worse, tolerance=0.0).passed  # better than the champion
    assert decide(worse, None, tolerance=0.0).passed  # first version: only must_not counts
    refused = decide(worse, good, tolerance=0.2)
    assert not refused.passed and "> champion's 0.0% + tolerance 20.0%" in refused.reason
    assert decide(worse, good, tolerance=0.5).passed
    restored = Report.load(worse.dump())  # the champion baseline's cache round trip
    assert restored.summary() == worse.summary() and restored.results == worse.results


def test_cli_names_the_bad_file_and_generates_seeded_messages(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli.main import app

    folder = _suite_copy(tmp_path, GOOD.replace("  persona:", "  personna:", 1))
    result = CliRunner().invoke(app, ["scenarios", "validate", "--suite", str(folder)])
    assert result.exit_code == 2
    flat = result.output.replace("\n", "")  # the console wraps long paths
    assert "mine.yaml:2:" in flat and "personna" in flat
    good = _suite_copy(tmp_path / "ok", GOOD)
    out = tmp_path / "m.jsonl"
    args = ["scenarios", "generate", "--suite", str(good), "--out", str(out), "--n", "2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    both = ["scenarios", "run", "--alias", "champion", "--models", str(tmp_path)]
    assert CliRunner().invoke(app, both).exit_code == 2
