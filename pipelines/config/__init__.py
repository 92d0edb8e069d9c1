"""Typed configuration: `params.yaml` loaded once into frozen pydantic models, one per section.

Unknown keys and bad values fail with a `ConfigError` that names the key and the fix. Endpoints
can be overridden from the environment (see `ENDPOINT_ENV`), and every endpoint left empty
resolves to embedded state under `CASEPILOT_HOME`.
"""

from pipelines.config.data import (
    DataConfig,
    PiiConfig,
    SourceConfig,
    SynthConfig,
    ValidationConfig,
    WeakConfig,
)
from pipelines.config.monitor import MonitorConfig, PagerConfig
from pipelines.config.params import (
    ENDPOINT_ENV,
    ConfigError,
    Params,
    load_params,
    params_from_mapping,
)
from pipelines.config.quantize import QuantizeConfig
from pipelines.config.registry import PromoteConfig, RegisterConfig
from pipelines.config.review import ReviewConfig
from pipelines.config.schedule import ScheduleConfig
from pipelines.config.section import Section
from pipelines.config.serve import ServeConfig
from pipelines.config.stages import (
    AnswerConfig,
    ClassifierConfig,
    GeneratorConfig,
    RetrieveConfig,
    ToneConfig,
    TopicConfig,
    TriggerConfig,
)

__all__ = [
    "ENDPOINT_ENV",
    "AnswerConfig",
    "ClassifierConfig",
    "ConfigError",
    "DataConfig",
    "GeneratorConfig",
    "MonitorConfig",
    "PagerConfig",
    "Params",
    "PiiConfig",
    "PromoteConfig",
    "QuantizeConfig",
    "RegisterConfig",
    "RetrieveConfig",
    "ReviewConfig",
    "ScheduleConfig",
    "Section",
    "ServeConfig",
    "SourceConfig",
    "SynthConfig",
    "ToneConfig",
    "TopicConfig",
    "TriggerConfig",
    "ValidationConfig",
    "WeakConfig",
    "load_params",
    "params_from_mapping",
]
