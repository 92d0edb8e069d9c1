"""The `Stage` implementations shared by stages of one kind: calibrated encoder classifiers
(trigger, topic), an embedder with its vector index (retrieve) and fine-tuned decoders (answer,
tone). Each stage module builds its
`STAGE_IMPL` from one of these with its own functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.quantize.methods import CPU_METHODS, GPTQ, NONE, ONNX_METHODS
from pipelines.stages.base import (
    DECODER,
    ENCODER,
    INDEX,
    Evaluation,
    StageAdapter,
    StageBase,
    StageInputs,
)

if TYPE_CHECKING:
    from pipelines.data.contract import LabeledCase

ENCODER_METHODS = (NONE, *CPU_METHODS, *ONNX_METHODS)
DECODER_METHODS = (NONE, *CPU_METHODS, GPTQ)


class EncoderStage(StageBase):
    """A calibrated classifier stage built on `pipelines.stages.encoder.classifier`."""

    kind = ENCODER
    quantize_methods = ENCODER_METHODS

    def __init__(
        self,
        name: str,
        key_metric: str,
        *,
        train: Callable[..., Path],
        load: Callable[[Path], Any],
        evaluate: Callable[..., tuple[dict[str, float], dict[str, Any]]],
        examples: Callable[[Any, Sequence[LabeledCase]], Any],
    ) -> None:
        self.name, self.key_metric = name, key_metric
        self._train, self._load, self._evaluate, self._examples = train, load, evaluate, examples

    def train(self, cfg: Any, train_cases, val_cases, out_dir: Path, inputs: StageInputs) -> Path:
        return self._train(cfg, train_cases, val_cases, out_dir, console=inputs.console)

    def load(self, model_dir: Path, *, location: str | None = None) -> Any:
        return self._load(model_dir)

    def evaluate(self, model: Any, cases, inputs: StageInputs, *, figures: bool) -> Evaluation:
        metrics, plots = self._evaluate(model, cases, figures=figures)
        return Evaluation(metrics, plots)

    def train_report(self, model_dir: Path, train_cases, val_cases, inputs, *, figures: bool):
        """Validation metrics at the calibrated threshold, with the calibration logged."""
        model = self.load(model_dir)
        report = self.evaluate(model, val_cases, inputs, figures=figures)
        report.title = f"{self.name} on validation (threshold {model.meta.threshold:.3f})"
        report.logged = {
            "temperature": model.meta.temperature,
            "val_ece_uncalibrated": model.meta.metrics.get("val_ece_uncalibrated", 0.0),
        }
        return report

    def quantize_adapter(self, val_cases, inputs: StageInputs, *, batch: int) -> StageAdapter:
        """Time the classifier's logits on the first `batch` validation examples."""

        def workload(model: Any) -> None:
            data = self._examples(model, val_cases)
            model.classifier.logits(list(data.texts[:batch]), list(data.pairs[:batch]))

        return StageAdapter(
            stage=self.name,
            key_metric=self.key_metric,
            load=self.load,
            evaluate=lambda model: self._evaluate(model, val_cases, figures=False)[0],
            workload=workload,
            workload_size=min(batch, len(val_cases)),
            weights=lambda model: model.classifier.model,
        )


