"""`casepilot pii scan`: finds planted and generic PII in every kind of file, skips quarantine."""

from __future__ import annotations

import base64
import json
import pickle
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.config import SynthConfig, params_from_mapping
from pipelines.data.intake import run_intake
from pipelines.data.pii.detectors import PlantedValue, detect
from pipelines.data.pii.scan import scan_home
from pipelines.data.pii.world_planted import planted_values
from pipelines.home import Home
from tests.integration.test_intake import NO_REFERENCE

CARD, IBAN, EMAIL = "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "jo@ex.org"
LOOK_ALIKES = (
    '{"loss": 4.123456789012345, "ts": 1764657694123, "run_id": "a41111111111111111b2c3d4e5f60718",'
    ' "date": "2026-12-02 06:41:34", "version": "2.3.14", "ip": "127.0.0.1", "amount": "$1,200",'
    ' "order": "1234567812345678", "iban_like": "GB00 WEST 1234 5698 7654 32", "pct": "+0.5"}\n'
)


def make_home(root: Path) -> Path:
    """A home with PII hidden in each kind of file, and a file of look-alikes."""
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "service.log").write_text(
        "ok\nrequest: card 4111\u200b1111\u200b1111\u200b1111 mail jo [at] ex.org\n"
    )
    (root / "metrics.json").write_text(LOOK_ALIKES)
    db = sqlite3.connect(root / "predictions.db")
    db.execute("CREATE TABLE log (case_id TEXT, message TEXT, payload BLOB, n INTEGER)")
    payload = pickle.dumps({"text": "call +44 20 7946 0958 please"})
    db.execute("INSERT INTO log VALUES (?, ?, ?, ?)", ("c1", f"iban {IBAN.lower()}", payload, 5))
    db.commit()
    db.close()
    table = pa.table({"message": ["fine", f"mail {EMAIL}"], "context": [[], [{"text": CARD}]]})
    pq.write_table(table, root / "cases.parquet")
    result = base64.b64encode(pickle.dumps(["a result that mentions", CARD])).decode()
    (root / "result.json").write_text(json.dumps({"serializer": "pickle", "result": result}))
    held = root / "data" / "quarantine" / "abc"
    held.mkdir(parents=True)
    (held / "batch.jsonl").write_text(json.dumps({"message": f"card {CARD}"}) + "\n")
    return root


def test_detectors_find_each_kind_and_ignore_look_alikes():
    text = f"{CARD} / {IBAN.lower()} / {EMAIL} / +44 20 7946 0958 / (415) 555-0132"
    assert detect(text) == {"card": 1, "iban": 1, "email": 1, "phone": 2}
    assert detect(LOOK_ALIKES) == {}


def test_scan_finds_pii_in_every_kind_of_file_but_not_in_quarantine(tmp_path: Path):
    root = make_home(tmp_path / "home")
    planted = [PlantedValue("card", CARD), PlantedValue("email", EMAIL)]
    report = scan_home(root, planted=planted)
    found = {(f.path, f.part, f.kind, f.planted): f.count for f in report.findings}
    assert found == {
        ("cases.parquet", "context", "card", False): 1,
        ("cases.parquet", "context", "card", True): 1,
        ("cases.parquet", "message", "email", False): 1,
        ("cases.parquet", "message", "email", True): 1,
        ("logs/service.log", "", "card", False): 1,
        ("logs/service.log", "", "card", True): 1,
        ("logs/service.log", "", "email", False): 1,
        ("logs/service.log", "", "email", True): 1,
        ("predictions.db", "log.message", "iban", False): 1,
        ("predictions.db", "log.payload", "phone", False): 1,
        ("result.json", "base64", "card", False): 1,
        ("result.json", "base64", "card", True): 1,
    }
    assert report.files == 5 and report.planted_found == 5 and not report.clean


def test_cli_exit_codes(tmp_path: Path):
    from flows.cli.main import app

    runner = CliRunner()
    dirty = runner.invoke(app, ["pii", "scan", "--home", str(make_home(tmp_path / "dirty"))])
    assert dirty.exit_code == 1, dirty.output
    assert "PII found" in dirty.output and CARD not in dirty.output  # counts, never values
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "metrics.json").write_text(LOOK_ALIKES)
    clean = runner.invoke(app, ["pii", "scan", "--home", str(tmp_path / "clean")])
    assert clean.exit_code == 0, clean.output
    missing = runner.invoke(app, ["pii", "scan", "--home", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_after_a_synthetic_intake_nothing_planted_is_left_outside_quarantine(tmp_path: Path):
    from pipelines.data.synth import generate_world, write_world

    cfg = SynthConfig(days=2, cases_per_day=80, pii_share=0.5, drift_from_day=None, seed=5)
    world_dir = tmp_path / "world"  # the source system, outside the home
    write_world(generate_world(cfg), world_dir)
    home = Home(tmp_path / "home").ensure()
    home.data.mkdir(parents=True, exist_ok=True)
    (home.data / "taxonomy.json").write_text((world_dir / "taxonomy.json").read_text())
    params = params_from_mapping(
        {
            "data": {
                "source": {"kind": "folder", "path": str(world_dir / "batches")},
                "validation": {**NO_REFERENCE, "max_pii_rate": 1.0},
            }
        },
        home=home,
    )
    planted = planted_values(world_dir / "manifest.json")
    assert len(planted) == 80 and {v.kind for v in planted} >= {"card", "email", "iban", "phone"}
    before = scan_home(world_dir, planted=planted)
    assert before.planted_found >= 80  # the raw source holds every planted value
    report = run_intake(params)
    assert [o.state for o in report.outcomes] == ["accepted", "accepted"], report.outcomes
    after = scan_home(home.root, planted=planted)
    assert after.files > 3 and after.clean, after.findings


@pytest.mark.parametrize("kind", ["card", "phone", "iban"])
def test_planted_numbers_are_found_however_they_are_grouped(kind: str):
    from pipelines.data.pii.detectors import PlantedIndex

    value = {"card": CARD, "phone": "+44 20 7946 0958", "iban": IBAN}[kind]
    index = PlantedIndex([PlantedValue(kind, value)])
    squeezed = value.replace(" ", "")
    for text in (value, squeezed, ".".join(value.split()), "\u200b".join(value), value.lower()):
        assert index.find(f"x {text} y"), text
    assert not index.find(f"x 0.9{squeezed.strip('+')}123456789 y")  # a long unrelated run
