"""Apply a recorded quantization method to a loaded model: what every stage's `load` calls.

`casepilot quantize` writes the chosen method into the stage folder's `stage.json` under
`quantization: {method: …}`; the stage's `load` reads it back through the loaders below, so the
registry, the cascade and the service all run the variant that passed the accuracy gate.

- `none` (fp32): the trained weights as they are.
- `bf16`: weights saved in bfloat16 and the module run in bfloat16 (AMX tiles on this CPU).
- `int8_dynamic`: torch dynamic int8 quantization of every `nn.Linear`, applied at load from the
  fp32 safetensors (its packed weights have no safetensors form).
- `quanto_int8` / `quanto_int4`: optimum-quanto weight-only quantization, applied at load.
- `gptq`: a GPTQModel 4-bit checkpoint written by `quantize_gptq` (decoder stages only).
- `onnx` / `onnx_int8`: the encoder exported to `model.onnx` in the stage folder and run in
  ONNX Runtime, fp32 or dynamic int8 (encoder stages only; see `quantize_onnx`).
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NONE = "none"
CPU_METHODS = ("bf16", "int8_dynamic", "quanto_int8", "quanto_int4")
GPTQ = "gptq"
ONNX_METHODS = ("onnx", "onnx_int8")  # encoder stages only: trigger, topic, retrieve
ALL_METHODS = (NONE, *CPU_METHODS, *ONNX_METHODS, GPTQ)


def recorded_method(stage_info: Mapping[str, Any] | None) -> str:
    """The quantization method a `stage.json` records ('none' when it records none)."""
    value = (stage_info or {}).get("quantization")
    if isinstance(value, Mapping):
        value = value.get("method")
    method = str(value) if value else NONE
    if method not in ALL_METHODS:
        raise ValueError(
            f"stage.json records quantization {method!r}, which this version cannot load; "
            f"use one of {', '.join(ALL_METHODS)} (re-run `casepilot quantize`)"
        )
    return method


def apply_method(model: Any, method: str) -> Any:
    """Return `model` (a torch module in eval mode) converted to `method`; fp32 and gptq as is."""
    import torch

    if method in ONNX_METHODS:
        raise ValueError(f"{method} is a folder's ONNX graph, not a conversion of a torch module")
    model = model.eval()
    if method in (NONE, GPTQ):
        return model
    if method == "bf16":
        return model.to(torch.bfloat16)
    if method == "int8_dynamic":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # the eager API is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            return quantize_dynamic(model.float(), {torch.nn.Linear}, dtype=torch.qint8)
    if method in ("quanto_int8", "quanto_int4"):
        from optimum.quanto import freeze, qint4, qint8, quantize

        # Quantized inside inference mode: the stages run under it, and quanto's int4 weights
        # cannot be viewed there unless they were made there.
        with torch.inference_mode():
            quantize(model, weights=qint8 if method == "quanto_int8" else qint4)
            freeze(model)
        return model
    raise ValueError(f"unknown quantization method {method!r}; use one of {ALL_METHODS}")


def model_bytes(model: Any) -> int:
    """Bytes of the model's state (weights and buffers, as serialized) in memory.

    ONNX Runtime models: the size of their graph file (its initializers are the weights).
    """
    import torch

    if hasattr(model, "onnx_bytes"):
        return int(model.onnx_bytes)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model.state_dict(), buffer)  # in memory only: a size, never a file
    return buffer.tell()


def folder_bytes(folder: Path) -> int:
    """Bytes on disk of a stage folder (files, symlinks followed)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def load_sequence_classifier(
    model_dir: Path, stage_info: Mapping[str, Any] | None, *, threads: int = 2
) -> Any:
    """The classifier of a trigger/topic folder, in the precision its `stage.json` records.

    ONNX methods give an `OnnxSequenceClassifier` (called like the torch model, `.logits`)
    with `threads` intra-op threads.
    """
    from transformers import AutoModelForSequenceClassification

    method = recorded_method(stage_info)
    if method in ONNX_METHODS:
        from pipelines.quantize.onnx_runtime import ONNX_FILE, OnnxSequenceClassifier

        record = dict(stage_info or {}).get("quantization") or {}
        return OnnxSequenceClassifier(Path(model_dir) / record.get("onnx_file", ONNX_FILE), threads)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    return apply_method(model, method)


def load_causal_lm(model_dir: Path, stage_info: Mapping[str, Any] | None) -> Any:
    """The decoder of an answer/tone folder, in the precision its `stage.json` records."""
    method = recorded_method(stage_info)
    if method == GPTQ:
        from pipelines.quantize.gptq import load_gptq

        return load_gptq(Path(model_dir))
    from transformers import AutoModelForCausalLM

    return apply_method(AutoModelForCausalLM.from_pretrained(str(model_dir)), method)


def load_stage_embedder(
    name: str,
    batch_size: int,
    stage_info: Mapping[str, Any] | None,
    *,
    model_dir: Path | None = None,
) -> Any:
    """The retrieve stage's query embedder in the recorded precision (the index is unchanged).

    ONNX methods read the graph from `model_dir` (the stage folder) and run it with the intra-op
    threads recorded at quantize time (`quantize.torch_threads`).
    """
    from pipelines.stages.encoder.embedder import load_embedder

    method = recorded_method(stage_info)
    if method == NONE:
        return load_embedder(name, batch_size)
    if method == GPTQ:
        raise ValueError("retrieve: GPTQ applies to decoder stages only; quantize with 'auto'")
    if method in ONNX_METHODS:
        from pipelines.quantize.onnx_runtime import OnnxEmbedder, onnx_threads

        if model_dir is None:
            raise ValueError(f"retrieve: {method} needs the stage folder that holds model.onnx")
        info = dict(stage_info or {})
        return OnnxEmbedder(name, Path(model_dir), info["quantization"], batch_size=batch_size,
                            threads=onnx_threads(info, 2))  # fmt: skip
    return _quantized_embedder(name, batch_size, method)


@functools.lru_cache(maxsize=4)
def _quantized_embedder(name: str, batch_size: int, method: str) -> Any:
    """A separate quantized Embedder: the shared fp32 one (drift, baselines) stays untouched."""
    from pipelines.stages.encoder.embedder import Embedder

    embedder = Embedder(name, batch_size=batch_size)
    embedder.model = apply_method(embedder.model, method)
    return embedder
