"""params.yaml → typed config: defaults, the repo's file, errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import ENDPOINT_ENV, ConfigError, Params, load_params, params_from_mapping
from pipelines.home import Home

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_file_is_valid_and_complete() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = load_params(REPO / "params.yaml", env={})
    assert set(raw) == set(Params.model_fields) - {"home"}
    # every knob is written down in params.yaml, none hides as a code default
    dumped = params.model_dump(mode="json")

    def missing(written: dict, full: dict, prefix: str = "") -> list[str]:
        keys = []
        for key, value in full.items():
            if key not in written:
                keys.append(prefix + key)
            elif (
                isinstance(value, dict)
                and isinstance(written[key], dict)
                and key not in ("gates", "shadow")
            ):
                keys += missing(written[key], value, f"{prefix}{key}.")
        return keys

    assert missing(raw, dumped) == []


def test_sections_are_frozen() -> None:
    params = params_from_mapping({}, env={})
    with pytest.raises(ValueError):
        params.topic.learning_rate = 1.0  # type: ignore[misc]


def test_mistyped_key_names_the_key_and_suggests_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("topic:\n  learning_rat: 0.001\n")
    with pytest.raises(ConfigError) as err:
        load_params(path, env={})
    message = str(err.value)
    assert "topic.learning_rat" in message
    assert "learning_rate" in message  # did you mean …
    assert str(path) in message


def test_unknown_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"topc: unknown key\. Did you mean 'topic'"):
        params_from_mapping({"topc": {}}, env={})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"topic": {"target_precision": 1.5}}, "topic.target_precision"),
        ({"retrieve": {"top_k": 0}}, "retrieve.top_k"),
        ({"serve": {"port": "http"}}, "serve.port"),
        ({"quantize": {"method": "fp4"}}, "quantize.method"),
        ({"data": {"synth": {"topics": 5}}}, "data.synth.topics"),
    ],
)
def test_bad_value_names_key_value_and_fix(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        params_from_mapping(raw, env={})
    message = str(err.value)
    assert key in message
    assert "Fix" in message


def test_cross_field_rules_are_explained() -> None:
    with pytest.raises(ConfigError, match="breach_n"):
        params_from_mapping({"monitor": {"breach_n": 4, "breach_m": 3}}, env={})
    with pytest.raises(ConfigError, match="needs both 'url' and 'query'"):
        params_from_mapping({"data": {"source": {"kind": "sql"}}}, env={})


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(path, env={})


def test_endpoints_default_to_embedded_state_under_home(tmp_path: Path) -> None:
    params = params_from_mapping({}, home=Home(tmp_path), env={})
    assert params.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert params.qdrant_location == ":memory:"  # restored per process from the stage folder
    assert params.prediction_log_url == f"sqlite:///{tmp_path}/logs/predictions.db"
    assert params.schedule.prefect_api_url is None


def test_environment_overrides_every_endpoint(tmp_path: Path) -> None:
    env = {
        "CASEPILOT_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "CASEPILOT_PREFECT_API_URL": "http://127.0.0.1:4200/api",
        "CASEPILOT_QDRANT_LOCATION": "http://127.0.0.1:6333",
        "CASEPILOT_PREDICTION_LOG_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    }
    raw = {"register": {"tracking_uri": "sqlite:///from-file.db"}}
    params = params_from_mapping(raw, home=Home(tmp_path), env=env)
    assert params.mlflow_tracking_uri == env["CASEPILOT_MLFLOW_TRACKING_URI"]
    assert params.schedule.prefect_api_url == env["CASEPILOT_PREFECT_API_URL"]
    assert params.qdrant_location == env["CASEPILOT_QDRANT_LOCATION"]
    assert params.prediction_log_url == env["CASEPILOT_PREDICTION_LOG_URL"]
    assert len(ENDPOINT_ENV) == 4


def test_home_comes_from_the_environment(tmp_path: Path) -> None:
    params = params_from_mapping({}, env={"CASEPILOT_HOME": str(tmp_path / "elsewhere")})
    assert params.home.root == (tmp_path / "elsewhere").resolve()
    assert not params.home.root.exists()  # nothing is created until asked
    env = params.home.framework_env()
    assert env["PREFECT_HOME"].startswith(str(params.home.root))
    assert env["BENTOML_HOME"].startswith(str(params.home.root))
    assert env["DO_NOT_TRACK"] == "true" and env["HF_HUB_OFFLINE"] == "1"
