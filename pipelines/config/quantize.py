"""params.yaml `quantize:`: which post-training quantization each stage gets, and its budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.config.section import Section


class QuantizeConfig(Section):
    method: Literal[
        "auto",
        "none",
        "bf16",
        "int8_dynamic",
        "quanto_int8",
        "quanto_int4",
        "onnx",
        "onnx_int8",
        "gptq",
    ] = Field("auto", description="'auto' measures the CPU candidates and keeps the best")
    max_metric_drop: float = Field(0.01, ge=0, le=1, description="in metric units (0.01 = 1 point)")
    gptq_bits: Literal[2, 3, 4, 8] = 4
    gptq_group_size: int = Field(128, ge=1, description="shrunk to divide a tiny model's widths")
    auto_candidates: tuple[
        Literal["bf16", "int8_dynamic", "quanto_int8", "quanto_int4", "onnx", "onnx_int8"], ...
    ] = Field(
        ("bf16", "int8_dynamic", "quanto_int8", "quanto_int4", "onnx", "onnx_int8"),
        description="what 'auto' measures against fp32 (onnx*: encoder stages only)",
    )
    onnx_per_channel: bool = Field(True, description="onnx_int8: one weight scale per column")
    onnx_reduce_range: bool = Field(
        False, description="onnx_int8: 7-bit weights (only for CPUs without VNNI)"
    )
    onnx_weight_type: Literal["qint8", "quint8"] = Field(
        "qint8", description="onnx_int8: signed weights (VNNI's u8×s8) or unsigned"
    )
    max_val_cases: int = Field(
        400, ge=1, description="validation cases scored per candidate (generation is slow)"
    )
    latency_batch: int = Field(32, ge=1, description="examples in the timed workload")
    latency_rounds: int = Field(5, ge=1, description="interleaved timing rounds (median kept)")
    torch_threads: int = Field(2, ge=1, description="torch intra-op threads while measuring")
    generator_metric: Literal["rouge_l", "mean_logprob"] = Field(
        "rouge_l",
        description="answer/tone key metric: ROUGE-L of generations, or reference log-prob",
    )
