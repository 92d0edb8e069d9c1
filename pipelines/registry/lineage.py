"""Lineage of a registered stage version: data version, git commit, params hash, base model.

Every MLflow model version carries these as tags, so any served model can be traced back to
the data, code and configuration that produced it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import Params

REPO = Path(__file__).resolve().parents[2]
UNKNOWN = "unknown"
ACCEPTED_DATA = ".casepilot/data/accepted"  # the dvc.yaml output whose hash is the data version


@dataclass(frozen=True)
class Lineage:
    """Where a stage version came from; `tags()` gives the MLflow version tags."""

    data_version: str  # the DVC hash of the training data (given by the caller)
    git_commit: str
    params_hash: str  # sha256 of the stage's params section as canonical JSON
    base_model: str
    quantization: str = "none"
    training_run_id: str | None = None
    git_dirty: bool = False

    def tags(self) -> dict[str, str]:
        tags = {
            "casepilot.data_version": self.data_version,
            "casepilot.git_commit": self.git_commit,
            "casepilot.params_hash": self.params_hash,
            "casepilot.base_model": self.base_model,
            "casepilot.quantization": self.quantization,
            "casepilot.git_dirty": str(self.git_dirty).lower(),
        }
        if self.training_run_id:
            tags["casepilot.training_run_id"] = self.training_run_id
        return tags


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(repo: Path = REPO) -> str:
    """Return `git rev-parse HEAD` of `repo`, or 'unknown' outside git."""
    return _git(repo, "rev-parse", "HEAD") or UNKNOWN


def git_dirty(repo: Path = REPO) -> bool:
    """Return True when tracked files of `repo` differ from HEAD."""
    return bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))


def dvc_data_version(lock: Path | None = None, data_path: str = ACCEPTED_DATA) -> str | None:
    """Return the DVC hash (md5) that `dvc.lock` records for the output `data_path`, or None.

    Without `lock`, the `dvc.lock` of the working directory: the DVC workspace where
    `dvc repro` runs the stage (pipelines/repro/workspace.py). Never another home's lock.
    """
    import yaml

    lock = Path.cwd() / "dvc.lock" if lock is None else lock
    if not Path(lock).is_file():
        return None
    stages = (yaml.safe_load(Path(lock).read_text(encoding="utf-8")) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            if out.get("path", "").rstrip("/") == data_path.rstrip("/"):
                return out.get("md5") or out.get("hash") or None
    return None


def params_hash(section: Any) -> str:
    """Return the sha256 of a params section (pydantic model or mapping) as canonical JSON."""
    values = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _stage_info(model_dir: Path | None) -> dict[str, Any]:
    path = Path(model_dir) / "stage.json" if model_dir is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def stage_quantization(model_dir: Path | None) -> str:
    """Return the quantization `stage.json` records ('quantization': str or {method: ...})."""
    value = _stage_info(model_dir).get("quantization")
    if isinstance(value, dict):
        value = value.get("method") or value.get("chosen")
    return str(value) if value else "none"


def stage_base_model(params: Params, stage: str, model_dir: Path | None = None) -> str:
    """Return the stage's base model: from its `stage.json` when it says, else from params."""
    info = _stage_info(model_dir)
    for key in ("base_model", "embedder"):
        if isinstance(info.get(key), str) and info[key]:
            return info[key]
    section = getattr(params, stage)
    for key in ("base_model", "embedder"):
        value = getattr(section, key, None)
        if value:
            return str(value)
    return "tiny" if hasattr(section, "tiny_layers") else UNKNOWN


def stage_lineage(
    params: Params,
    stage: str,
    *,
    data_version: str,
    model_dir: Path | None = None,
    quantization: str | None = None,
    training_run_id: str | None = None,
    repo: Path = REPO,
) -> Lineage:
    """Return the lineage of `stage` trained with `params` on `data_version` (a DVC hash).

    `quantization` None reads it from the folder's `stage.json` ('none' when absent).
    """
    if not hasattr(params, stage):
        raise ValueError(f"unknown stage {stage!r}: params.yaml has no section for it")
    return Lineage(
        data_version=data_version or UNKNOWN,
        git_commit=git_commit(repo),
        params_hash=params_hash(getattr(params, stage)),
        base_model=stage_base_model(params, stage, model_dir),
        quantization=quantization or stage_quantization(model_dir),
        training_run_id=training_run_id,
        git_dirty=git_dirty(repo),
    )
