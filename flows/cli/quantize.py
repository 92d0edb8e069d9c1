"""`casepilot quantize STAGE`: measure the precisions of a trained stage, keep the gated best."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _read(path: Path, kind: type) -> list:
    from pipelines.data.contract import read_jsonl

    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        console.print(
            f"[red]{path} not found: pass a JSONL file (or folder) of {kind.__name__}[/red]"
        )
        raise typer.Exit(2)
    return [record for f in files for record in read_jsonl(f, kind)]


def _table(report) -> Table:
    table = Table(title=f"{report.stage}: {report.key_metric} and latency per candidate")
    for column in ("method", report.key_metric, "drop", "ms/example", "speed-up", "MB", "gate"):
        table.add_column(column, justify="left" if column in ("method", "gate") else "right")
    for c, v in zip(report.candidates, report.verdicts, strict=True):
        table.add_row(
            c.method + (" ✓" if c.method == report.chosen else ""),
            f"{c.metric:.4f}", f"{v.metric_drop:+.4f}", f"{c.latency_ms:.2f}",
            f"{v.speedup:.2f}×", f"{c.disk_bytes / 1e6:.1f}", "pass" if v.passed else "fail",
        )  # fmt: skip
    return table


def quantize(
    stage: str = typer.Argument(..., help="a stage: trigger, topic, retrieve, answer or tone"),
    model: Path = typer.Option(..., "--model", help="the fp32 folder `casepilot train` wrote"),
    val: Path = typer.Option(..., "--val", help="validation LabeledCase JSONL (or a folder)"),
    out: Path = typer.Option(..., "--out", help="folder for the chosen variant + quantize.json"),
    docs: Path | None = typer.Option(
        None, "--docs", help="answer: KnowledgeDoc JSONL for the prompt context"
    ),
    pool: Path | None = typer.Option(
        None, "--pool", help="answer: cases whose replies stand in for retrieval (train set)"
    ),
    method: str | None = typer.Option(
        None, "--method", help="override quantize.method (auto, none, bf16, …, onnx_int8, gptq)"
    ),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="log to MLflow"),
) -> None:
    """Quantize a trained stage: each candidate's metric, size and latency; gate; keep the best."""
    from flows.cli.main import params_or_exit
    from pipelines.config import QuantizeConfig
    from pipelines.data.contract import KnowledgeDoc, LabeledCase
    from pipelines.quantize.onnx_runtime import OnnxRuntimeMissing
    from pipelines.quantize.report import log_report
    from pipelines.quantize.run import quantize_stage

    params = params_or_exit(params_file)
    cfg = params.quantize
    try:
        if method:
            cfg = QuantizeConfig.model_validate({**cfg.model_dump(), "method": method})
        report = quantize_stage(
            cfg, stage, model, _read(val, LabeledCase), out,
            docs=_read(docs, KnowledgeDoc) if docs else (),
            pool=_read(pool, LabeledCase) if pool else None,
            log=lambda line: console.print(f"[dim]{line}[/dim]"),
        )  # fmt: skip
    # pydantic's ValidationError is a ValueError; OnnxRuntimeMissing names `make install`
    except (FileNotFoundError, ValueError, OnnxRuntimeMissing) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    console.print(_table(report))
    console.print(f"[green]{stage}: chose {report.chosen} — {report.reason}[/green]")
    console.print(f"saved to {out} (quantize.json lists every candidate)")
    if mlflow:
        run_id = log_report(params, report, out)
        console.print(f"MLflow run {run_id} in experiment casepilot-{stage}")
