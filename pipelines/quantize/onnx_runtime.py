"""ONNX Runtime candidates for the encoder stages: `onnx` (fp32) and `onnx_int8` (dynamic int8).

`write_onnx_variant` exports the stage's encoder with `torch.onnx.export` (the TorchScript
exporter, `dynamo=False`: the torch.export-based default needs onnxscript) into the stage folder
as `model.onnx`, and for `onnx_int8` rewrites it with `onnxruntime.quantization.quantize_dynamic`
(int8 weights, activations quantized per batch; MatMulInteger runs on VNNI where the CPU has it).
The folder keeps its fp32 safetensors and tokenizer, so the stage stays a complete stage folder.

At load, `OnnxSequenceClassifier` (trigger/topic) and `OnnxEmbedder` (the retrieve query
embedder) stand in for the torch model with exactly what the callers use: the classifier is
called with the tokenizer's batch and returns an object with `.logits` (a torch tensor); the
embedder has `embed`, `dim`, `version`, `name`, `batch_size`. Sessions run with every graph
optimisation and a fixed number of intra-op threads (no spinning: the CPU is shared).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipelines.quantize.methods import ONNX_METHODS

ONNX, ONNX_INT8 = ONNX_METHODS
ONNX_FILE = "model.onnx"
QUERY_TOKENIZER = "onnx_tokenizer"  # retrieve: the embedder's tokenizer, beside its graph
OPSET = 17


class OnnxRuntimeMissing(ImportError):
    """onnxruntime (or onnx) is not installed, so an ONNX method cannot be built or loaded."""


def require_onnxruntime() -> Any:
    """The `onnxruntime` module, or an error that names the fix."""
    try:
        import onnxruntime
    except ImportError as err:
        raise OnnxRuntimeMissing(
            "quantization 'onnx'/'onnx_int8' needs onnxruntime and onnx: run `make install` "
            "(they are casepilot dependencies), or re-run `casepilot quantize` without them "
            "in quantize.auto_candidates"
        ) from err
    return onnxruntime


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session of `path` with all graph optimisations, `threads` intra-op."""
    ort = require_onnxruntime()
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} missing: the stage records an ONNX quantization but has no graph; "
            "re-run `casepilot quantize` on the fp32 folder"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def forward_module(
    module: Any, names: Sequence[str], output: str | None, constants: dict[str, Any] | None = None
) -> Any:
    """`module` as a torch module taking the tokenizer's tensors positionally (what is traced).

    `output` None: a transformers classifier (keyword inputs, `.logits`); else the key of a
    SentenceTransformer's output features (it takes a features dict, `constants` added to it,
    e.g. sentence-transformers 6's `modality: 'text'`).
    """
    import torch

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, tensors, strict=True)) | (constants or {})
            if output is None:
                return self.inner(**features).logits
            return self.inner(features)[output]

    return Forward().eval()


def export_onnx(module: Any, sample: dict[str, Any], path: Path, output_name: str) -> None:
    """Trace `module` (a `forward_module`) on `sample` into `path`, batch and length dynamic."""
    import torch

    names = list(sample)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output_name: {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module, tuple(sample[n] for n in names), str(path), input_names=names,
            output_names=[output_name], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def quantize_int8(
    src: Path, dst: Path, *, per_channel: bool, reduce_range: bool, weight_type: str
) -> None:
    """ONNX Runtime dynamic int8 of every MatMul/Gemm weight of `src`, written to `dst`."""
    require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    quantize_dynamic(
        str(src), str(dst), per_channel=per_channel, reduce_range=reduce_range,
        weight_type=types[weight_type], op_types_to_quantize=["MatMul", "Gemm"],
    )  # fmt: skip


def write_onnx_variant(
    stage: str,
    src: Path,
    dst: Path,
    method: str,
    *,
    threads: int = 2,
    per_channel: bool = True,
    reduce_range: bool = False,
    weight_type: str = "qint8",
) -> tuple[Path, dict[str, Any]]:
    """Write `src` as a complete stage folder whose encoder runs in ONNX Runtime (`method`).

    Returns the folder and the settings recorded in its stage.json `quantization` entry.
    """
    from pipelines.quantize.stages import record_quantization, write_variant
    from pipelines.stages.base import ENCODER, INDEX
    from pipelines.stages.registry import get_stage

    if method not in ONNX_METHODS:
        raise ValueError(f"{method!r} is not an ONNX method; use one of {ONNX_METHODS}")
    kind = get_stage(stage).kind
    if kind not in (ENCODER, INDEX):
        raise ValueError(f"{stage}: ONNX Runtime candidates apply to encoder stages only")
    require_onnxruntime()
    folder = write_variant(stage, src, dst, method, {})
    settings: dict[str, Any] = {"onnx_file": ONNX_FILE, "opset": OPSET, "threads": threads}
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=folder) as tmp:
        fp32 = Path(tmp) / ONNX_FILE
        if kind == INDEX:
            settings |= _export_embedder(folder, fp32)
        else:
            _export_classifier(Path(src), fp32)
        if method == ONNX_INT8:
            quantize_int8(
                fp32, folder / ONNX_FILE, per_channel=per_channel, reduce_range=reduce_range,
                weight_type=weight_type,
            )  # fmt: skip
            settings |= {
                "per_channel": per_channel, "reduce_range": reduce_range,
                "weight_type": weight_type,
            }  # fmt: skip
        else:
            fp32.replace(folder / ONNX_FILE)
    record_quantization(folder, settings)
    return folder, settings


