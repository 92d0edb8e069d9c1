"""Training half of the trigger and topic classifiers: `fine_tune` and `calibrate`.

`fine_tune` trains a sequence classifier with the transformers Trainer (weighted, optionally
label-smoothed cross-entropy, early stopping on validation, best model reloaded). The head reads
BERT's [CLS] pooler or the normalised mean of token states (`pooling`, see `pooled.py`) and can
start as a logistic regression on the frozen features (`head_init: linear_probe`, LP-FT).
`calibrate` then fits a temperature on the validation logits and picks the abstain threshold that
meets the target precision there; the folder (safetensors, tokenizer, `stage.json`) is what
`classifier.ClassifierModel` loads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.evaluate.calibration import fit_temperature, softmax, threshold_for_precision
from pipelines.evaluate.evaluation import classification_metrics
from pipelines.stages.encoder.classifier import (
    STAGE_FILE,
    Examples,
    StageMeta,
    encode,
    resolve_base_model,
    scores_and_correct,
)

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.config import ClassifierConfig


def class_weights(labels: Sequence[int], n_classes: int, mode: str) -> np.ndarray:
    """Return per-class loss weights (mean 1 over the training examples); absent classes get 1."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    if mode == "none":
        return np.ones(n_classes)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 1.0)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return weights / (weights[labels].mean() if len(labels) else 1.0)


def _weighted_loss(weights: np.ndarray, label_smoothing: float = 0.0):
    import torch

    weight = torch.tensor(weights, dtype=torch.float32)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()
        loss = torch.nn.functional.cross_entropy(
            logits,
            labels,
            weight=weight.to(logits.device),
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        return loss / (num_items_in_batch if num_items_in_batch else labels.numel())

    return compute_loss


def _compute_metrics(eval_pred) -> dict[str, float]:
    from sklearn.metrics import f1_score

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    predicted = np.asarray(logits).argmax(axis=1)
    return {
        "accuracy": float((predicted == labels).mean()),
        "f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


class _Encoded:
    """A torch-style dataset over pre-tokenized examples."""

    def __init__(self, encoded: list, labels: Sequence[int]) -> None:
        self.items = [dict(e, labels=int(y)) for e, y in zip(encoded, labels, strict=True)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def fine_tune(
    cfg: ClassifierConfig,
    stage: str,
    label_names: Sequence[str],
    train: Examples,
    val: Examples,
    out_dir: Path,
    *,
    positive_label: str | None = None,
    console: Console | None = None,
) -> StageMeta:
    """Fine-tune, calibrate and save a classifier into `out_dir`; returns what stage.json holds."""
    from transformers import AutoTokenizer

    from pipelines.stages.encoder.pooled import build_classifier
    from pipelines.stages.training import set_torch_threads

    if not train.texts or not val.texts:
        raise ValueError(
            f"{stage}: need training and validation examples, got "
            f"{len(train.texts)} and {len(val.texts)}; add labeled cases"
        )
    set_torch_threads(cfg.torch_threads)
    out_dir = Path(out_dir)
    base = resolve_base_model(cfg.base_model)
    labels = list(label_names)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = build_classifier(base, labels, cfg.pooling)
    train_set = _Encoded(encode(tokenizer, train.texts, train.pairs, cfg.max_length), train.labels)
    val_set = _Encoded(encode(tokenizer, val.texts, val.pairs, cfg.max_length), val.labels)
    weights = class_weights(train.labels, len(labels), cfg.class_weights)
    probe = (
        init_head_from_probe(model, tokenizer, train_set, val_set, weights)
        if cfg.head_init == "linear_probe"
        else {}
    )
    checkpoints = out_dir / "checkpoints"
    trainer = _trainer(
        cfg, stage, model, tokenizer, (train_set, val_set), weights, checkpoints, console
    )
    result = trainer.train()
    val_logits = np.asarray(trainer.predict(val_set).predictions, dtype=np.float64)
    trainer.save_model(str(out_dir))
    positive = labels.index(positive_label) if positive_label else None
    meta = calibrate(cfg, stage, labels, val_logits, val.labels, positive)
    meta = _with_fit_record(meta, cfg, probe, trainer, result)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        (out_dir / STAGE_FILE).write_text(json.dumps(asdict(meta), indent=2), encoding="utf-8")
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out_dir / "training_args.bin").unlink(
            missing_ok=True
        )  # a pickle; stage.json has the config
    return meta


def _trainer(
    cfg: ClassifierConfig,
    stage: str,
    model: Any,
    tokenizer: Any,
    datasets: tuple[_Encoded, _Encoded],
    weights: np.ndarray,
    checkpoints: Path,
    console: Console | None,
) -> Any:
    """A Trainer with the weighted loss, early stopping on validation and a Rich progress bar."""
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
    )

    from pipelines.stages.training import rich_progress_callback, training_arguments

    train_set, val_set = datasets
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, checkpoints, n_train=len(train_set)),
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=tokenizer,
        compute_loss_func=_weighted_loss(weights, cfg.label_smoothing),
        compute_metrics=_compute_metrics,
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience),
            rich_progress_callback(console, f"train {stage}"),
        ],
    )
    trainer.remove_callback(PrinterCallback)  # the Rich bar reports progress instead
    return trainer


