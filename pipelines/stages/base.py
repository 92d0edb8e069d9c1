"""What every stage is: the `Stage` protocol that generic code (training, evaluation, quantizing,
the registry's pyfunc model, the cascade loader) calls instead of branching on a stage's name.

To add a stage:
1. one module `pipelines/stages/<name>.py` whose `STAGE_IMPL` satisfies `Stage` (subclass
   `StageBase` to inherit the generic report, pyfunc adapter and fp32-only quantization);
2. its params section `<name>:` in params.yaml with its config model in `pipelines/config/`;
3. its DVC stages `train_<name>`, `quantize_<name>`, `evaluate_<name>` in dvc.yaml;
4. its tests in `tests/stages/test_<name>.py`.
`pipelines.stages.registry.get_stage(name)` then finds it: no other module needs a new branch.
Stages built outside `pipelines/stages/` are added with `registry.add_stage(impl)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pipelines.data.contract import KnowledgeDoc, LabeledCase

ENCODER = "encoder"  # a fine-tuned sequence classifier (torch; quantizable, ONNX-exportable)
INDEX = "index"  # an embedder plus a vector index (the embedder is quantizable)
DECODER = "decoder"  # a causal language model (torch; quantizable, GPTQ)


@dataclass(frozen=True)
class StageInputs:
    """What a stage may need besides its cases; each stage reads only what it uses."""

    docs: Sequence[KnowledgeDoc] = ()  # help-centre articles (retrieve, answer)
    pool: Sequence[LabeledCase] | None = None  # replies standing in for retrieval (answer)
    location: str | None = None  # Qdrant URL or folder (retrieve)
    data_version: str | None = None  # dataset version recorded with the index (retrieve)
    console: Any = None  # rich console for progress (encoders)
    callbacks: Sequence[Any] = ()  # trainer callbacks (decoders)


@dataclass
class Evaluation:
    """A stage's metrics on some cases, with what a tracking run logs beside them."""

    metrics: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    logged: dict[str, float] = field(default_factory=dict)  # MLflow-only extra metrics
    tags: dict[str, str] = field(default_factory=dict)  # MLflow tags beyond the stage's name
    title: str = ""  # how the console names what was evaluated


@dataclass(frozen=True)
class StageAdapter:
    """How to load, score and time one stage's quantization variants on a fixed validation set."""

    stage: str
    key_metric: str
    load: Callable[[Path], Any]
    evaluate: Callable[[Any], dict[str, float]]
    workload: Callable[[Any], None]  # the timed work: a fixed batch through the model
    workload_size: int  # examples per workload run (latency is reported per example)
    calibration: Callable[[Path], list[list[int]]] | None = None  # GPTQ token ids
    weights: Callable[[Any], Any] | None = None  # the loaded model's weights (memory)


@runtime_checkable
class Stage(Protocol):
    """One cascade stage: how it trains, loads, evaluates, predicts and is quantized."""

    name: str  # also its params section, DVC stages and MLflow model `casepilot-<name>`
    kind: str  # ENCODER, INDEX, DECODER, or anything else (then fp32 only)
    key_metric: str  # the metric the quantization gate compares
    quantize_methods: tuple[str, ...]  # precisions it supports ("none" first)

    def train(
        self,
        cfg: Any,
        train_cases: Sequence[LabeledCase],
        val_cases: Sequence[LabeledCase],
        out_dir: Path,
        inputs: StageInputs,
    ) -> Path: ...

    def load(self, model_dir: Path, *, location: str | None = None) -> Any: ...

    def evaluate(
        self, model: Any, cases: Sequence[LabeledCase], inputs: StageInputs, *, figures: bool
    ) -> Evaluation: ...

    def train_report(
        self,
        model_dir: Path,
        train_cases: Sequence[LabeledCase],
        val_cases: Sequence[LabeledCase],
        inputs: StageInputs,
        *,
        figures: bool,
    ) -> Evaluation: ...

    def predict_records(self, model: Any, records: Sequence[dict[str, Any]]) -> list[Any]: ...

    def quantize_adapter(
        self, val_cases: Sequence[LabeledCase], inputs: StageInputs, *, batch: int
    ) -> StageAdapter: ...


class StageBase:
    """Defaults a stage may inherit: report = load + evaluate, messages in, fp32 only."""

    name: str = ""
    kind: str = ""
    key_metric: str = ""
    quantize_methods: tuple[str, ...] = ("none",)

    def evaluate(
        self, model: Any, cases: Sequence[LabeledCase], inputs: StageInputs, *, figures: bool
    ) -> Evaluation:
        raise NotImplementedError

    def load(self, model_dir: Path, *, location: str | None = None) -> Any:
        raise NotImplementedError

    def train_report(
        self,
        model_dir: Path,
        train_cases: Sequence[LabeledCase],
        val_cases: Sequence[LabeledCase],
        inputs: StageInputs,
        *,
        figures: bool,
    ) -> Evaluation:
        """The freshly trained folder evaluated on validation (empty without validation)."""
        if not val_cases:
            return Evaluation({}, title=f"{self.name} on validation")
        report = self.evaluate(self.load(model_dir), val_cases, inputs, figures=figures)
        report.title = report.title or f"{self.name} on validation"
        return report

    def predict_records(self, model: Any, records: Sequence[dict[str, Any]]) -> list[Any]:
        """The model's `predict` over the records' messages (a tone record's `draft`)."""
        return list(model.predict([r.get("message") or r.get("draft") or "" for r in records]))

    def quantize_adapter(
        self, val_cases: Sequence[LabeledCase], inputs: StageInputs, *, batch: int
    ) -> StageAdapter:
        """Score with `evaluate`, time `predict_records` on the first `batch` messages."""
        records = [{"message": c.message} for c in list(val_cases)[:batch]]
        return StageAdapter(
            stage=self.name,
            key_metric=self.key_metric,
            load=self.load,
            evaluate=lambda model: self.evaluate(model, val_cases, inputs, figures=False).metrics,
            workload=lambda model: self.predict_records(model, records),
            workload_size=len(records),
        )
