"""Where the service's stage folders come from: an alias resolved to one folder per stage.

A `ModelSource` resolves an alias (`champion`, `challenger`) to one stage folder per stage: the
MLflow registry by default (`RegistrySource`), or a folder of `<alias>/<stage>/` dirs for tests
and offline demos (`FolderSource`; an alias may be a symlink, so moving it is an alias move).
Before each resolve the registry's SQLite store is checked: a missing `mlflow.db` fails the
reload with the reason (MLflow would silently create an empty one); a replaced one fails it
too (MLflow's open connections still read the old file; restart the service to use the new one).
An MLflow server that does not answer fails the reload within seconds (`bound_registry_requests`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipelines.cascade import stage_version
from pipelines.data.contract import STAGES

if TYPE_CHECKING:
    from pipelines.config import Params

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class StageRef:
    """One stage version: what it is called and where its folder is."""

    stage: str
    version: str
    local_dir: Path


Refs = Mapping[str, StageRef]


class ModelSource(Protocol):
    def resolve(self, alias: str) -> dict[str, StageRef]:
        """Every stage's folder for `alias`; LookupError when a stage has none."""
        ...


class StoreMissing(RuntimeError):
    """The registry's SQLite store is gone: reloading would create an empty one."""


class StoreReplaced(RuntimeError):
    """The registry's SQLite store file changed under the running service."""


def bound_registry_requests(
    timeout_s: int, retries: int, environ: MutableMapping[str, str] | None = None
) -> None:
    """Cap MLflow's HTTP requests (read from the environment at each call) for this process.

    MLflow retries a refused or failing request 7 times with backoff (~4 minutes) by default:
    a reload with the server down would hold the reload lock and leave `/admin/reload` and
    `last_error` silent that long. Values already in the environment win.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


class RegistrySource:
    """Stage versions by alias from the MLflow registry (`casepilot-<stage>@<alias>`)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        bound_registry_requests(params.serve.registry_timeout_s, params.serve.registry_retries)
        self.store_identity: tuple[int, int] | None = None  # (device, inode) of mlflow.db
        self.store_replaced: str | None = None  # set when the store file changed under us

    def check_store(self) -> None:
        """Refuse a missing SQLite store, and a replaced one (reported in `store_replaced`)."""
        uri = self.params.mlflow_tracking_uri
        if not uri.startswith("sqlite:///"):
            return
        path = Path(uri.removeprefix("sqlite:///"))
        try:
            stat = path.stat()
        except OSError as err:
            raise StoreMissing(
                f"MLflow store {path} is unreadable ({err.strerror}); not creating an empty one. "
                "Restore the file (or fix register.tracking_uri); the loaded models keep serving"
            ) from None
        identity = (stat.st_dev, stat.st_ino)
        if self.store_identity is not None and identity != self.store_identity:
            # MLflow's open connections still read the old file: refuse rather than mix the two
            self.store_replaced = (
                f"{path} was replaced (inode {self.store_identity[1]} -> {identity[1]}) while the "
                "service had it open; restart the service to read the new store"
            )
            raise StoreReplaced(f"MLflow store {self.store_replaced}")
        self.store_identity = identity

    def resolve(self, alias: str) -> dict[str, StageRef]:
        from pipelines.registry.register import resolve_cascade_dirs

        self.check_store()
        resolved = resolve_cascade_dirs(self.params, alias)
        return {s: StageRef(s, f"{r.name}/{r.version}", r.local_dir) for s, r in resolved.items()}


class FolderSource:
    """Stage folders at `root/<alias>/<stage>`; a stage missing for `challenger` uses `champion`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def resolve(self, alias: str) -> dict[str, StageRef]:
        refs, missing = {}, []
        for stage in STAGES:
            folder = self.root / alias / stage
            if not folder.is_dir() and alias == CHALLENGER:
                folder = self.root / CHAMPION / stage
            if not folder.is_dir():
                missing.append(stage)
                continue
            folder = folder.resolve()
            refs[stage] = StageRef(stage, stage_version(stage, folder), folder)
        if missing:
            raise LookupError(
                f"{self.root / alias}: no folder for {', '.join(missing)}; put "
                "trained stage folders there (e.g. `casepilot train <stage> --out`)"
            )
        return refs
