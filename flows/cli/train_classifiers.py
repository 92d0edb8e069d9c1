"""`casepilot train trigger|topic` and `casepilot evaluate trigger|topic`: the classifier stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console

from flows.cli.train_launch import metrics_table

console = Console()
ClassifierStage = Literal["trigger", "topic"]


def _params(params_file: Path) -> Any:
    from flows.cli.main import params_or_exit

    return params_or_exit(params_file)


def _read_cases(path: Path) -> list:
    """LabeledCases from a .jsonl or .parquet file, or every such file in a folder (sorted)."""
    from pipelines.data.contract import LabeledCase, read_jsonl, read_parquet

    files = sorted([*path.glob("*.parquet"), *path.glob("*.jsonl")]) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        console.print(
            f"[red]{path}: no cases found; pass a LabeledCase .jsonl/.parquet file "
            "or a folder of them (e.g. the accepted dataset)[/red]"
        )
        raise typer.Exit(2)
    return [
        case
        for f in files
        for case in (
            read_parquet(f, LabeledCase) if f.suffix == ".parquet" else read_jsonl(f, LabeledCase)
        )
    ]


def _train(
    stage: ClassifierStage,
    cases: Path,
    val: Path | None,
    out: Path,
    params_file: Path,
    deepspeed: str | None,
    launcher: str,
    mlflow: bool,
) -> None:
    from flows.cli.train_launch import (
        relaunch_if_deepspeed,
        split_or_val,
        stage_config,
        train_and_report,
    )
    from pipelines.stages.base import StageInputs

    params = _params(params_file)
    cfg = stage_config(params, stage, deepspeed)
    relaunch_if_deepspeed(
        stage, cfg, launcher, params, cases=cases, out=out, params_file=params_file, val=val,
        mlflow=mlflow, console=console,
    )  # fmt: skip
    split = split_or_val(params, _read_cases(cases), _read_cases(val) if val else None)
    train_and_report(
        stage, params, cfg, split, out, StageInputs(console=console), mlflow=mlflow,
        console=console, table=metrics_table,
    )  # fmt: skip


def _evaluate(
    stage: ClassifierStage,
    model_dir: Path,
    cases: Path,
    params_file: Path,
    mlflow: bool,
    json_out: Path | None,
) -> None:
    from pipelines.registry.tracking import log_evaluation, mlflow_run
    from pipelines.stages.base import StageInputs
    from pipelines.stages.runner import evaluate_stage

    params = _params(params_file)
    report = evaluate_stage(stage, model_dir, _read_cases(cases), StageInputs(), figures=mlflow)
    metrics = report.metrics
    console.print(metrics_table(f"{stage} on {cases.name}", metrics))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if mlflow:
        with mlflow_run(params, f"casepilot-{stage}", f"evaluate-{stage}"):
            log_evaluation(
                metrics, report.figures, {"model_dir": str(model_dir), "cases": str(cases)}
            )


CASES = typer.Option(..., "--cases", help="LabeledCase .jsonl/.parquet, or a folder of them")
VAL = typer.Option(None, "--val", help="validation JSONL; else a seeded split of --cases")
OUT = typer.Option(..., "--out", help="folder for weights, tokenizer and stage.json")
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
DEEPSPEED = typer.Option(None, "--deepspeed", help="DeepSpeed ZeRO config (overrides params)")
LAUNCHER = typer.Option(
    "auto",
    "--launcher",
    help="auto|torchrun: relaunch under torchrun when DeepSpeed is on; none: run in this process",
)
MLFLOW = typer.Option(True, "--mlflow/--no-mlflow", help="log to MLflow")


def train_trigger(
    cases: Path = CASES,
    val: Path | None = VAL,
    out: Path = OUT,
    params_file: Path = PARAMS,
    deepspeed: str | None = DEEPSPEED,
    launcher: str = LAUNCHER,
    mlflow: bool = MLFLOW,
) -> None:
    """Fine-tune the trigger (answerable or not) and calibrate its threshold."""
    _train("trigger", cases, val, out, params_file, deepspeed, launcher, mlflow)


def train_topic(
    cases: Path = CASES,
    val: Path | None = VAL,
    out: Path = OUT,
    params_file: Path = PARAMS,
    deepspeed: str | None = DEEPSPEED,
    launcher: str = LAUNCHER,
    mlflow: bool = MLFLOW,
) -> None:
    """Fine-tune the topic classifier and calibrate its threshold."""
    _train("topic", cases, val, out, params_file, deepspeed, launcher, mlflow)


MODEL = typer.Option(..., "--model", help="a folder written by `casepilot train`")
EVAL_CASES = typer.Option(..., "--cases", help="LabeledCase JSONL to evaluate on")
JSON_OUT = typer.Option(None, "--json-out", help="also write the metrics to this JSON file")


def evaluate_trigger(
    model: Path = MODEL,
    cases: Path = EVAL_CASES,
    params_file: Path = PARAMS,
    mlflow: bool = MLFLOW,
    json_out: Path | None = JSON_OUT,
) -> None:
    """Evaluate a trained trigger: AUROC, precision/recall, ECE, coverage at its threshold."""
    _evaluate("trigger", model, cases, params_file, mlflow, json_out)


def evaluate_topic(
    model: Path = MODEL,
    cases: Path = EVAL_CASES,
    params_file: Path = PARAMS,
    mlflow: bool = MLFLOW,
    json_out: Path | None = JSON_OUT,
) -> None:
    """Evaluate a trained topic classifier: accuracy, macro F1, ECE, coverage at its threshold."""
    _evaluate("topic", model, cases, params_file, mlflow, json_out)


if __name__ == "__main__":  # `python -m flows.cli.train_classifiers …` is the torchrun entry
    from flows.cli.main import app

    app()
