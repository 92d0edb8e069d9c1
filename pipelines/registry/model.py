"""The pyfunc side of a registered stage: package a stage folder, load it, and predict with it.

A stage folder is saved as an MLflow "model from code" (nothing pickled): the code file below is
stored beside the weights and calls back into `pipelines.registry.register` (which re-exports
`load_stage_folder` and `predict_with_stage`), so models registered before this module existed
keep loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGE_ARTIFACT = "stage"  # the pyfunc artifact key that holds the stage folder
# The pyfunc model's code, stored beside the weights (MLflow "model from code": nothing pickled).
_MODEL_CODE = '''"""casepilot stage model: loads its folder with the stage's own load."""
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class StageModel(PythonModel):
    def load_context(self, context):
        from pipelines.registry.register import load_stage_folder

        self.stage = context.model_config["stage"]
        self.model = load_stage_folder(self.stage, Path(context.artifacts["stage"]))

    # a DataFrame hint: MLflow then skips schema inference (texts or records are both accepted)
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from pipelines.registry.register import predict_with_stage

        return predict_with_stage(self.stage, self.model, model_input)


mlflow.models.set_model(StageModel())
'''


def _package(stage: str, model_dir: Path, out: Path) -> Path:
    """Save `model_dir` as a pyfunc model (model from code, folder as artifact) under `out`."""
    import mlflow
    import mlflow.pyfunc

    code = out / "stage_model.py"
    code.write_text(_MODEL_CODE, encoding="utf-8")
    package = out / "model"
    mlflow.pyfunc.save_model(
        path=str(package),
        python_model=str(code),
        artifacts={STAGE_ARTIFACT: str(model_dir)},
        model_config={"stage": stage},
        pip_requirements=_requirements(),
        metadata={"casepilot_stage": stage},
    )
    return package


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    # casepilot itself is not a PyPI package: the version tags name its git commit instead
    # onnxruntime: stage folders whose chosen quantization is onnx / onnx_int8 run in it
    for package in ("mlflow", "torch", "transformers", "safetensors", "tokenizers", "onnxruntime"):
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pinned


def load_stage_folder(stage: str, local_dir: Path, *, qdrant_location: str | None = None) -> Any:
    """Return the stage object that stage `stage`'s `load` builds from `local_dir`."""
    from pipelines.stages.registry import get_stage

    return get_stage(stage).load(Path(local_dir), location=qdrant_location)


def _as_dict(prediction: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(prediction):
        return dataclasses.asdict(prediction)
    return prediction.model_dump(mode="json") if hasattr(prediction, "model_dump") else prediction


def predict_with_stage(stage: str, model: Any, model_input: Any) -> list[Any]:
    """Run a loaded stage on pyfunc input: texts, or records (a DataFrame or a list of dicts).

    Each stage's `predict_records` reads the fields it needs (trigger / topic / tone:
    `message`, tone also `draft`; retrieve also `topic`; answer `AnswerInput` fields).
    Returns one dict per input.
    """
    if hasattr(model_input, "to_dict"):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, str | dict):
        rows = [model_input]
    else:
        rows = list(model_input)
    records = [row if isinstance(row, dict) else {"message": str(row)} for row in rows]
    from pipelines.stages.registry import get_stage

    return [_as_dict(p) for p in get_stage(stage).predict_records(model, records)]
