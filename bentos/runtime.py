"""What the service process takes from its environment: params, its models' source, test hooks.

- `CASEPILOT_PARAMS`: the params.yaml to read (default `params.yaml`), loaded once.
- `CASEPILOT_MODELS_DIR`: serve `<dir>/<alias>/<stage>/` folders instead of the MLflow registry.
- `CASEPILOT_SERVE_ALIAS`, `CASEPILOT_SHADOW_ALIAS`: the aliases served and shadowed
  (`champion`, `challenger` by default).
- `CASEPILOT_TEST_SHADOW_FAULT_FILE`: a test hook, off unless set (`shadow_fault_hook`).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from bentos.api import metrics
from bentos.reload import Reloader, StageCache
from bentos.sources import CHALLENGER, CHAMPION, FolderSource, ModelSource, RegistrySource
from pipelines.config import Params, load_params

PARAMS_ENV = "CASEPILOT_PARAMS"
MODELS_DIR_ENV = "CASEPILOT_MODELS_DIR"
ALIAS_ENV, SHADOW_ALIAS_ENV = "CASEPILOT_SERVE_ALIAS", "CASEPILOT_SHADOW_ALIAS"
# Test hook, off unless set: a file whose content ("crash", "hang", "slow" or "none") makes the
# shadow challenger fail that way, so tests can show the champion is unaffected.
TEST_FAULT_ENV = "CASEPILOT_TEST_SHADOW_FAULT_FILE"


@functools.cache
def serve_params() -> Params:
    """params.yaml of this process (`CASEPILOT_PARAMS`), loaded once."""
    params = load_params(os.environ.get(PARAMS_ENV, "params.yaml"))
    params.home.apply()
    return params


def model_source(params: Params) -> ModelSource:
    """Stage folders from `CASEPILOT_MODELS_DIR` when set, else from the MLflow registry."""
    models_dir = os.environ.get(MODELS_DIR_ENV)
    return FolderSource(Path(models_dir)) if models_dir else RegistrySource(params)


def load_stage(stage: str, local_dir: Path) -> Any:
    """The stage object in `local_dir`, with the service's Qdrant location."""
    from pipelines.registry.register import load_stage_folder

    return load_stage_folder(stage, local_dir, qdrant_location=serve_params().qdrant_location)


def build_reloader(params: Params) -> Reloader:
    """The service's reloader: its model source and aliases, each (re)load counted in /metrics."""
    return Reloader(
        model_source(params),
        StageCache(load_stage),
        params.serve.shadow,
        champion_alias=os.environ.get(ALIAS_ENV, CHAMPION),
        shadow_alias=os.environ.get(SHADOW_ALIAS_ENV, CHALLENGER),
        on_reload=lambda result: metrics()["reloads"].labels(result=result).inc(),
    )


def _fault_mode(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip() if Path(path).exists() else "none"


def shadow_fault_hook() -> None:
    """Test hook (`CASEPILOT_TEST_SHADOW_FAULT_FILE`): make the shadow run crash, hang or stall."""
    path = os.environ.get(TEST_FAULT_ENV)
    if not path:
        return
    mode = _fault_mode(path)
    if mode == "crash":
        raise RuntimeError("injected shadow crash (test hook)")
    if mode == "slow":
        time.sleep(1.5 * serve_params().serve.shadow_timeout_s)
    while mode == "hang":  # until the test clears the file
        time.sleep(0.05)
        mode = _fault_mode(path)


def torch_threads(threads: int) -> None:
    """Set torch intra-op threads for the calling thread (OpenMP keeps that per thread)."""
    import torch

    torch.set_num_threads(threads)
