"""GPTQ 4-bit quantization of the decoder stages (answer, tone) through GPTQModel.

The production path on GPUs; on this CPU it also quantizes and runs a small decoder (slowly),
so the suite exercises it for real. Traps (see DEPENDENCIES.md): GPTQModel needs
`GPTQMODEL_CPU_WORKERS` on a 2-core machine, handles decoder-only models only, and imports in
seconds — import it lazily. The checkpoint it writes (safetensors + `quantize_config.json`,
GPTQ format) is what `load_gptq` reads back on CPU or GPU.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Files of a generator stage folder the GPTQ checkpoint does not bring along.
_STAGE_FILES = ("stage.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def effective_group_size(model: Any, group_size: int) -> int:
    """The largest power of two ≤ `group_size` dividing every Linear's input width (tiny models).

    GPTQ groups columns of each weight; a group wider than a layer, or not dividing it, fails.
    """
    import torch

    widths = [m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    size = 1 << (max(group_size, 1).bit_length() - 1)
    while size > 1 and any(w % size for w in widths):
        size //= 2
    return size


def _env() -> None:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(2, os.cpu_count() or 1))))


def quantize_gptq(
    src: Path,
    dst: Path,
    calibration: Sequence[list[int]],
    *,
    bits: int,
    group_size: int,
) -> dict[str, Any]:
    """Quantize the decoder in stage folder `src` to GPTQ `bits` into `dst`; returns its settings.

    `calibration` holds token-id lists (prompt + reply of validation examples): GPTQ fits each
    layer's rounding to the activations they produce.
    """
    _env()
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoModelForCausalLM

    src, dst = Path(src), Path(dst)
    rows = [ids for ids in calibration if len(ids) >= 4]
    if not rows:
        raise ValueError(
            "GPTQ needs calibration text: no validation example has 4+ tokens; "
            "pass validation cases with replies"
        )
    probe = AutoModelForCausalLM.from_pretrained(str(src))
    group = effective_group_size(probe, group_size)
    del probe
    config = QuantizeConfig(bits=bits, group_size=group, desc_act=False, offload_to_disk=False)
    model = GPTQModel.load(str(src), config, device="cpu")
    samples = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in rows]
    model.quantize(samples, batch_size=1, calibration_data_min_length=4)
    if dst.exists():
        shutil.rmtree(dst)
    model.save(str(dst))
    (dst / "quant_log.csv").unlink(missing_ok=True)  # GPTQModel's per-layer log; not needed
    for name in _STAGE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    return {"bits": bits, "group_size": group, "calibration_examples": len(samples)}


def load_gptq(model_dir: Path) -> Any:
    """The HF causal LM with GPTQ kernels, from a checkpoint `quantize_gptq` wrote (eval mode)."""
    _env()
    from gptqmodel import GPTQModel

    model_dir = Path(model_dir)
    if not (model_dir / "quantize_config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir}/quantize_config.json missing: stage.json records GPTQ but the folder "
            f"holds no GPTQ checkpoint; re-run `casepilot quantize` on the trained folder"
        )
    wrapped = GPTQModel.load(str(model_dir), device="cpu")
    model = wrapped.model.eval()
    # GPTQModel "fixes" generation_config to sampling; the stages decode greedily.
    model.generation_config.do_sample = False
    return model


def gptq_settings(model_dir: Path) -> dict[str, Any]:
    """bits and group size a GPTQ checkpoint records."""
    data = json.loads((Path(model_dir) / "quantize_config.json").read_text(encoding="utf-8"))
    return {"bits": data.get("bits"), "group_size": data.get("group_size")}
