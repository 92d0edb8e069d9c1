"""Intake: sources (folder, SQLite, PostgreSQL), idempotence, crash safety, redaction, CLI, DVC."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from pipelines.config import Params, params_from_mapping
from pipelines.data.intake import list_quarantine, load_accepted, release, run_intake
from pipelines.data.intake.ledger import Ledger
from pipelines.home import Home
from pipelines.notify.alerts import Alert, read_alerts, send_alert
from pipelines.registry.lineage import dvc_data_version
from tests.conftest import REPO, postgres_url

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "intake"
# No reference checks (no MiniLM load): these tests are about moving batches, not judging them.
NO_REFERENCE = {"min_reference_cases": 1_000_000}


def fixture_rows(count: int | None = None, prefix: str | None = None) -> list[dict]:
    lines = (FIXTURES / "good.jsonl").read_text().splitlines()[:count]
    rows = [json.loads(line) for line in lines]
    for i, row in enumerate(rows):
        row["case_id"] = f"{prefix}-{i}" if prefix else row["case_id"]
    return rows


def make_params(home: Home, **data: object) -> Params:
    return params_from_mapping({"data": {"validation": NO_REFERENCE, **data}}, home=home)


def write_batch(params: Params, name: str, rows: list[dict]) -> Path:
    path = params.home.data / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def accepted_ids(params: Params) -> list[str]:
    return [case.case_id for case in load_accepted(params)]


def test_running_twice_pulls_nothing_the_second_time(home: Home) -> None:
    params = make_params(home)
    write_batch(params, "day-001.jsonl", fixture_rows(40, "a"))
    write_batch(params, "day-002.jsonl", fixture_rows(40, "b"))
    first = run_intake(params)
    assert len(first.pulled) == 2 and {o.state for o in first.outcomes} == {"accepted"}
    second = run_intake(params)
    assert second.pulled == [] and second.outcomes == []
    assert len(accepted_ids(params)) == 80


def test_the_same_content_in_three_formats_is_one_batch(home: Home) -> None:
    params = make_params(home)
    rows = fixture_rows(30, "same")
    write_batch(params, "a.jsonl", rows)
    frame = pa.Table.from_pylist(rows).to_pandas()
    frame.to_csv(params.home.data / "incoming" / "b.csv", index=False)
    pq.write_table(pa.Table.from_pylist(rows), params.home.data / "incoming" / "c.parquet")
    report = run_intake(params)
    assert len(report.pulled) == 1 and report.outcomes[0].state == "accepted"
    assert sorted(accepted_ids(params)) == sorted(row["case_id"] for row in rows)


@pytest.mark.parametrize("crash_state", ["staged", "accepted", "quarantined"])
def test_a_crash_between_output_and_ledger_loses_and_duplicates_nothing(
    home: Home, monkeypatch: pytest.MonkeyPatch, crash_state: str
) -> None:
    params = make_params(home)
    bad = fixture_rows(30, "bad")
    bad[1]["case_id"] = bad[0]["case_id"]
    write_batch(params, "day-001.jsonl", fixture_rows(30, "a"))
    write_batch(params, "day-002.jsonl", bad)
    write_batch(params, "day-003.jsonl", fixture_rows(30, "c"))
    record = Ledger.record

    def killed_once(self: Ledger, batch_id: str, **kwargs: object) -> None:
        if kwargs["state"] == crash_state:
            monkeypatch.setattr(Ledger, "record", record)
            raise KeyboardInterrupt("killed after the output was written")
        record(self, batch_id, **kwargs)

    monkeypatch.setattr(Ledger, "record", killed_once)
    with pytest.raises(KeyboardInterrupt):
        run_intake(params)
    run_intake(params)
    assert run_intake(params).pulled == []
    ids = accepted_ids(params)
    assert len(ids) == len(set(ids)) == 60
    assert [batch.origin for batch in list_quarantine(params)] == ["folder:day-002.jsonl"]
    states = sorted(e.state for e in Ledger.at(params.home.data / "ledger.db").entries())
    assert states == ["accepted", "accepted", "quarantined"]
    assert not (params.home.data / ".tmp").exists() or not any(
        (params.home.data / ".tmp").iterdir()
    )


def sql_roundtrip(url: str, home: Home) -> None:
    table = f"cases_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    rows = [
        {
            **row,
            "context": json.dumps(row["context"]),
            "batch": "2026-11-01" if i < 20 else "2026-11-02",
        }
        for i, row in enumerate(fixture_rows(40, "sql"))
    ]
    columns = [sa.Column(name, sa.Boolean if name == "answerable" else sa.Text) for name in rows[0]]
    meta = sa.MetaData()
    cases = sa.Table(table, meta, *columns)
    meta.create_all(engine)
    try:
        with engine.begin() as connection:
            connection.execute(cases.insert(), rows[:20])
        source = {
            "kind": "sql",
            "url": url,
            "query": f"SELECT * FROM {table}",
            "batch_column": "batch",
        }
        params = make_params(home, source=source)
        first = run_intake(params)
        assert [o.origin for o in first.outcomes] == ["sql:2026-11-01"]
        assert first.outcomes[0].state == "accepted", first.outcomes[0].failed
        with engine.begin() as connection:
            connection.execute(cases.insert(), rows[20:])
        second = run_intake(params)
        assert [o.origin for o in second.outcomes] == ["sql:2026-11-02"]
        assert run_intake(params).pulled == []
        assert sorted(accepted_ids(params)) == sorted(row["case_id"] for row in rows)
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_sql_source_on_sqlite(home: Home, tmp_path: Path) -> None:
    sql_roundtrip(f"sqlite:///{tmp_path / 'support.db'}", home)


@pytest.mark.postgres
def test_sql_source_on_postgresql(home: Home) -> None:
    url = postgres_url()
    try:
        sa.create_engine(url).connect().close()
    except sa.exc.OperationalError as err:
        pytest.skip(f"PostgreSQL at {url} refused the connection: {err}")
    sql_roundtrip(url, home)


def test_release_accepts_a_fixed_batch_only_once_it_passes(home: Home) -> None:
    params = make_params(home)
    rows = fixture_rows(30, "q")
    rows[1]["case_id"] = rows[0]["case_id"]
    write_batch(params, "day-001.jsonl", rows)
    [outcome] = run_intake(params).outcomes
    assert outcome.state == "quarantined" and load_accepted(params) == []
    assert release(outcome.batch_id, params).state == "quarantined"  # not fixed yet
    batch_file = params.home.data / "quarantine" / outcome.batch_id / "batch.jsonl"
    fixed = [json.loads(line) for line in batch_file.read_text().splitlines()]
    fixed[1]["case_id"] = "q-fixed"
    batch_file.write_text("".join(json.dumps(row) + "\n" for row in fixed))
    released = release(outcome.batch_id, params)
    assert released.state == "released"
    assert len(accepted_ids(params)) == 30 and list_quarantine(params) == []
    assert run_intake(params).pulled == []  # the original file is still seen


LUHN_CANDIDATE = re.compile(r"(?<![\w])(?:\d[ -]?){12,18}\d(?![\w])")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"(?:\+|\()?\d[\d ().-]{6,}\d")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    text = candidate.replace(" ", "")
    for end in range(len(text), 14, -1):
        head = text[:end]
        digits = "".join(str(int(c, 36)) for c in head[4:] + head[:4])
        if int(digits) % 97 == 1:
            return True
    return False


def scan_pii(text: str) -> list[str]:
    """An independent scanner: e-mails, Luhn-valid cards, phone-shaped numbers, mod-97 IBANs."""
    found = EMAIL.findall(text)
    found += [m for m in LUHN_CANDIDATE.findall(text) if luhn_valid(re.sub(r"\D", "", m))]
    found += [m for m in PHONE.findall(text) if len(re.sub(r"\D", "", m)) >= 9]
    found += [m for m in IBAN.findall(text) if iban_valid(m)]
    return found


@pytest.mark.slow
def test_planted_pii_never_reaches_the_accepted_dataset(home: Home) -> None:
    from pipelines.config import SynthConfig
    from pipelines.data.synth import generate_world

    world = generate_world(
        SynthConfig(cases_per_day=1000, pii_share=1.0, drift_from_day=None), seed=11, days=1
    )
    cases = world.days[0].cases
    raw_hits = sum(bool(scan_pii(case.message)) for case in cases)
    assert raw_hits > 700  # the scanner sees the planted PII (names aside) before intake
    params = make_params(home, validation={**NO_REFERENCE, "max_pii_rate": 1.0})
    write_batch(params, "day-001.jsonl", [case.model_dump(mode="json") for case in cases])
    [outcome] = run_intake(params).outcomes
    assert outcome.state == "accepted", outcome.failed
    table = pq.read_table(params.home.data / "accepted" / f"{outcome.batch_id}.parquet").to_pylist()
    texts = [
        t for row in table for t in (row["message"], row["agent_reply"], row["reply_draft"]) if t
    ]
    texts += [turn["text"] for row in table for turn in row["context"] or []]
    leaks = [hit for text in texts for hit in scan_pii(text)]
    assert len(table) == 1000 and leaks == []


def test_send_alert_appends_json_lines(home: Home) -> None:
    params = make_params(home)
    send_alert(Alert(kind="test", summary="one"), params)
    path = send_alert(Alert(kind="test", summary="two", severity="critical"), params)
    assert path == params.home.logs / "alerts.jsonl"
    assert [a.summary for a in read_alerts(params)] == ["one", "two"]


def test_cli_intake_list_and_release(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli.main import app

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(json.dumps({"data": {"validation": NO_REFERENCE}}))
    params = make_params(home)
    rows = fixture_rows(20, "cli")
    rows[0]["message"] = None
    write_batch(params, "day-001.jsonl", rows)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "intake"])
    assert result.exit_code == 0, result.output
    assert "quarantined" in result.output
    listed = runner.invoke(app, ["data", "quarantine", "list"])
    [held] = list_quarantine(params)
    assert held.batch_id in listed.output and "day-001.jsonl" in listed.output
    assert runner.invoke(app, ["data", "quarantine", "release", held.batch_id]).exit_code == 1
    assert runner.invoke(app, ["data", "quarantine", "release", "nope"]).exit_code == 2


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_dvc_repro_reruns_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `intake` and `validate` stages of dvc.yaml alone (`-s`: not synth upstream, not the
    training downstream; tests/integration/test_dvc_pipeline.py runs the whole pipeline)."""
    repo = tmp_path / "repo"
    shutil.copytree(
        REPO / "pipelines" / "data" / "intake",
        repo / "pipelines" / "data" / "intake",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    (repo / "params.yaml").write_text(
        json.dumps(
            {
                "data": {
                    "source": {"path": "world/batches"},
                    "validation": NO_REFERENCE,
                    "pii": {},
                }
            }
        )
    )
    incoming = repo / ".casepilot" / "data" / "world" / "batches"  # where `synth` delivers
    incoming.mkdir(parents=True)
    (incoming / "day-001.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in fixture_rows(20, "d1"))
    )
    # the world's manifest: the dep that orders `intake` after `synth` in dvc.yaml
    (incoming.parent / "manifest.json").write_text(json.dumps({"days": 1}))
    topics = sorted({row["topic"] for row in fixture_rows() if row.get("topic")})
    (repo / ".casepilot" / "data" / "taxonomy.json").write_text(json.dumps({"topics": topics}))
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("CASEPILOT_HOME")  # the default home, as dvc.yaml assumes
    dvc = [str(Path(bin_dir) / "dvc")]

    def repro() -> str:
        return run([*dvc, "repro", "-s", "intake"], repo) + run(
            [*dvc, "repro", "-s", "validate"], repo
        )

    run(["git", "init", "-q"], repo)
    run([*dvc, "init", "-q"], repo)
    first = repro()
    assert "Running stage 'intake'" in first and "Running stage 'validate'" in first
    version = dvc_data_version(repo / "dvc.lock")
    assert version and version.endswith(".dir")  # DVC's hash of the accepted folder
    staging = repo / ".casepilot" / "data" / "staging"
    assert staging.is_dir() and not any(staging.iterdir())  # raw copies deleted once accepted
    again = repro()  # intake always looks for new batches; nothing new: validate stays
    assert "Running stage 'validate'" not in again and "pulled 0 new batch(es)" in again
    assert dvc_data_version(repo / "dvc.lock") == version
    (incoming / "day-002.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in fixture_rows(20, "d2"))
    )
    third = repro()
    assert "Running stage 'intake'" in third and "Running stage 'validate'" in third
    assert dvc_data_version(repo / "dvc.lock") != version
    assert len(list((repo / ".casepilot" / "data" / "accepted").glob("*.parquet"))) == 2
    params = json.loads((repo / "params.yaml").read_text())
    params["data"]["validation"]["max_pii_rate"] = 0.5
    (repo / "params.yaml").write_text(json.dumps(params))
    fourth = repro()
    assert "Running stage 'validate'" in fourth  # a data.validation change re-validates


def test_an_unreadable_file_is_alerted_and_retried_not_recorded(home: Home) -> None:
    params = make_params(home)
    write_batch(params, "day-001.jsonl", fixture_rows(20, "ok"))
    broken = params.home.data / "incoming" / "day-002.jsonl"
    broken.write_text('{"case_id": "x"\n')
    report = run_intake(params)
    assert report.unreadable == ["day-002.jsonl"] and len(report.outcomes) == 1
    assert [a.kind for a in read_alerts(params)] == ["batch_unreadable"]
    broken.write_text("".join(json.dumps(row) + "\n" for row in fixture_rows(20, "fixed")))
    assert len(run_intake(params).pulled) == 1