def _with_fit_record(
    meta: StageMeta, cfg: ClassifierConfig, probe: dict[str, float], trainer: Any, result: Any
) -> StageMeta:
    """`meta` with the base model, the run's losses and evaluations, and library versions."""
    import torch
    import transformers

    return StageMeta(
        **{
            **asdict(meta),
            "base_model": cfg.base_model,
            "metrics": {
                **meta.metrics,
                **probe,
                "train_loss": float(result.training_loss),
                "train_loss_history": [
                    log["loss"] for log in trainer.state.log_history if "loss" in log
                ],
                "eval_history": [
                    {k: v for k, v in log.items() if k in ("epoch", "eval_loss", "eval_accuracy")}
                    for log in trainer.state.log_history
                    if "eval_loss" in log
                ],
                "train_steps": int(result.global_step),
                "train_seconds": result.metrics.get("train_runtime", 0.0),
                "best_checkpoint": str(trainer.state.best_model_checkpoint),
            },
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        }
    )


def init_head_from_probe(
    model: Any, tokenizer: Any, train_set: _Encoded, val_set: _Encoded, weights: np.ndarray
) -> dict[str, float]:
    """Fit the head as a logistic regression on the frozen model's features (LP-FT's 'LP').

    Returns the probe's validation accuracy per C (recorded in stage.json metrics).
    """
    from transformers import DataCollatorWithPadding

    from pipelines.stages.encoder.pooled import fit_linear_probe, head_features

    collate = DataCollatorWithPadding(tokenizer)

    def features(data: _Encoded) -> tuple[Any, list[int]]:
        order = np.argsort([len(item["input_ids"]) for item in data.items], kind="stable")
        batches = (
            collate([data.items[i] for i in order[start : start + 128]])
            for start in range(0, len(order), 128)
        )
        x = head_features(model, batches)[np.argsort(order, kind="stable").tolist()]
        return x, [item["labels"] for item in data.items]

    present = {item["labels"] for item in train_set.items}
    class_weight = {i: w for i, w in enumerate(weights.tolist()) if i in present}
    return fit_linear_probe(model, features(train_set), features(val_set), class_weight)


def calibrate(
    cfg: ClassifierConfig,
    stage: str,
    labels: list[str],
    val_logits: np.ndarray,
    val_labels: Sequence[int],
    positive: int | None,
) -> StageMeta:
    """Fit the temperature and the threshold on validation logits; returns the stage metadata."""
    temperature = fit_temperature(val_logits, val_labels)
    before = classification_metrics(val_labels, softmax(val_logits), positive_index=positive)
    probs = softmax(val_logits, temperature)
    after = classification_metrics(val_labels, probs, positive_index=positive)
    scores, correct = scores_and_correct(probs, val_labels, positive)
    choice = threshold_for_precision(scores, correct, cfg.target_precision, floor=1.0 / len(labels))
    metrics = {
        **{f"val_{k}": v for k, v in after.items()},
        "val_ece_uncalibrated": before["ece"],
        "val_nll_uncalibrated": before["nll"],
        "val_threshold_precision": choice.precision,
        "val_threshold_coverage": choice.coverage,
        "val_threshold_met": choice.met,
    }
    return StageMeta(
        stage=stage,
        labels=labels,
        temperature=temperature,
        threshold=choice.threshold,
        base_model=cfg.base_model,
        max_length=cfg.max_length,
        positive_label=labels[positive] if positive is not None else None,
        metrics=metrics,
        config=cfg.model_dump(),
    )
