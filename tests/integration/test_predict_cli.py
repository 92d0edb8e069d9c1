"""`casepilot predict` from the MLflow `champion` cascade, and an unapproved champion refused.

Every stage is a tiny real model (the service tests' `models_root`: trained a few steps on a
one-day synthetic world, cached by a hash of the stage code), registered in a SQLite MLflow
store under tmp. The same registry path the BentoML service reloads through must refuse a
champion that was moved around the approval gate, keep serving the old one, and page once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines.config import Params, params_from_mapping
from pipelines.data.contract import STAGES
from pipelines.home import Home
from tests.integration import test_service
from tests.unit.test_paging import Receiver

pytestmark = pytest.mark.slow
models_root = test_service.models_root  # v1: every stage; v2: the trigger with a new threshold
MESSAGE = "How do I pause payouts?"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry(models_root: Path, receiver: Receiver, tmp_path_factory) -> tuple[Params, Path]:
    """v1 of every stage bootstrapped as champion; v2 of the trigger registered as challenger."""
    from pipelines.registry.lineage import Lineage
    from pipelines.registry.register import bootstrap_champion, register_stage

    root = tmp_path_factory.mktemp("predict")
    raw = {
        "register": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "gates": {}},
        "monitor": {"pager": {"kind": "webhook", "url": receiver.url, "retries": 1}},
    }
    params = params_from_mapping(raw, home=Home(root / "home").ensure(), env={})
    lineage = Lineage(data_version="md5-t", git_commit="t", params_hash="t", base_model="tiny")
    for stage in STAGES:
        register_stage(params, stage, models_root / "v1" / stage, metrics={}, lineage=lineage)
    bootstrap_champion(params, by="ops-lead")
    register_stage(params, "trigger", models_root / "v2" / "trigger", metrics={}, lineage=lineage)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    return params, params_file


def _predict(registry: tuple[Params, Path], monkeypatch, *extra: str):
    from typer.testing import CliRunner

    from flows.cli import cascade as cli_cascade
    from flows.cli.main import app

    params, params_file = registry
    monkeypatch.setenv("CASEPILOT_HOME", str(params.home.root))
    monkeypatch.setattr(cli_cascade.console, "width", 200)  # one table row per line
    args = ["predict", MESSAGE, "--location", ":memory:", "--params", str(params_file), *extra]
    return CliRunner().invoke(app, args)


def _rows(output: str) -> dict[str, str]:
    """stage -> its table row, from the printed decision table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] in STAGES:
            rows[cells[0]] = line
    return rows


def test_predict_answers_from_the_champion_in_mlflow(registry, monkeypatch) -> None:
    shown = _predict(registry, monkeypatch)
    assert shown.exit_code == 0, shown.output
    assert "cascade decision (MLflow @champion)" in shown.output
    rows = _rows(shown.output)
    assert set(rows) == set(STAGES)
    for stage in STAGES:
        assert f"casepilot-{stage}/1" in rows[stage]
    assert "trigger=" in rows["trigger"]  # the trigger always scores
    assert "pass" in rows["trigger"] or "abstain" in rows["trigger"]
    assert "Suggestion" in shown.output or "No suggestion" in shown.output


def test_predict_from_the_challenger_falls_back_to_champion_stages(registry, monkeypatch) -> None:
    shown = _predict(registry, monkeypatch, "--alias", "challenger")
    assert shown.exit_code == 0, shown.output
    rows = _rows(shown.output)
    assert "casepilot-trigger/2" in rows["trigger"]  # the only stage with a challenger
    assert all(f"casepilot-{s}/1" in rows[s] for s in STAGES if s != "trigger")
    bad = _predict(registry, monkeypatch, "--alias", "shadow")
    assert bad.exit_code == 2 and "--alias must be champion or challenger" in bad.output


def test_the_service_keeps_its_models_when_champion_is_unapproved(
    registry, receiver, models_root, monkeypatch, tmp_path
) -> None:
    """Last in the module: moves `champion` around the gate, as a careless admin could."""
    from bentos.reload import Reloader, StageCache
    from bentos.sources import RegistrySource
    from pipelines.registry.lineage import Lineage
    from pipelines.registry.register import load_stage_folder, register_stage, registry_client

    params, _ = registry
    cache = StageCache(
        lambda stage, folder: load_stage_folder(stage, folder, qdrant_location=":memory:")
    )
    reloader = Reloader(RegistrySource(params), cache, dict.fromkeys(STAGES, True))
    assert reloader.check()
    assert reloader.current.champion.versions["trigger"] == "casepilot-trigger/1"

    lineage = Lineage(data_version="md5-t", git_commit="t", params_hash="t", base_model="tiny")
    rogue = register_stage(
        params, "trigger", models_root / "v2" / "trigger", metrics={}, lineage=lineage
    )
    registry_client(params).set_registered_model_alias(rogue.name, "champion", rogue.version)
    for _ in range(2):  # the service's poll, twice
        assert not reloader.check()
        assert "UnapprovedChampion" in reloader.last_error
        assert reloader.current.champion.versions["trigger"] == "casepilot-trigger/1"
    pages = [r["json"] for r in receiver.requests]
    assert [p["dedup_key"] for p in pages] == [f"casepilot-unapproved-champion-{rogue.name}-v3"]

    refused = _predict(registry, monkeypatch)
    assert refused.exit_code == 1
    assert "no approval record" in " ".join(refused.output.split())
