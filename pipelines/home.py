"""CASEPILOT_HOME: the one folder that holds all state, so runs and tests isolate by setting it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".casepilot"

# Usage analytics of every framework off: the data is private and the machine may be offline.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GPTQMODEL_CPU_WORKERS": "2",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # only one MLflow server process set: no job-queue consumers left behind as orphans
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


@dataclass(frozen=True)
class Home:
    """The layout of the state folder. Creates nothing until `ensure()` is called."""

    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Home:
        env = os.environ if env is None else env
        return cls(Path(env.get("CASEPILOT_HOME") or DEFAULT_HOME).expanduser().resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def qdrant(self) -> Path:
        return self.root / "qdrant"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bentoml(self) -> Path:
        return self.root / "bentoml"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def evidently(self) -> Path:
        return self.root / "evidently"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def ensure(self) -> Home:
        for folder in (
            self.data,
            self.mlflow,
            self.qdrant,
            self.logs,
            self.bentoml,
            self.prefect,
            self.evidently,
            self.models,
            self.cache,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def framework_env(self) -> dict[str, str]:
        """Environment that keeps every framework's state under this folder, telemetry off."""
        return {
            **TELEMETRY_OFF,
            "CASEPILOT_HOME": str(self.root),
            "PREFECT_HOME": str(self.prefect),
            "BENTOML_HOME": str(self.bentoml),
            "HF_HOME": str(self.cache / "huggingface"),
            "TORCH_EXTENSIONS_DIR": str(self.cache / "torch_extensions"),
            "MPLCONFIGDIR": str(self.cache / "matplotlib"),
        }

    def apply(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Set `framework_env()` in the process environment, keeping what the user set already."""
        environ = os.environ if environ is None else environ
        for key, value in self.framework_env().items():
            environ.setdefault(key, value)


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the block, then restore what was there (or unset it)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
