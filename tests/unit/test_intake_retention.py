"""Raw-data retention in intake: staged and quarantined raw batches are private, then deleted."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.data.intake import list_quarantine, load_accepted, release, run_intake
from pipelines.data.intake.ledger import Ledger
from pipelines.data.intake.retention import purge_raw
from pipelines.data.intake.store import IntakePaths
from pipelines.home import Home
from tests.integration.test_intake import fixture_rows, make_params, write_batch

CARD = "4111 1111 1111 1111"


def rows_with_pii(prefix: str, count: int = 30) -> list[dict]:
    rows = fixture_rows(count, prefix)
    rows[0]["message"] += f" My card is {CARD}."
    return rows


def bad_rows(prefix: str) -> list[dict]:
    rows = rows_with_pii(prefix)
    rows[1]["case_id"] = rows[0]["case_id"]  # a duplicate id: the batch is quarantined
    return rows


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_accepted_raw_batches_are_deleted_at_once_by_default(home: Home) -> None:
    params = make_params(home)
    assert params.data.raw_retention_days == 0
    write_batch(params, "day-001.jsonl", rows_with_pii("a"))
    report = run_intake(params)
    assert [o.state for o in report.outcomes] == ["accepted"]
    staging = params.home.data / "staging"
    assert staging.is_dir() and raw_files(staging) == []  # the folder stays: a DVC output
    assert mode(staging) == 0o700
    assert all(CARD not in case.message for case in load_accepted(params))
    ledger = Ledger.at(params.home.data / "ledger.db")
    [line] = ledger.audit_lines()
    assert (line.action, line.batch_id, line.rows) == ("raw_deleted", report.pulled[0], 30)
    assert len(line.sha256) == 64 and "raw_retention_days=0" in line.reason
    assert CARD.encode() not in (params.home.data / "ledger.db").read_bytes()
    again = run_intake(params)  # the source still has the file: seen, not pulled again
    assert again.pulled == [] and again.outcomes == []
    assert len(load_accepted(params)) == 30


def test_raw_batches_are_private_and_kept_for_the_retention_period(home: Home) -> None:
    params = make_params(home, raw_retention_days=2)
    write_batch(params, "day-001.jsonl", rows_with_pii("a"))
    [batch_id] = run_intake(params).pulled
    paths = IntakePaths.for_params(params)
    staged = paths.staged_file(batch_id)
    assert staged.is_file() and mode(staged) == 0o600 and mode(paths.staging) == 0o700
    ledger = Ledger.at(paths.ledger)
    now = datetime.now(UTC)
    assert purge_raw(params.data, paths, ledger, now=now + timedelta(days=1)) == []
    assert staged.is_file()
    [line] = purge_raw(params.data, paths, ledger, now=now + timedelta(days=2, minutes=1))
    assert line.action == "raw_deleted" and not staged.exists()
    assert ledger.get(batch_id).state == "accepted"


def test_quarantine_is_private_then_purged_with_an_audit_line(home: Home) -> None:
    params = make_params(home, quarantine_retention_days=14)
    write_batch(params, "day-001.jsonl", bad_rows("q"))
    [outcome] = run_intake(params).outcomes
    paths = IntakePaths.for_params(params)
    folder = paths.quarantine / outcome.batch_id
    assert outcome.state == "quarantined" and not paths.staged_file(outcome.batch_id).exists()
    assert mode(paths.quarantine) == 0o700 and mode(folder) == 0o700
    assert raw_files(folder) and all(mode(p) == 0o600 for p in raw_files(folder))
    ledger = Ledger.at(paths.ledger)
    now = datetime.now(UTC)
    assert purge_raw(params.data, paths, ledger, now=now + timedelta(days=13)) == []
    [line] = purge_raw(params.data, paths, ledger, now=now + timedelta(days=14, minutes=1))
    assert (line.action, line.rows) == ("quarantine_purged", 30)
    assert "expect_column_values_to_be_unique(case_id)" in line.reason
    assert not folder.exists() and list_quarantine(params) == []
    assert ledger.get(outcome.batch_id).state == "expired"
    assert CARD.encode() not in paths.ledger.read_bytes()
    assert run_intake(params).pulled == []  # expired batches are not pulled again


def test_a_released_batch_leaves_no_raw_copy(home: Home) -> None:
    params = make_params(home)
    write_batch(params, "day-001.jsonl", bad_rows("r"))
    [outcome] = run_intake(params).outcomes
    paths = IntakePaths.for_params(params)
    batch_file = paths.quarantine / outcome.batch_id / "batch.jsonl"
    batch_file.write_text(batch_file.read_text().replace('"case_id":"r-0"', '"case_id":"r-x"', 1))
    assert release(outcome.batch_id, params).state == "released"
    assert raw_files(paths.quarantine) == [] and raw_files(paths.staging) == []
    actions = [line.action for line in Ledger.at(paths.ledger).audit_lines()]
    assert actions == ["raw_deleted", "quarantine_released"]
    assert all(CARD not in case.message for case in load_accepted(params))
