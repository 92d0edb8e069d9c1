"""Resolve a stage's registry alias to a downloaded, cached stage folder, and to a cascade.

The files land in `CASEPILOT_HOME/cache/mlflow-models/<stage>/<version>`, written once and
renamed into place; the cascade loads the folder itself (`resolve_cascade_dirs`, `load_cascade`).
`champion` resolves only to a version with an approval record (a reviewer's approval tag or a
bootstrap): anything else raises `UnapprovedChampion` and pages, so neither the service nor the
CLI ever runs a champion that was moved around the approval gate.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.data.contract import STAGES
from pipelines.registry.approval import approval_record
from pipelines.registry.approval_verify import (
    BOOTSTRAP,
    README_SECTION,
    UnapprovedChampion,
    unsigned_champion,
)
from pipelines.registry.audit import page_event, version_url
from pipelines.registry.model import STAGE_ARTIFACT
from pipelines.registry.store import (
    CHALLENGER,
    CHAMPION,
    aliases_of,
    registered_model_name,
    registry_client,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from pipelines.cascade import Cascade
    from pipelines.config import Params

_CACHE_MARKER = ".casepilot-source.json"


@dataclass(frozen=True)
class ResolvedStage:
    """A stage version found by alias and downloaded: `local_dir` is the stage folder."""

    stage: str
    alias: str  # the alias that resolved (champion when a challenger was missing)
    name: str
    version: str
    local_dir: Path
    model_path: Path  # the MLflow model root (MLmodel), for `mlflow.pyfunc.load_model`


def _cached(root: Path, source: str) -> bool:
    marker = root / _CACHE_MARKER
    return (
        marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("source") == source
    )


def _download(params: Params, version: ModelVersion, root: Path) -> Path:
    """Download a model version's artifacts into `root` once; reuse them when the source matches.

    Files land in a private staging folder first and are renamed into place, so a reader never
    sees a half-written version and a failed download leaves nothing behind.
    """
    import mlflow.artifacts

    if _cached(root, version.source):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        # The storage location, not `models:/…`: MLflow resolves those via the global registry URI.
        client = registry_client(params)
        content = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_model_version_download_uri(version.name, version.version),
                dst_path=str(staging),
                tracking_uri=client.tracking_uri,
            )
        )
        marker = {"name": version.name, "version": str(version.version), "source": version.source}
        (content / _CACHE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        shutil.rmtree(root, ignore_errors=True)
        try:
            content.rename(root)
        except OSError:
            if not _cached(root, version.source):  # another process won the race: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _stage_dir(model_path: Path) -> Path:
    import yaml

    mlmodel = yaml.safe_load((model_path / "MLmodel").read_text(encoding="utf-8"))
    artifacts = mlmodel["flavors"]["python_function"].get("artifacts", {})
    if STAGE_ARTIFACT not in artifacts:
        raise ValueError(
            f"{model_path}: not a casepilot stage model (no '{STAGE_ARTIFACT}' artifact)"
        )
    return model_path / artifacts[STAGE_ARTIFACT]["path"]


def resolve_stage(params: Params, stage: str, alias: str) -> ResolvedStage:
    """Return the version of `stage` that `alias` points to, downloaded into the cache.

    The files land in `CASEPILOT_HOME/cache/mlflow-models/<stage>/<version>` and are reused.
    For `champion`, a version without an approval record raises
    `UnapprovedChampion` (and pages, `refuse_unapproved_champion`) before anything is downloaded.
    """
    client = registry_client(params)
    name = registered_model_name(params.register, stage)
    version_number = aliases_of(client, name).get(alias)
    if version_number is None:
        raise LookupError(
            f"{name} has no version with alias '{alias}'; register one with "
            f"`casepilot register {stage} --model DIR`, or set a first champion with "
            "`casepilot promote --bootstrap --yes`"
        )
    version = client.get_model_version(name, version_number)
    if alias == CHAMPION:
        refuse_unapproved_champion(params, stage, version)
    root = params.home.cache / "mlflow-models" / stage / str(version.version)
    model_path = _download(params, version, root)
    return ResolvedStage(
        stage=stage,
        alias=alias,
        name=name,
        version=str(version.version),
        local_dir=_stage_dir(model_path),
        model_path=model_path,
    )


def refuse_unapproved_champion(params: Params, stage: str, version: ModelVersion) -> None:
    """Raise UnapprovedChampion, and page, when `version` carries no approval record — or,
    under sign-in, no signed approval by a reviewer (`approval_verify.unsigned_champion`).

    The page's dedup key names the version, so a service polling every few seconds pages
    once per cooldown, not on every poll.
    """
    record = approval_record(version.tags or {}, params.promote.approval_tag)
    if record is None:
        problem = (
            f"no approval record (no tag `{params.promote.approval_tag}`, not `{BOOTSTRAP}=true`)"
        )
    elif record.bootstrap:
        return
    else:
        problem = unsigned_champion(params, version)
    if problem is None:
        return
    name, number = version.name, str(version.version)
    link = version_url(params, name, number)
    message = (
        f"{name}@champion is version {number}: {problem}; refusing to load it. Move "
        f"champion back with `casepilot rollback {stage} --reason ...`, or have a reviewer "
        f"approve it at {link} ({README_SECTION})"
    )
    page_event(
        params,
        summary=f"champion of {stage} moved to unapproved {name} v{number}; not loaded",
        dedup_key=f"casepilot-unapproved-champion-{name}-v{number}",
        link=link,
        link_text="MLflow model version",
        details={"stage": stage, "model": name, "version": number},
    )
    raise UnapprovedChampion(message)


def resolve_cascade_dirs(
    params: Params, alias: str = CHAMPION, stages: Iterable[str] = STAGES
) -> dict[str, ResolvedStage]:
    """Return each stage's version for `alias`, downloaded.

    For `challenger`, a stage without a challenger falls back to its champion.
    """
    client = registry_client(params)
    resolved, missing = {}, []
    for stage in stages:
        found = aliases_of(client, registered_model_name(params.register, stage))
        chosen = alias if alias in found else CHAMPION if alias == CHALLENGER else None
        if chosen is None or chosen not in found:
            missing.append(stage)
            continue
        resolved[stage] = resolve_stage(params, stage, chosen)
    if missing:
        raise LookupError(
            f"no '{alias}' version for {', '.join(missing)}; register them with "
            "`casepilot register STAGE --model DIR`, then `casepilot promote --bootstrap --yes` "
            "for a first champion"
        )
    return resolved


def load_cascade(
    params: Params, alias: str = CHAMPION, *, qdrant_location: str | None = None
) -> Cascade:
    """Return the runtime cascade of every stage's `alias` version (challenger falls back).

    Its `versions` read `casepilot-<stage>/<version>`, as in the service's prediction log.
    """
    from pipelines.cascade import Cascade
    from pipelines.registry.model import load_stage_folder

    resolved = resolve_cascade_dirs(params, alias)
    location = qdrant_location or params.qdrant_location
    stages = {
        stage: load_stage_folder(stage, r.local_dir, qdrant_location=location)
        for stage, r in resolved.items()
    }
    return Cascade(**stages, versions={s: f"{r.name}/{r.version}" for s, r in resolved.items()})
