"""`casepilot train answer|tone` and `casepilot evaluate answer|tone`: the generator stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.table import Table

console = Console()
GeneratorStage = Literal["answer", "tone"]


def _read(path: Path, kind: str) -> list:
    from pipelines.data.contract import KnowledgeDoc, LabeledCase, read_jsonl

    model = LabeledCase if kind == "cases" else KnowledgeDoc
    if not path.is_file():
        console.print(f"[red]{path} not found: pass a JSONL file of {model.__name__} records[/red]")
        raise typer.Exit(2)
    return read_jsonl(path, model)


def _table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _train(
    stage: GeneratorStage, cases: Path, val: Path | None, docs: Path | None, out: Path,
    params_file: Path, deepspeed: str | None, launcher: str, mlflow: bool,
) -> None:  # fmt: skip
    from flows.cli.main import params_or_exit
    from flows.cli.train_launch import (
        relaunch_if_deepspeed,
        split_or_val,
        stage_config,
        train_and_report,
    )
    from pipelines.stages.base import StageInputs
    from pipelines.stages.training import rich_progress_callback

    params = params_or_exit(params_file)
    cfg = stage_config(params, stage, deepspeed)
    relaunch_if_deepspeed(
        stage, cfg, launcher, params, cases=cases, out=out, params_file=params_file, val=val,
        mlflow=mlflow, extra=["--docs", str(docs)] if docs else [], console=console,
    )  # fmt: skip
    split = split_or_val(params, _read(cases, "cases"), _read(val, "cases") if val else None)
    inputs = StageInputs(
        docs=_read(docs, "docs") if docs else [],
        callbacks=[rich_progress_callback(console, f"train {stage}")],
    )
    train_and_report(
        stage, params, cfg, split, out, inputs, mlflow=mlflow, console=console, table=_table
    )


def _log(
    params: Any, stage: str, run_name: str, metrics: dict, logged: dict, model_dir: Path
) -> None:
    import mlflow as mlflow_lib

    from pipelines.registry.tracking import log_evaluation, mlflow_run

    with mlflow_run(params, f"casepilot-{stage}", run_name) as run:
        log_evaluation(metrics, None, logged)
        mlflow_lib.log_artifact(str(Path(model_dir) / "stage.json"))
        mlflow_lib.set_tags({"casepilot.stage": stage, "casepilot.model_dir": str(model_dir)})
        console.print(f"MLflow run {run.info.run_id} in experiment casepilot-{stage}")


def _evaluate(
    stage: GeneratorStage, model_dir: Path, cases: Path, docs: Path | None, pool: Path | None,
    params_file: Path, mlflow: bool, json_out: Path | None,
) -> None:  # fmt: skip
    from flows.cli.main import params_or_exit
    from pipelines.stages.base import StageInputs
    from pipelines.stages.runner import evaluate_stage

    params = params_or_exit(params_file)
    inputs = StageInputs(
        docs=_read(docs, "docs") if docs else [], pool=_read(pool, "cases") if pool else None
    )
    metrics = evaluate_stage(stage, model_dir, _read(cases, "cases"), inputs).metrics
    console.print(_table(f"{stage} on {cases.name}", metrics))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if mlflow:
        logged = {"model_dir": str(model_dir), "cases": str(cases)}
        _log(params, stage, f"evaluate-{stage}", metrics, logged, model_dir)


CASES = typer.Option(..., "--cases", help="LabeledCase JSONL to train on")
VAL = typer.Option(None, "--val", help="validation JSONL; else a seeded split of --cases")
DOCS = typer.Option(
    None, "--docs", help="KnowledgeDoc JSONL (help-centre articles) for the context"
)
OUT = typer.Option(..., "--out", help="folder for weights, tokenizer and stage.json")
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
DEEPSPEED = typer.Option(None, "--deepspeed", help="DeepSpeed ZeRO config (overrides params)")
LAUNCHER = typer.Option(
    "auto", "--launcher", help="auto: relaunch under torchrun when DeepSpeed is on; none: run here"
)
MLFLOW = typer.Option(True, "--mlflow/--no-mlflow", help="log to MLflow")
MODEL = typer.Option(..., "--model", help="a folder written by `casepilot train`")
EVAL_CASES = typer.Option(..., "--cases", help="LabeledCase JSONL to evaluate on")
POOL = typer.Option(
    None, "--pool", help="answer: cases whose replies stand in for retrieval (e.g. the train set)"
)
JSON_OUT = typer.Option(None, "--json-out", help="also write the metrics to this JSON file")


def train_answer(cases: Path = CASES, val: Path | None = VAL, docs: Path | None = DOCS,
                 out: Path = OUT, params_file: Path = PARAMS, deepspeed: str | None = DEEPSPEED,
                 launcher: str = LAUNCHER, mlflow: bool = MLFLOW) -> None:  # fmt: skip
    """Fine-tune the answer generator (message + topic + retrieved context → reply)."""
    _train("answer", cases, val, docs, out, params_file, deepspeed, launcher, mlflow)


def train_tone(cases: Path = CASES, val: Path | None = VAL, out: Path = OUT,
               params_file: Path = PARAMS, deepspeed: str | None = DEEPSPEED,
               launcher: str = LAUNCHER, mlflow: bool = MLFLOW) -> None:  # fmt: skip
    """Fine-tune the tone rewriter (robotic draft → house-style reply)."""
    _train("tone", cases, val, None, out, params_file, deepspeed, launcher, mlflow)


def evaluate_answer(model: Path = MODEL, cases: Path = EVAL_CASES, docs: Path | None = DOCS,
                    pool: Path | None = POOL, params_file: Path = PARAMS, mlflow: bool = MLFLOW,
                    json_out: Path | None = JSON_OUT) -> None:  # fmt: skip
    """Evaluate the answer stage: ROUGE-L, exact/near match, groundedness, abstain rate."""
    _evaluate("answer", model, cases, docs, pool, params_file, mlflow, json_out)


def evaluate_tone(model: Path = MODEL, cases: Path = EVAL_CASES, params_file: Path = PARAMS,
                  mlflow: bool = MLFLOW, json_out: Path | None = JSON_OUT) -> None:  # fmt: skip
    """Evaluate the tone stage: faithfulness, kept-draft rate, tone gain, ROUGE-L vs reference."""
    _evaluate("tone", model, cases, None, None, params_file, mlflow, json_out)
