"""The MLflow registry layer: lineage tags, gates → aliases, promotion, load by alias, server."""

from __future__ import annotations

import json
import math
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.config import Params, TopicConfig, params_from_mapping
from pipelines.data.contract import LabeledCase
from pipelines.home import Home
from pipelines.registry.lineage import dvc_data_version, git_commit, params_hash, stage_lineage
from pipelines.registry.register import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    aliases_of,
    bootstrap_champion,
    meets_thresholds,
    promote_challenger,
    register_stage,
    registry_client,
    resolve_cascade_dirs,
    resolve_stage,
)
from tests.conftest import postgres_url

TOPICS = {
    "payouts": ["how do i pause payouts", "change my payout schedule", "when are payouts sent",
                "payouts are late again"],
    "refunds": ["how to refund a customer", "issue a refund please", "the refund failed",
                "refund status for an order"],
}  # fmt: skip
PROBES = ["how do i pause payouts", "the refund failed twice", "payout schedule"]
LINEAGE_TAGS = ("data_version", "git_commit", "params_hash", "base_model", "quantization")
PASSING, FAILING = {"accuracy": 0.9, "f1": 0.85}, {"accuracy": 0.4, "f1": 0.3}


def _cases() -> list[LabeledCase]:
    return [
        LabeledCase(case_id=f"{topic}-{i}", created_at=datetime(2026, 1, 1, tzinfo=UTC),
                    message=message, answerable=True, topic=topic, label_source="synthetic")
        for topic, messages in TOPICS.items() for i, message in enumerate(messages)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def topic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real topic stage: a tiny BERT built from a config, trained a few steps by `topic.train`."""
    from pipelines.stages import topic
    from pipelines.stages.encoder.classifier import build_tiny_encoder

    root = tmp_path_factory.mktemp("topic")
    words = " ".join(m for ms in TOPICS.values() for m in ms).split() + PROBES[1].split()
    base = build_tiny_encoder(root / "base", words)
    cfg = TopicConfig(base_model=str(base), max_steps=2, batch_size=4, torch_threads=1)
    return topic.train(cfg, _cases(), _cases(), root / "topic")


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny stage folder for the registry mechanics: a BERT classifier built from a config,
    saved as safetensors with its tokenizer and a `stage.json` (untrained; see `topic_dir`)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    out = tmp_path_factory.mktemp("stage") / "topic"
    out.mkdir()
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "refund"]))
    BertTokenizer(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    config = BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=8, num_labels=2)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(out)
    (out / "stage.json").write_text(json.dumps({"stage": "topic", "base_model": "tiny-bert"}))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the fast tests (created once); each test has its own model names."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def _params(tmp_path: Path, tracking_uri: str | None) -> Params:
    tag = uuid.uuid4().hex[:8]
    register = {"model_prefix": f"t{tag}-", "experiment": f"test-{tag}",
                "gates": {"topic": {"accuracy": 0.8}}}  # fmt: skip
    if tracking_uri:
        register["tracking_uri"] = tracking_uri
    return params_from_mapping({"register": register}, home=Home(tmp_path / "home"), env={})


@pytest.fixture
def params(store: str, tmp_path: Path) -> Params:
    return _params(tmp_path, store)


def _register(params: Params, model_dir: Path, metrics: dict, data_version: str = "md5-abc"):
    lineage = stage_lineage(params, "topic", data_version=data_version, model_dir=model_dir)
    return register_stage(params, "topic", model_dir, metrics=metrics, lineage=lineage)


# ---------------------------------------------------------------- pure parts


def test_meets_thresholds_passes_only_when_every_metric_reaches_its_minimum() -> None:
    assert meets_thresholds({"accuracy": 0.8, "f1": 0.1}, {"accuracy": 0.8}).passed
    below = meets_thresholds({"accuracy": 0.79}, {"accuracy": 0.8, "f1": 0.5})
    assert not below.passed
    assert below.reasons == ("accuracy: 0.7900 < 0.8", "f1: missing (needs >= 0.5)")
    assert not meets_thresholds({"accuracy": math.nan}, {"accuracy": 0.1}).passed
    assert meets_thresholds({}, {}).passed


def test_params_hash_is_canonical_and_follows_the_stage_section() -> None:
    assert params_hash({"b": 1, "a": [1, 2]}) == params_hash({"a": [1, 2], "b": 1})
    assert params_hash(TopicConfig()) != params_hash(TopicConfig(learning_rate=1e-4))


def test_git_commit_inside_and_outside_a_repository(tmp_path: Path) -> None:
    inside = git_commit()
    assert inside == "unknown" or len(inside) == 40
    assert git_commit(tmp_path) == "unknown"


def test_data_version_is_read_from_dvc_lock(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  validate:\n    outs:\n"
        "    - path: .casepilot/data/accepted\n      md5: 0123abcd.dir\n"
    )
    assert dvc_data_version(lock) == "0123abcd.dir"
    assert dvc_data_version(tmp_path / "missing.lock") is None


def test_server_command_refuses_a_store_that_is_already_a_server(tmp_path: Path) -> None:
    from flows.platform.services import server_command

    with pytest.raises(ValueError, match="needs a database store"):
        server_command(_params(tmp_path, "http://127.0.0.1:5000"), 5001)
    command = server_command(_params(tmp_path, None), 5001)
    assert command[command.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert str(tmp_path / "home" / "mlflow" / "artifacts") in " ".join(command)


# ---------------------------------------------------------------- SQLite store


def test_gate_decides_challenger_and_every_version_carries_lineage(params, stage_dir) -> None:
    passed = _register(params, stage_dir, PASSING)
    failed = _register(params, stage_dir, FAILING)
    assert (passed.aliases, failed.aliases) == ((CHALLENGER,), ())
    client = registry_client(params)
    assert aliases_of(client, passed.name) == {CHALLENGER: passed.version}  # never champion
    for registered, metrics in ((passed, PASSING), (failed, FAILING)):
        tags = client.get_model_version(registered.name, registered.version).tags
        for key in LINEAGE_TAGS:
            assert tags[f"casepilot.{key}"], key
        assert tags["casepilot.data_version"] == "md5-abc"
        assert tags["casepilot.params_hash"] == params_hash(params.topic)
        assert tags["casepilot.base_model"] == "tiny-bert"  # from stage.json
        assert tags["casepilot.quantization"] == "none"
        assert {k: float(tags[f"metric.{k}"]) for k in metrics} == metrics
    failed_tags = client.get_model_version(failed.name, failed.version).tags
    assert failed_tags["casepilot.gate"] == "failed"
    assert failed_tags["casepilot.gate_reasons"] == "accuracy: 0.4000 < 0.8"


def test_bootstrap_records_itself_and_challenger_falls_back_to_champion(params, stage_dir) -> None:
    first = _register(params, stage_dir, PASSING)
    assert bootstrap_champion(params, by="ops-lead", stages=["topic"])[0].version == first.version
    client = registry_client(params)
    tags = client.get_model_version(first.name, first.version).tags
    assert tags["casepilot.bootstrap"] == "true"
    assert tags["casepilot.promoted_by"] == "ops-lead"
    assert datetime.fromisoformat(tags["casepilot.promoted_at"]).tzinfo is not None
    assert "casepilot.approved_by" not in tags  # a bootstrap is not a reviewer's approval
    audit = client.get_run(tags["casepilot.promotion_run_id"])
    assert audit.data.tags["casepilot.event"] == "bootstrap"
    assert audit.data.tags["casepilot.promoted_by"] == "ops-lead"
    again = bootstrap_champion(params, by="someone", stages=["topic"])[0]
    assert again.skipped and "already has champion" in again.skipped

    _register(params, stage_dir, FAILING)  # no challenger: the challenger cascade uses champion
    fallback = resolve_cascade_dirs(params, CHALLENGER, stages=["topic"])["topic"]
    assert (fallback.alias, fallback.version) == (CHAMPION, first.version)
    assert fallback.local_dir.is_relative_to(params.home.cache / "mlflow-models" / "topic")
    assert (fallback.local_dir / "model.safetensors").is_file()
    assert (fallback.local_dir / "stage.json").is_file()
    assert not [p for p in fallback.model_path.rglob("*") if p.suffix in (".pkl", ".bin")]

    newer = _register(params, stage_dir, PASSING)
    resolved = resolve_cascade_dirs(params, CHALLENGER, stages=["topic"])["topic"]
    assert (resolved.alias, resolved.version) == (CHALLENGER, newer.version)


def winning_decision(params: Params, cases: int = 60):
    """A real `decide_promotion` outcome in the challenger's favour (90% vs 50% match rate)."""
    from monitoring.decisions.promotion import ShadowStats, decide_promotion

    ids = [f"c{i}" for i in range(cases)]
    champion = ShadowStats("champion", {c: i % 2 == 0 for i, c in enumerate(ids)})
    challenger = ShadowStats("challenger", {c: i % 10 != 0 for i, c in enumerate(ids)})
    cfg = params.promote.model_copy(update={"min_cases": cases // 2})
    decision = decide_promotion(champion, challenger, {"topic": (0.80, 0.81)}, cfg)
    assert decision.promote, decision.reasons
    return decision


def test_promotion_keeps_the_previous_champion_for_rollback(params, stage_dir) -> None:
    from pipelines.registry.approval import approve_version, request_promotion

    first = _register(params, stage_dir, PASSING)
    bootstrap_champion(params, by="ops-lead", stages=["topic"])
    second = _register(params, stage_dir, PASSING)
    request_promotion(params, "topic", winning_decision(params))
    approve_version(params, "topic", "reviewer")
    moved = promote_challenger(params, "topic")
    assert (moved.version, moved.previous) == (second.version, first.version)
    assert moved.approved_by == "reviewer" and moved.audit_run_id
    client = registry_client(params)
    assert aliases_of(client, first.name) == {
        CHAMPION: second.version,
        PREVIOUS_CHAMPION: first.version,
    }
    tags = client.get_model_version(second.name, second.version).tags
    assert (tags["casepilot.bootstrap"], tags["casepilot.approved_by"]) == ("false", "reviewer")
    with pytest.raises(LookupError, match="no challenger"):
        promote_challenger(params, "topic")


def test_resolving_reuses_the_download_and_missing_aliases_name_the_fix(params, stage_dir) -> None:
    with pytest.raises(LookupError, match="casepilot register topic"):
        resolve_stage(params, "topic", CHAMPION)
    _register(params, stage_dir, PASSING)
    first = resolve_stage(params, "topic", CHALLENGER)
    stamp = (first.local_dir / "model.safetensors").stat().st_mtime_ns
    again = resolve_stage(params, "topic", CHALLENGER)
    assert again.local_dir == first.local_dir
    assert (again.local_dir / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(LookupError, match="trigger"):
        resolve_cascade_dirs(params, CHAMPION, stages=["trigger"])


@pytest.mark.postgres
def test_postgresql_backend_works_by_configuration(tmp_path: Path, stage_dir: Path) -> None:
    import sqlalchemy

    admin_url = postgres_url("postgres")
    database = f"casepilot_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
    except sqlalchemy.exc.OperationalError as err:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 refused a new database ({err})")
    try:
        params = _params(tmp_path, admin_url.rsplit("/", 1)[0] + f"/{database}")
        registered = _register(params, stage_dir, PASSING)
        resolved = resolve_stage(params, "topic", CHALLENGER)
        assert resolved.version == registered.version
        assert (resolved.local_dir / "model.safetensors").is_file()
    finally:  # FORCE: MLflow keeps its own pooled connections to the test database open
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------- a real `mlflow server`


def _pgid(pid: str) -> int | None:
    """The process group of a running process (from /proc), None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a free port of 127.0.0.1, started by flows/platform/services.py."""
    from flows.platform.services import free_port, start_mlflow_server, stop_mlflow_server

    params = params_from_mapping({}, home=Home(tmp_path_factory.mktemp("server-home")), env={})
    info = start_mlflow_server(params, port=free_port())
    yield params, info
    stop_mlflow_server(params)
    with pytest.raises(ProcessLookupError):
        os.killpg(info.pid, 0)  # the whole process group is gone


@pytest.mark.slow
def test_round_trip_through_a_real_mlflow_server(server, topic_dir, tmp_path) -> None:
    import mlflow
    import mlflow.pyfunc

    from pipelines.stages import topic

    _, info = server
    group = [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid(pid) == info.pid]
    assert str(info.pid) in group and len(group) >= 2  # the server and its uvicorn worker

    params = _params(tmp_path, info.url)
    registered = _register(params, topic_dir, PASSING)
    assert registered.aliases == (CHALLENGER,)
    bootstrap_champion(params, by="ops-lead", stages=["topic"])
    resolved = resolve_cascade_dirs(params, CHAMPION, stages=["topic"])["topic"]
    assert resolved.version == registered.version

    expected = topic.load(topic_dir).predict(PROBES)
    got = topic.load(resolved.local_dir).predict(PROBES)
    assert [(p.label, p.probability) for p in got] == [(p.label, p.probability) for p in expected]

    (tmp_path / "pyfunc").mkdir()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(info.url)
    try:
        model = mlflow.pyfunc.load_model(
            f"models:/{registered.name}@{CHAMPION}", dst_path=str(tmp_path / "pyfunc")
        )
    finally:
        mlflow.set_tracking_uri(previous)
    rows = model.predict(PROBES)
    assert [(r["label"], r["probability"]) for r in rows] == [
        (p.label, p.probability) for p in expected
    ]
    stage_json = json.loads((resolved.local_dir / "stage.json").read_text())
    assert stage_json["stage"] == "topic"


def test_cli_registers_then_bootstraps_a_champion(store, stage_dir, tmp_path, monkeypatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from flows.cli.main import app

    params = _params(tmp_path, store)
    monkeypatch.setenv("CASEPILOT_HOME", str(params.home.root))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"register": params.register.model_dump()}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"metrics": PASSING}))
    runner = CliRunner()
    registered = runner.invoke(app, ["register", "topic", "--model", str(stage_dir), "--metrics",
                                     str(metrics), "--data-version", "md5-cli",
                                     "--record", str(tmp_path / "registered.json"),
                                     "--params", str(params_file)])  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert "challenger" in registered.output
    record = json.loads((tmp_path / "registered.json").read_text())
    assert (record["version"], record["aliases"]) == ("1", [CHALLENGER])
    assert record["lineage"]["casepilot.data_version"] == "md5-cli"
    promoted = runner.invoke(app, ["promote", "--bootstrap", "--yes", "--by", "ops-lead",
                                   "--stage", "topic", "--params", str(params_file)])  # fmt: skip
    assert promoted.exit_code == 0, promoted.output
    assert aliases_of(registry_client(params), f"{params.register.model_prefix}topic") == {
        CHAMPION: "1"
    }
