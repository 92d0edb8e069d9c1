"""`Params`, all of params.yaml: `load_params` reads, applies env overrides and validates it.

Validation problems become one `ConfigError` whose lines name each key and its fix.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from pipelines.config.data import DataConfig
from pipelines.config.monitor import MonitorConfig
from pipelines.config.quantize import QuantizeConfig
from pipelines.config.registry import PromoteConfig, RegisterConfig
from pipelines.config.review import ReviewConfig
from pipelines.config.schedule import ScheduleConfig
from pipelines.config.section import Section
from pipelines.config.serve import ServeConfig
from pipelines.config.stages import (
    AnswerConfig,
    RetrieveConfig,
    ToneConfig,
    TopicConfig,
    TriggerConfig,
)
from pipelines.home import Home

# `register` is a section name and also ABCMeta.register on every pydantic model; harmless here.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    """All of params.yaml, plus the resolved state folder."""

    data: DataConfig = DataConfig()
    trigger: TriggerConfig = TriggerConfig()
    topic: TopicConfig = TopicConfig()
    retrieve: RetrieveConfig = RetrieveConfig()
    answer: AnswerConfig = AnswerConfig()
    tone: ToneConfig = ToneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    register: RegisterConfig = RegisterConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    promote: PromoteConfig = PromoteConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    review: ReviewConfig = ReviewConfig()
    home: Home = Field(default_factory=Home.from_env, exclude=True)

    @property
    def mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI: configured, or SQLite under CASEPILOT_HOME."""
        return self.register.tracking_uri or f"sqlite:///{self.home.mlflow / 'mlflow.db'}"

    @property
    def qdrant_location(self) -> str:
        """A Qdrant server URL (or folder) when configured, else ':memory:'.

        In memory, every process (a retrain's stages, the service, its shadow) restores the
        index from its own copy of the stage folder: nothing holds a folder lock that another
        process needs, so a retrain succeeds while the service serves.
        """
        return self.retrieve.qdrant_location or ":memory:"

    @property
    def prediction_log_url(self) -> str:
        """The prediction log's SQLAlchemy URL: configured, or SQLite under CASEPILOT_HOME."""
        return self.serve.prediction_log_url or f"sqlite:///{self.home.logs / 'predictions.db'}"


# (section, key) ← environment variable; the environment wins over params.yaml.
ENDPOINT_ENV: dict[tuple[str, str], str] = {
    ("register", "tracking_uri"): "CASEPILOT_MLFLOW_TRACKING_URI",
    ("schedule", "prefect_api_url"): "CASEPILOT_PREFECT_API_URL",
    ("retrieve", "qdrant_location"): "CASEPILOT_QDRANT_LOCATION",
    ("serve", "prediction_log_url"): "CASEPILOT_PREDICTION_LOG_URL",
}


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the key and the fix."""


def load_params(
    path: str | Path = "params.yaml",
    *,
    home: Home | None = None,
    env: Mapping[str, str] | None = None,
) -> Params:
    """Read params.yaml (a missing file means all defaults), apply env overrides, validate."""
    path = Path(path)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}"
        )
    return params_from_mapping(
        raw, source=str(path), home=home, env=os.environ if env is None else env
    )


def params_from_mapping(
    raw: Mapping[str, Any],
    *,
    source: str = "params.yaml",
    home: Home | None = None,
    env: Mapping[str, str] | None = None,
) -> Params:
    """Validate an already-parsed params mapping (see `load_params`)."""
    merged = {
        section: dict(value) if isinstance(value, dict) else value for section, value in raw.items()
    }
    for (section, key), var in ENDPOINT_ENV.items():
        if env and env.get(var):
            if not isinstance(merged.get(section, {}), dict):
                continue  # reported by validation below
            merged.setdefault(section, {})[key] = env[var]
    try:
        return Params.model_validate({**merged, "home": home or Home.from_env(env)})
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} problem(s):"]
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        key = ".".join(loc)
        if problem["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key. {_did_you_mean(loc)}")
        else:
            got = problem.get("input")
            lines.append(f"  - {key}: {problem['msg']} (got {got!r}). {_field_help(loc)}")
    return "\n".join(lines)


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Params
    for part in loc:
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return model


def _did_you_mean(loc: list[str]) -> str:
    parent = _model_at(loc[:-1])
    known = sorted(name for name in (parent.model_fields if parent else {}) if name != "home")
    close = difflib.get_close_matches(loc[-1], known, n=1)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    return f"{hint}Known keys here: {', '.join(known)}."


def _field_help(loc: list[str]) -> str:
    parent = _model_at(loc[:-1])
    field = parent.model_fields.get(loc[-1]) if parent else None
    if (
        field is None
        or isinstance(field.annotation, type)
        and issubclass(field.annotation, BaseModel)
    ):
        return "Fix the values of that section in params.yaml."
    described = f" ({field.description})" if field.description else ""
    default = field.get_default(call_default_factory=True)
    return f"Fix: set a valid value{described}; the default is {default!r}."
