"""`casepilot train|evaluate retrieve`, `casepilot evaluate cascade` and `casepilot predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.train_launch import metrics_table

console = Console()


def _params(params_file: Path) -> Any:
    from flows.cli.main import params_or_exit

    return params_or_exit(params_file)


def _read(path: Path, model: type) -> list:
    """Records from a JSONL file, or from every *.jsonl under a folder (sorted)."""
    from pipelines.data.contract import read_jsonl

    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
    elif path.is_file():
        files = [path]
    else:
        console.print(
            f"[red]{path} not found: pass a JSONL file (or a folder of them) of "
            f"{model.__name__} records[/red]"
        )
        raise typer.Exit(2)
    return [record for file in files for record in read_jsonl(file, model)]


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
MLFLOW = typer.Option(True, "--mlflow/--no-mlflow", help="log to MLflow")
LOCATION = typer.Option(None, "--location", help="Qdrant URL or folder (default: params)")
JSON_OUT = typer.Option(None, "--json-out", help="also write the metrics to this JSON file")


def train_retrieve(
    cases: Path = typer.Option(..., "--cases", help="LabeledCase JSONL (or folder) to index"),
    docs: Path = typer.Option(..., "--docs", help="KnowledgeDoc JSONL of help-centre articles"),
    out: Path = typer.Option(..., "--out", help="folder for stage.json, vectors and payloads"),
    val: Path | None = typer.Option(None, "--val", help="validation JSONL; else a seeded split"),
    data_version: str | None = typer.Option(
        None,
        "--data-version",
        help="dataset version (e.g. the DVC md5); default: a hash of the content",
    ),
    location: str | None = LOCATION,
    params_file: Path = PARAMS,
    mlflow: bool = MLFLOW,
) -> None:
    """Build the retrieval index (training cases + docs) and report recall@k / MRR on validation."""
    from flows.cli.train_launch import split_or_val, train_and_report
    from pipelines.data.contract import KnowledgeDoc, LabeledCase
    from pipelines.stages.base import StageInputs

    params = _params(params_file)
    split = split_or_val(
        params, _read(cases, LabeledCase), _read(val, LabeledCase) if val else None
    )
    inputs = StageInputs(
        docs=_read(docs, KnowledgeDoc),
        location=location or params.qdrant_location,
        data_version=data_version,
    )
    train_and_report(
        "retrieve", params, params.retrieve, split, out, inputs, mlflow=mlflow, console=console,
        table=metrics_table,
    )  # fmt: skip


def evaluate_retrieve(
    model: Path = typer.Option(
        ..., "--model", help="a folder written by `casepilot train retrieve`"
    ),
    cases: Path = typer.Option(..., "--cases", help="LabeledCase JSONL to evaluate on"),
    location: str | None = LOCATION,
    params_file: Path = PARAMS,
    mlflow: bool = MLFLOW,
    json_out: Path | None = JSON_OUT,
) -> None:
    """recall@k and MRR of a built index on labeled cases (searched within their topic)."""
    from pipelines.data.contract import LabeledCase
    from pipelines.registry.tracking import log_evaluation, mlflow_run
    from pipelines.stages import retrieve

    params = _params(params_file)
    index = retrieve.load(model, location=location)
    metrics = retrieve.evaluate(index, _read(cases, LabeledCase))
    console.print(metrics_table(f"retrieve {index.collection} on {cases.name}", metrics))
    _write_json(json_out, metrics)
    if mlflow:
        with mlflow_run(params, "casepilot-retrieve", "evaluate-retrieve"):
            log_evaluation(metrics, None, {"model_dir": str(model), "cases": str(cases)})


MODELS = typer.Option(..., "--models", help="folder with trigger/ topic/ retrieve/ answer/ tone/")


def evaluate_cascade(
    models: Path = MODELS,
    cases: Path = typer.Option(..., "--cases", help="LabeledCase JSONL (or folder) to evaluate on"),
    match_threshold: float | None = typer.Option(
        None, "--match-threshold", help="ROUGE-L F1 for a correct suggestion (default monitor's)"
    ),
    location: str | None = LOCATION,
    params_file: Path = PARAMS,
    mlflow: bool = MLFLOW,
    json_out: Path | None = JSON_OUT,
) -> None:
    """End to end: coverage, precision of emitted suggestions, abstain reasons, per-stage rates."""
    from pipelines.cascade import load_cascade_from_dirs
    from pipelines.data.contract import LabeledCase
    from pipelines.evaluate.cascade import evaluate_cascade as run_evaluation
    from pipelines.evaluate.cascade import log_to_mlflow

    params = _params(params_file)
    cascade = load_cascade_from_dirs(models, qdrant_location=location)
    threshold = params.monitor.match_threshold if match_threshold is None else match_threshold
    report = run_evaluation(
        cascade, _read(cases, LabeledCase), match_threshold=threshold, figures=mlflow
    )
    console.print(metrics_table(f"cascade on {cases.name}", report.metrics))
    reasons = Table(title="abstain reasons")
    reasons.add_column("reason")
    reasons.add_column("cases", justify="right")
    for reason, count in report.abstain_reasons.items():
        reasons.add_row(reason, str(count))
    console.print(reasons)
    _write_json(
        json_out,
        {
            "metrics": report.metrics,
            "abstain_reasons": report.abstain_reasons,
            "versions": cascade.versions,
        },
    )
    if mlflow:
        run_id = log_to_mlflow(
            report,
            params,
            logged={"models": str(models), "cases": str(cases), "versions": cascade.versions},
        )
        console.print(f"MLflow run {run_id} in experiment casepilot-cascade")


def _load_for_predict(params: Any, models: Path | None, alias: str, location: str | None) -> Any:
    """The cascade from a local folder (`--models`), else the registry's `alias` versions."""
    from pipelines.cascade import load_cascade_from_dirs
    from pipelines.registry.approval import UnapprovedChampion
    from pipelines.registry.resolve import load_cascade

    try:
        if models is not None:
            return load_cascade_from_dirs(models, qdrant_location=location)
        return load_cascade(params, alias, qdrant_location=location)
    except (LookupError, FileNotFoundError, UnapprovedChampion) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None