def _export_classifier(src: Path, path: Path) -> None:
    """Export the fp32 classifier of a trigger/topic folder, as its own loader builds it."""
    from pipelines.stages.encoder.classifier import ClassifierModel

    loaded = ClassifierModel(src)  # also registers the custom model types (mean pooling)
    sample = dict(loaded.tokenizer(["a short one", "and a somewhat longer sample text"],
                                   padding=True, return_tensors="pt"))  # fmt: skip
    export_onnx(forward_module(loaded.model, list(sample), None), sample, path, "logits")


def _export_embedder(folder: Path, path: Path) -> dict[str, Any]:
    """Export the retrieve stage's sentence-transformers embedder (pooling included)."""
    import torch

    from pipelines.quantize.stages import read_stage_info
    from pipelines.stages.encoder.embedder import Embedder

    model = Embedder(read_stage_info(folder)["embedder"]).model  # a fresh, unshared copy
    preprocess = getattr(model, "preprocess", model.tokenize)  # sentence-transformers 6: preprocess
    features = dict(preprocess(["a short one", "and a somewhat longer sample text"]))
    sample = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    constants = {k: v for k, v in features.items() if k not in sample}
    module = forward_module(model, list(sample), "sentence_embedding", constants)
    export_onnx(module, sample, path, "sentence_embedding")
    model.tokenizer.save_pretrained(str(folder / QUERY_TOKENIZER))
    return {"max_seq_length": int(model.max_seq_length), "tokenizer": QUERY_TOKENIZER}


def onnx_threads(stage_info: dict[str, Any], default: int) -> int:
    """The intra-op threads recorded at quantize time, else `default`."""
    record = stage_info.get("quantization") or {}
    return int(record.get("threads") or default) if isinstance(record, dict) else default


class OnnxSequenceClassifier:
    """An ONNX Runtime session called like a transformers classifier: `model(**batch).logits`."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = self.onnx_path = Path(path)
        self.session = session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.onnx_bytes = self.path.stat().st_size

    def __call__(self, **batch: Any) -> SimpleNamespace:
        import torch

        feed = {n: np.asarray(batch[n], dtype=np.int64) for n in self.input_names}
        [logits] = self.session.run(None, feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def eval(self) -> OnnxSequenceClassifier:
        return self


class OnnxEmbedder:
    """The retrieve query embedder in ONNX Runtime: normalized float32 rows, like `Embedder`."""

    def __init__(
        self, name: str, folder: Path, record: dict[str, Any], *, batch_size: int, threads: int
    ) -> None:
        from transformers import AutoTokenizer

        from pipelines.stages.encoder.embedder import (
            PACKAGED,
            PACKAGED_VERSION_NAME,
            embedder_path,
            weights_digest,
        )

        self.name, self.batch_size = name, batch_size
        self.path = embedder_path(name)  # the fp32 weights: the version the index was built with
        label = PACKAGED_VERSION_NAME if name == PACKAGED else self.path.name.lower()
        self.version = f"{label}-{weights_digest(self.path)}"
        folder = Path(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / record["tokenizer"]))
        self.max_length = int(record["max_seq_length"])
        self.onnx_path = folder / record.get("onnx_file", ONNX_FILE)
        self.session = session(self.onnx_path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.onnx_bytes = self.onnx_path.stat().st_size
        self._dim = int(self.session.get_outputs()[0].shape[-1])

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in length-sorted batches; rows of norm 1, in input order."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")  # fmt: skip
            feed = {n: batch[n].astype(np.int64) for n in self.input_names}
            [vectors] = self.session.run(None, feed)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out[idx] = vectors / np.maximum(norms, 1e-12)
        return out
