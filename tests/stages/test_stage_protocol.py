"""The `Stage` protocol: every built-in stage is found by name, and a sixth (toy) stage added
from outside runs through the generic paths — train, evaluate, load from its folder, predict via
the pyfunc adapter, quantize behind the gate — without any per-stage branch knowing it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.config import QuantizeConfig
from pipelines.data.contract import STAGES, LabeledCase
from pipelines.quantize.run import candidate_methods, quantize_stage
from pipelines.registry.model import load_stage_folder, predict_with_stage
from pipelines.stages.base import Evaluation, Stage, StageBase, StageInputs
from pipelines.stages.registry import add_stage, get_stage, remove_stage
from pipelines.stages.runner import evaluate_stage, train_stage

TOY = "wordcount"


@dataclass(frozen=True)
class WordcountConfig:
    """The toy stage's params section."""

    min_words: int = 1  # the smallest threshold tried


@dataclass(frozen=True)
class WordcountPrediction:
    label: str
    emitted: bool
    words: int


class WordcountModel:
    """Answerable when a message has at least `threshold` words."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def predict(self, messages: Sequence[str]) -> list[WordcountPrediction]:
        out = []
        for message in messages:
            words = len(message.split())
            emitted = words >= self.threshold
            out.append(WordcountPrediction("answerable" if emitted else "not", emitted, words))
        return out


def _accuracy(model: WordcountModel, cases: Sequence[LabeledCase]) -> float:
    preds = model.predict([c.message for c in cases])
    return sum(p.emitted == c.answerable for p, c in zip(preds, cases, strict=True)) / len(cases)


class WordcountStage(StageBase):
    """A real, tiny stage: learns the word-count threshold that best separates answerable."""

    name = TOY
    kind = "rule"  # neither encoder, index nor decoder: fp32 only (StageBase's default)
    key_metric = "accuracy"

    def train(self, cfg, train_cases, val_cases, out_dir: Path, inputs: StageInputs) -> Path:
        most = max(len(c.message.split()) for c in train_cases)
        best = max(
            range(cfg.min_words, most + 2),
            key=lambda t: (_accuracy(WordcountModel(t), train_cases), -t),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        info = {"stage": TOY, "threshold": best, "version": f"{TOY}-{best}"}
        (out_dir / "stage.json").write_text(json.dumps(info), encoding="utf-8")
        return out_dir

    def load(self, model_dir: Path, *, location: str | None = None) -> WordcountModel:
        info = json.loads((Path(model_dir) / "stage.json").read_text(encoding="utf-8"))
        return WordcountModel(int(info["threshold"]))

    def evaluate(self, model, cases, inputs: StageInputs, *, figures: bool) -> Evaluation:
        return Evaluation({"accuracy": _accuracy(model, cases), "n": float(len(cases))})


def _case(i: int, message: str, answerable: bool) -> LabeledCase:
    return LabeledCase(
        case_id=f"c{i}",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        message=message,
        answerable=answerable,
        topic="billing" if answerable else None,
        label_source="human",
    )


SHORT = ["thanks", "ok bye", "hello", "great thanks"]
LONG = [
    "how do I change the billing address on my account",
    "why was my card charged twice for the same order",
    "where can I download last month's invoice please",
    "can I move my subscription to the yearly plan now",
]
CASES = [_case(i, m, False) for i, m in enumerate(SHORT)] + [
    _case(10 + i, m, True) for i, m in enumerate(LONG)
]


@pytest.fixture
def toy() -> Iterator[Stage]:
    impl = add_stage(WordcountStage())
    yield impl
    remove_stage(TOY)


@pytest.mark.parametrize("name", STAGES)
def test_builtin_stages_are_found_by_name_and_satisfy_the_protocol(name: str) -> None:
    impl = get_stage(name)
    assert isinstance(impl, Stage)
    assert impl.name == name and impl.key_metric
    assert impl.quantize_methods[0] == "none"


def test_an_unknown_stage_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown stage 'nope'.*trigger, topic, retrieve"):
        get_stage("nope")
    with pytest.raises(ValueError, match="unknown stage"):
        load_stage_folder("nope", Path("."))


def test_a_toy_stage_runs_through_the_generic_paths(toy: Stage, tmp_path: Path) -> None:
    assert get_stage(TOY) is toy
    trained = train_stage(TOY, WordcountConfig(), CASES, CASES, tmp_path / "fp32", StageInputs())
    assert trained.report is not None
    assert trained.report.metrics["accuracy"] == 1.0
    assert "wall_seconds" in trained.report.metrics
    assert evaluate_stage(TOY, trained.model_dir, CASES, StageInputs()).metrics["n"] == 8.0

    model = load_stage_folder(TOY, trained.model_dir)
    rows = predict_with_stage(TOY, model, [{"message": LONG[0]}, "thanks"])
    assert [r["emitted"] for r in rows] == [True, False]
    assert rows[0] == {"label": "answerable", "emitted": True, "words": 10}


def test_a_toy_stage_is_quantized_fp32_only_behind_the_gate(toy: Stage, tmp_path: Path) -> None:
    trained = train_stage(TOY, WordcountConfig(), CASES, CASES, tmp_path / "fp32", StageInputs())
    auto = QuantizeConfig(method="auto", latency_rounds=1)
    assert candidate_methods(TOY, auto) == ["none"]
    with pytest.raises(ValueError, match="does not apply to the wordcount stage"):
        candidate_methods(TOY, QuantizeConfig(method="bf16"))

    report = quantize_stage(
        auto, TOY, trained.model_dir, CASES, tmp_path / "out", log=lambda _: None
    )
    assert report.chosen == "none" and report.key_metric == "accuracy"
    assert [c.metric for c in report.candidates] == [1.0]
    info = json.loads((tmp_path / "out" / "stage.json").read_text(encoding="utf-8"))
    assert info["quantization"]["method"] == "none"
    assert (
        load_stage_folder(TOY, tmp_path / "out").threshold == toy.load(trained.model_dir).threshold
    )


def test_adding_an_object_that_is_not_a_stage_is_refused() -> None:
    with pytest.raises(TypeError, match="does not implement"):
        add_stage(object())  # type: ignore[arg-type]


def test_toy_pyfunc_adapter_reads_records_from_a_dataframe(toy: Stage, tmp_path: Path) -> None:
    import pandas as pd

    model = toy.load(toy.train(WordcountConfig(), CASES, CASES, tmp_path, StageInputs()))
    frame = pd.DataFrame({"message": ["ok", LONG[1]]})
    assert [r["label"] for r in predict_with_stage(TOY, model, frame)] == ["not", "answerable"]


def test_toy_stage_packaged_as_pyfunc_loads_and_predicts(toy: Stage, tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd

    from pipelines.registry.model import _package

    model_dir = toy.train(WordcountConfig(), CASES, CASES, tmp_path / "fp32", StageInputs())
    (tmp_path / "pkg").mkdir()
    loaded = mlflow.pyfunc.load_model(str(_package(TOY, model_dir, tmp_path / "pkg")))
    rows = loaded.predict(pd.DataFrame({"message": [LONG[2], "bye"]}))
    assert [r["emitted"] for r in rows] == [True, False]


def test_toy_stage_is_registered_in_mlflow_and_loaded_back_by_alias(
    toy: Stage, tmp_path: Path
) -> None:
    """`casepilot-wordcount` in a real MLflow registry: registered, resolved by alias, loaded."""
    from pipelines.config import params_from_mapping
    from pipelines.home import Home
    from pipelines.registry.lineage import Lineage
    from pipelines.registry.register import register_stage
    from pipelines.registry.resolve import resolve_stage
    from pipelines.registry.store import CHALLENGER

    register = {"scenario_suite": None, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    params = params_from_mapping({"register": register}, home=Home(tmp_path / "home"), env={})
    trained = train_stage(TOY, WordcountConfig(), CASES, CASES, tmp_path / "fp32", StageInputs())
    lineage = Lineage(data_version="md5-t", git_commit="t", params_hash="t", base_model="none")
    registered = register_stage(
        params, TOY, trained.model_dir, metrics={"accuracy": 1.0}, lineage=lineage
    )
    assert registered.name == f"{params.register.model_prefix}{TOY}"
    assert registered.aliases == (CHALLENGER,)

    resolved = resolve_stage(params, TOY, CHALLENGER)
    assert resolved.version == registered.version
    rows = predict_with_stage(TOY, load_stage_folder(TOY, resolved.local_dir), [LONG[3], "ok"])
    assert [r["emitted"] for r in rows] == [True, False]