class IndexStage(StageBase):
    """An embedder plus a vector index (`pipelines.stages.retrieve`): records are searched
    within their `topic`; its stage.json records the validation metrics `train` measured."""

    kind = INDEX
    quantize_methods = ENCODER_METHODS

    def __init__(
        self,
        name: str,
        key_metric: str,
        *,
        train: Callable[..., Path],
        load: Callable[..., Any],
        evaluate: Callable[..., dict[str, float]],
    ) -> None:
        self.name, self.key_metric = name, key_metric
        self._train, self._load, self._evaluate = train, load, evaluate

    def train(self, cfg: Any, train_cases, val_cases, out_dir: Path, inputs: StageInputs) -> Path:
        if inputs.location is None:
            raise ValueError(f"{self.name}: pass the Qdrant location (params qdrant_location)")
        return self._train(
            cfg, train_cases, val_cases, out_dir, docs=inputs.docs, location=inputs.location,
            data_version=inputs.data_version,
        )  # fmt: skip

    def load(self, model_dir: Path, *, location: str | None = None) -> Any:
        return self._load(model_dir, location=location)

    def evaluate(self, model: Any, cases, inputs: StageInputs, *, figures: bool) -> Evaluation:
        return Evaluation(self._evaluate(model, cases), title=f"{self.name} {model.collection}")

    def train_report(self, model_dir: Path, train_cases, val_cases, inputs, *, figures: bool):
        """The validation metrics `train` recorded in stage.json, and the index's size."""
        info = json.loads((Path(model_dir) / "stage.json").read_text(encoding="utf-8"))
        return Evaluation(
            {**info.get("val_metrics", {}), "points": info["points"]},
            title=f"{self.name} {info['collection']} on validation",
            tags={"casepilot.collection": info["collection"]},
        )

    def predict_records(self, model: Any, records: Sequence[dict[str, Any]]) -> list[Any]:
        """Records carry `message` and, to search within it, `topic`."""
        return model.predict([_text(r) for r in records], [r.get("topic") for r in records])

    def quantize_adapter(self, val_cases, inputs: StageInputs, *, batch: int) -> StageAdapter:
        """Score on validation; time embedding the first `batch` messages."""
        messages = [c.message for c in list(val_cases)[:batch]]
        return StageAdapter(
            stage=self.name,
            key_metric=self.key_metric,
            load=self.load,
            evaluate=lambda index: self._evaluate(index, val_cases),
            workload=lambda index: index.embedder.embed(messages),
            workload_size=len(messages),
            weights=lambda index: getattr(index.embedder, "model", index.embedder),
        )


class DecoderStage(StageBase):
    """A fine-tuned generator stage built on `pipelines.stages.decoder.generator`."""

    kind = DECODER
    quantize_methods = DECODER_METHODS

    def __init__(
        self,
        name: str,
        key_metric: str,
        *,
        train: Callable[[Any, Any, Any, Path, StageInputs], Path],
        load: Callable[[Path], Any],
        evaluate: Callable[[Any, Sequence[LabeledCase], StageInputs], dict[str, float]],
        pairs: Callable[[Any, Sequence[LabeledCase], StageInputs], list[tuple[str, str]]],
        record_input: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.name, self.key_metric = name, key_metric
        self._train, self._load, self._evaluate, self._pairs = train, load, evaluate, pairs
        self._record_input = record_input  # a pyfunc record as `predict` takes it, else its text

    def train(self, cfg: Any, train_cases, val_cases, out_dir: Path, inputs: StageInputs) -> Path:
        return self._train(cfg, train_cases, val_cases, out_dir, inputs)

    def load(self, model_dir: Path, *, location: str | None = None) -> Any:
        return self._load(model_dir)

    def evaluate(self, model: Any, cases, inputs: StageInputs, *, figures: bool) -> Evaluation:
        return Evaluation(self._evaluate(model, cases, inputs))

    def predict_records(self, model: Any, records: Sequence[dict[str, Any]]) -> list[Any]:
        if self._record_input is None:
            return super().predict_records(model, records)
        return model.predict([self._record_input({**r, "message": _text(r)}) for r in records])

    def train_report(self, model_dir: Path, train_cases, val_cases, inputs, *, figures: bool):
        """Validation metrics, the training cases standing in for retrieval."""
        pooled = replace(inputs, pool=train_cases)
        return super().train_report(model_dir, train_cases, val_cases, pooled, figures=figures)

    def quantize_adapter(self, val_cases, inputs: StageInputs, *, batch: int) -> StageAdapter:
        """Score with the stage's metrics plus the reference log-probability; time fixed-length
        greedy decoding of a quarter batch; calibrate GPTQ on validation prompts."""
        from pipelines.quantize.stages import generator_adapter

        return generator_adapter(
            self.name,
            self.key_metric,
            load=self.load,
            evaluate=lambda model: self._evaluate(model, val_cases, inputs),
            pairs=lambda cfg: self._pairs(cfg, val_cases, inputs),
            batch=batch,
        )


def _text(record: dict[str, Any]) -> str:
    """A pyfunc record's text: its `message`, else its `draft` (tone)."""
    return record.get("message") or record.get("draft") or ""