# How `predict` shows a stage the message passed, where the Suggestion says more than "pass"
_PASSED = {
    "topic": lambda s: f"[green]pass[/green]: {s.topic}",
    "tone": lambda s: (
        "[yellow]kept the draft[/yellow]"
        if s.scores.get("tone_kept_draft") == 1.0
        else "[green]rewrote[/green]"
    ),
}


def predict(
    message: str = typer.Argument(..., help="the customer message"),
    alias: str = typer.Option(
        "champion",
        "--alias",
        help="registry alias to answer from: champion, or challenger (falls back to champion)",
    ),
    models: Path | None = typer.Option(
        None, "--models", help="answer from a local folder with trigger/ topic/ … instead"
    ),
    context: list[str] = typer.Option(
        [], "--context", help="an earlier customer turn (repeatable)"
    ),
    location: str | None = LOCATION,
    params_file: Path = PARAMS,
) -> None:
    """Answer one message with the cascade (MLflow `champion` by default): each stage's decision."""
    from pipelines.data.contract import STAGES, Turn

    if alias not in ("champion", "challenger"):
        console.print(f"[red]--alias must be champion or challenger, got {alias!r}[/red]")
        raise typer.Exit(2)
    params = _params(params_file)
    cascade = _load_for_predict(params, models, alias, location)
    suggestion = cascade.suggest(message, tuple(Turn(role="customer", text=t) for t in context))
    source = str(models) if models is not None else f"MLflow @{alias}"
    table = Table(title=f"cascade decision ({source})")
    for column in ("stage", "decision", "scores", "version"):
        table.add_column(column)
    for stage in STAGES:
        scores = ", ".join(
            f"{k}={v:.3f}"
            for k, v in suggestion.scores.items()
            if k == stage or k.startswith(f"{stage}_")
        )
        if suggestion.stopped_at == stage:
            decision = f"[red]abstain[/red]: {suggestion.abstain_reason}"
        elif not scores:
            decision = "[dim]not reached[/dim]"
        else:
            decision = _PASSED.get(stage, lambda _: "[green]pass[/green]")(suggestion)
        table.add_row(stage, decision, scores, cascade.versions.get(stage, ""))
    console.print(table)
    if suggestion.text is None:
        console.print(f"[bold]No suggestion[/bold] ({suggestion.latency_ms:.0f} ms)")
    else:
        console.print(
            f"[bold]Suggestion[/bold] ({suggestion.source}, "
            f"{suggestion.latency_ms:.0f} ms):\n{suggestion.text}"
        )
