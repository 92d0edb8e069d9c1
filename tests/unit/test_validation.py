"""Data tests: the Great Expectations suite on fixture batches (issue 3, "Done when").

A good batch is accepted; each bad variant is quarantined with the failed expectation named,
an alert is sent, and nothing of it reaches the accepted dataset. The fixtures (six topics,
a 240-case reference) come from `tests/fixtures/intake/generate.py`. Tests judged against the
reference load MiniLM (once per process, ~10 s) and are marked slow.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from pipelines.config import Params, params_from_mapping
from pipelines.data.intake import list_quarantine, load_accepted, run_intake
from pipelines.data.intake.run import BatchOutcome
from pipelines.data.intake.suite import ValidationSummary
from pipelines.home import Home
from pipelines.notify.alerts import read_alerts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "intake"


def good_rows() -> list[dict]:
    lines = (FIXTURES / "good.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def make_params(home: Home, **validation: object) -> Params:
    (home.data / "taxonomy.json").write_text((FIXTURES / "taxonomy.json").read_text())
    settings = {"reference": str(FIXTURES / "reference.jsonl"), **validation}
    return params_from_mapping({"data": {"validation": settings}}, home=home)


def intake_one(params: Params, rows: list[dict]) -> BatchOutcome:
    incoming = params.home.data / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (incoming / "batch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_intake(params)
    assert len(report.outcomes) == 1, report
    return report.outcomes[0]


def summary_of(params: Params, outcome: BatchOutcome) -> ValidationSummary:
    path = params.home.data / "validation" / outcome.batch_id / "summary.json"
    return ValidationSummary.from_json(path.read_text())


def drop_topic(rows: list[dict]) -> None:
    for row in rows:
        del row["topic"]


def unknown_topic(rows: list[dict]) -> None:
    for row in [r for r in rows if r["answerable"]][:4]:
        row["topic"] = "crypto_mining"


def null_message(rows: list[dict]) -> None:
    for row in rows[:3]:
        row["message"] = None


def duplicate_ids(rows: list[dict]) -> None:
    rows[1]["case_id"] = rows[0]["case_id"]


def flip_40_percent(rows: list[dict]) -> None:
    rng = random.Random(0)
    answerable = [r for r in rows if r["answerable"]]
    topics = sorted({r["topic"] for r in answerable})
    for row in rng.sample(answerable, round(0.4 * len(answerable))):
        row["topic"] = rng.choice([t for t in topics if t != row["topic"]])


def pii_everywhere(rows: list[dict]) -> None:
    for i, row in enumerate(rows[::2]):
        row["message"] += f" Write to jo.doe{i}@mailbox.org please."


@pytest.mark.slow
def test_good_batch_is_accepted_with_every_check_run(home: Home) -> None:
    params = make_params(home)
    outcome = intake_one(params, good_rows())
    summary = summary_of(params, outcome)
    assert outcome.state == "accepted", summary.failed
    assert summary.skipped == {}  # label agreement, mix and taxonomy checks all ran
    assert summary.observed["expect_column_mean_to_be_between(label_disputed)"] < 0.05
    assert len(load_accepted(params)) == len(good_rows())
    report = params.home.data / "validation" / outcome.batch_id / "report.html"
    html = report.read_text()
    assert "Great Expectations" in html and "label_disputed" in html
    assert read_alerts(params) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spoil", "expectation"),
    [
        (drop_topic, "expect_column_to_exist(topic)"),
        (unknown_topic, "expect_column_values_to_be_in_set(topic)"),
        (null_message, "expect_column_values_to_not_be_null(message)"),
        (duplicate_ids, "expect_column_values_to_be_unique(case_id)"),
        (flip_40_percent, "expect_column_mean_to_be_between(label_disputed)"),
        (pii_everywhere, "expect_column_mean_to_be_between(has_pii)"),
    ],
    ids=[
        "missing-column",
        "unknown-topic",
        "null-message",
        "duplicate-ids",
        "40pct-flipped",
        "pii-rate",
    ],
)
def test_bad_batch_is_quarantined_naming_the_expectation(
    home: Home, spoil, expectation: str
) -> None:
    params = make_params(home)
    rows = copy.deepcopy(good_rows())
    spoil(rows)
    outcome = intake_one(params, rows)
    assert outcome.state == "quarantined"
    assert expectation in outcome.failed
    [held] = list_quarantine(params)
    assert held.batch_id == outcome.batch_id and expectation in held.failed
    assert (held.folder / "batch.jsonl").is_file() and (held.folder / "report.html").is_file()
    [alert] = read_alerts(params)
    assert alert.kind == "batch_quarantined" and expectation in alert.details["failed"]
    assert load_accepted(params) == []


@pytest.mark.slow
def test_label_flips_pass_the_mix_check_only_agreement_catches_them(home: Home) -> None:
    params = make_params(home)
    rows = copy.deepcopy(good_rows())
    flip_40_percent(rows)
    summary = summary_of(params, intake_one(params, rows))
    assert "expect_column_max_to_be_between(label_shift)" not in summary.failed
    assert summary.observed["expect_column_mean_to_be_between(label_disputed)"] > 0.3


def test_reports_never_copy_customer_text(home: Home) -> None:
    params = make_params(home, reference=None, max_message_chars=20)
    rows = good_rows()
    outcome = intake_one(params, rows)
    assert "expect_column_value_lengths_to_be_between(message)" in outcome.failed
    folder = params.home.data / "quarantine" / outcome.batch_id
    reports = (folder / "summary.json").read_text() + (folder / "report.html").read_text()
    long_messages = [r["message"] for r in rows if len(r["message"]) > 20]
    assert long_messages and not any(message in reports for message in long_messages)


@pytest.mark.slow
def test_label_mix_far_from_the_reference_is_quarantined(home: Home) -> None:
    params = make_params(home, max_label_disagreement=1.0)
    rows = [r for r in good_rows() if r["topic"] == "card_lost" or not r["answerable"]]
    rows = (rows * 5)[:60]
    for i, row in enumerate(rows):
        row["case_id"] = f"mix-{i}"
    outcome = intake_one(params, rows)
    assert "expect_column_max_to_be_between(label_shift)" in outcome.failed


def test_without_taxonomy_or_reference_the_skipped_checks_are_reported(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    params = params_from_mapping({}, home=home)
    outcome = intake_one(params, good_rows())
    summary = summary_of(params, outcome)
    assert outcome.state == "accepted"
    assert set(summary.skipped) == {
        "topic in taxonomy",
        "label mix vs reference",
        "label agreement",
    }
