"""The retraining steps as plain functions over `pipelines/`, so the Prefect flow stays a list.

Nothing here imports Prefect: each function is one step of `flows.lifecycle.retrain` and can be
called (and tested) on its own. Training reads the accepted dataset under CASEPILOT_HOME, split
the same way `casepilot train` splits it; help-centre articles for `retrieve`/`answer` come from
`CASEPILOT_HOME/data/docs.jsonl` when that file exists (`KNOWLEDGE_FILE`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.contract import STAGES

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.contract import KnowledgeDoc, LabeledCase
    from pipelines.registry import RegisteredVersion

log = logging.getLogger("casepilot.flows")
KNOWLEDGE_FILE = "docs.jsonl"  # under CASEPILOT_HOME/data: KnowledgeDoc JSONL, optional
MIN_TRAINING_CASES = 20


@dataclass(frozen=True)
class TrainingData:
    """The accepted dataset split for training, the knowledge docs, and its version."""

    train: list[LabeledCase]
    val: list[LabeledCase]
    docs: list[KnowledgeDoc]
    version: str


def check_stages(stages: list[str] | None) -> list[str]:
    """The stages to retrain, in cascade order; unknown names fail with the known ones."""
    if not stages:
        return list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    return [stage for stage in STAGES if stage in stages]


def knowledge_path(params: Params) -> Path:
    return params.home.data / KNOWLEDGE_FILE


def dataset_version(params: Params) -> str:
    """Version of what training reads: the accepted data's content hash plus the docs' hash."""
    from pipelines.intake.store import IntakePaths, data_version

    accepted = IntakePaths.for_params(params).accepted
    version = data_version(params.home.root, accepted)
    docs = knowledge_path(params)
    if docs.is_file():
        version += "+docs:" + hashlib.sha256(docs.read_bytes()).hexdigest()[:12]
    return version


def load_training_data(params: Params) -> TrainingData:
    """The accepted dataset, split by `data.validation_share`/`split_seed`, and the docs.

    Fails with the fix when intake has accepted too little to train on.
    """
    from pipelines.contract import KnowledgeDoc, read_jsonl
    from pipelines.dataset import split_cases
    from pipelines.intake.store import load_accepted

    cases = load_accepted(params)
    if len(cases) < MIN_TRAINING_CASES:
        raise ValueError(
            f"only {len(cases)} accepted cases under {params.home.data / 'accepted'} "
            f"(need {MIN_TRAINING_CASES}); deliver labeled batches to the intake source "
            "(`casepilot data intake`) or release quarantined ones"
        )
    split = split_cases(cases, params.data.validation_share, params.data.split_seed)
    docs_file = knowledge_path(params)
    docs = read_jsonl(docs_file, KnowledgeDoc) if docs_file.is_file() else []
    return TrainingData(split.train, split.val, docs, dataset_version(params))


def stage_key(params: Params, stage: str, version: str) -> str:
    """What a stage's trained model depends on: its params section, the split, the data."""
    from pipelines.lineage import params_hash

    parts = [
        stage,
        params_hash(getattr(params, stage)),
        params_hash({"share": params.data.validation_share, "seed": params.data.split_seed}),
        version,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def downstream_key(params: Params, stage: str, key: str) -> str:
    """Key of quantize/evaluate/register: the trained model's key, the quantize settings and
    the stage's gates (changing either re-runs those steps, not training)."""
    from pipelines.lineage import params_hash

    parts = [key, params_hash(params.quantize), params_hash(params.register.gates.get(stage, {}))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def registry_key(params: Params, key: str) -> str:
    """Key of the registration: the evaluated model's key and the registry it went to."""
    where = f"{key}|{params.mlflow_tracking_uri}|{params.register.model_prefix}"
    return hashlib.sha256(where.encode()).hexdigest()[:24]


def model_dir_for(params: Params, stage: str, key: str) -> Path:
    return params.home.models / "lifecycle" / stage / key


def train_stage(params: Params, stage: str, data: TrainingData, out: Path) -> Path:
    """Train one stage into `out` with the module `casepilot train <stage>` uses."""
    from pipelines.stages import answer, retrieve, tone, topic, trigger

    cfg = getattr(params, stage)
    if getattr(cfg, "deepspeed", None):
        raise ValueError(
            f"{stage}.deepspeed is set: DeepSpeed needs a distributed launcher, which an "
            f"in-process flow task is not; train it with `casepilot train {stage} --deepspeed …` "
            f"and register the folder, or set {stage}.deepspeed: null for scheduled retraining"
        )
    if stage in ("trigger", "topic"):
        module = trigger if stage == "trigger" else topic
        return module.train(cfg, data.train, data.val, out)
    if stage == "retrieve":
        return retrieve.train(
            cfg, data.train, data.val, out, docs=data.docs,
            location=params.qdrant_location, data_version=data.version,
        )  # fmt: skip
    if stage == "answer":
        return answer.train(cfg, data.train, data.val, out, docs=data.docs)
    return tone.train(cfg, data.train, data.val, out)


def quantize_stage(
    params: Params, stage: str, model_dir: Path, data: TrainingData, out: Path
) -> tuple[Path, str]:
    """Quantize behind the accuracy gate (pipelines/quantize.py) into `out`.

    Returns the folder to evaluate and register and the method chosen; with
    `quantize.method: none` the trained folder itself ('none').
    """
    if params.quantize.method == "none":
        return model_dir, "none"
    from pipelines.quantize import quantize_stage as measure_and_choose

    report = measure_and_choose(
        params.quantize, stage, model_dir, data.val, out,
        docs=data.docs, pool=data.train, log=log.info,
    )  # fmt: skip
    return out, report.chosen


def evaluate_stage(params: Params, stage: str, model_dir: Path, data: TrainingData) -> dict:
    """Offline metrics of a trained stage on the validation split (the gates' inputs)."""
    from pipelines.stages import answer, retrieve, tone, topic, trigger

    if stage in ("trigger", "topic"):
        module = trigger if stage == "trigger" else topic
        metrics, _ = module.evaluate(module.load(model_dir), data.val, figures=False)
    elif stage == "retrieve":
        index = retrieve.load(model_dir, location=params.qdrant_location)
        metrics = retrieve.evaluate(index, data.val)
    elif stage == "answer":
        metrics = answer.evaluate(answer.load(model_dir), data.val, data.docs, pool=data.train)
    else:
        metrics = tone.evaluate(tone.load(model_dir), data.val)
    return {key: float(value) for key, value in metrics.items() if _is_number(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def register_challenger(
    params: Params,
    stage: str,
    model_dir: Path,
    metrics: dict[str, float],
    *,
    data_version: str,
    quantization: str,
) -> RegisteredVersion:
    """Register the folder with its lineage; it becomes `challenger` if it passes the gates."""
    from pipelines.lineage import stage_lineage
    from pipelines.registry import register_stage

    lineage = stage_lineage(
        params, stage, data_version=data_version, model_dir=model_dir, quantization=quantization
    )
    return register_stage(params, stage, model_dir, metrics=metrics, lineage=lineage)
