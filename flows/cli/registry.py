"""`casepilot register`, `promote`, `rollback` and `casepilot mlflow-server start|stop|status`."""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
mlflow_server_app = typer.Typer(
    help="A local `mlflow server` on 127.0.0.1 over the embedded store.", no_args_is_help=True
)


def _params(params_file: Path) -> Any:
    from flows.cli.main import params_or_exit

    return params_or_exit(params_file)


def _read_metrics(metrics: Path | None, model: Path) -> dict[str, Any]:
    """Metrics from a JSON file (flat, or under 'metrics'); else stage.json's val_ metrics."""
    if metrics is not None:
        if not metrics.is_file():
            console.print(
                f"[red]{metrics} not found: pass the metrics JSON the evaluation wrote[/red]"
            )
            raise typer.Exit(2)
        values = json.loads(metrics.read_text(encoding="utf-8"))
        return values.get("metrics", values) if isinstance(values, dict) else {}
    stage_file = model / "stage.json"
    saved = (
        json.loads(stage_file.read_text(encoding="utf-8")).get("metrics", {})
        if stage_file.is_file()
        else {}
    )
    return {key.removeprefix("val_"): value for key, value in saved.items()}


def register(
    stage: str = typer.Argument(..., help="trigger, topic, retrieve, answer or tone"),
    model: Path = typer.Option(..., "--model", help="the stage folder `casepilot train` wrote"),
    metrics: Path | None = typer.Option(
        None, "--metrics", help="offline metrics JSON; default: the val_ metrics in stage.json"
    ),
    data_version: str | None = typer.Option(
        None, "--data-version", help="DVC hash of the training data; default: from dvc.lock"
    ),
    quantization: str | None = typer.Option(
        None, "--quantization", help="default: what stage.json records, else 'none'"
    ),
    record: Path | None = typer.Option(
        None, "--record", help="also write the registered version as JSON (a dvc stage output)"
    ),
    params_file: Path = PARAMS,
) -> None:
    """Register a trained stage in MLflow with its lineage; `challenger` if it passes the gates."""
    from pipelines.registry.lineage import UNKNOWN, dvc_data_version, stage_lineage
    from pipelines.registry.register import register_stage

    params = _params(params_file)
    values = _read_metrics(metrics, model)
    lock = Path("dvc.lock")  # the workspace's, where `dvc repro` runs this stage
    lineage = stage_lineage(
        params,
        stage,
        data_version=data_version or dvc_data_version(lock) or UNKNOWN,
        model_dir=model,
        quantization=quantization,
    )
    try:
        registered = register_stage(
            params, stage, model, metrics=values, lineage=lineage,
            lock_file=lock if lock.is_file() else None,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        payload = {**asdict(registered), "tracking_uri": params.mlflow_tracking_uri,
                   "model_dir": str(model.resolve()), "lineage": lineage.tags()}  # fmt: skip
        record.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    table = Table(title=f"{registered.name} v{registered.version}")
    table.add_column("field")
    table.add_column("value")
    for key, value in lineage.tags().items():
        table.add_row(key, value)
    gate = (
        "[green]passed[/green]"
        if registered.gate.passed
        else "[red]failed[/red]: " + "; ".join(registered.gate.reasons)
    )
    table.add_row("gate", gate)
    table.add_row("aliases", ", ".join(registered.aliases) or "(none)")
    console.print(table)


def promote(
    bootstrap: bool = typer.Option(
        False, "--bootstrap", help="first champion for every stage without one"
    ),
    stage: list[str] = typer.Option([], "--stage", help="stage(s) to act on (default: all)"),
    yes: bool = typer.Option(False, "--yes", help="do it without asking"),
    by: str | None = typer.Option(
        None, "--by", help="--bootstrap only: who sets the first champion (default: OS user)"
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="--bootstrap only: accept a version that failed its offline gates "
        "(recorded as forced in the audit)",
    ),
    params_file: Path = PARAMS,
) -> None:
    """Move `champion`: `--bootstrap` sets a first one; otherwise approved challengers move.

    A challenger moves only with a promotion request and a signed approval by a reviewer who
    neither requested nor promotes (`casepilot approve`; README: "Promotion and approval").
    `--bootstrap` refuses a version that failed its offline gates unless `--force`.
    """
    from pipelines.data.contract import STAGES
    from pipelines.registry.promote import promote_stages
    from pipelines.registry.store import stages_with_challenger

    params = _params(params_file)
    _check_promote_flags(bootstrap, by=by, force=force)
    stages = tuple(stage) or (STAGES if bootstrap else stages_with_challenger(params))
    if not stages:
        console.print("no stage has a challenger: nothing to promote")
        return
    action = "bootstrap a first champion for" if bootstrap else "promote the challenger of"
    if not yes and not typer.confirm(f"{action} {', '.join(stages)}?"):
        raise typer.Exit(1)
    if bootstrap:
        outcomes, refusals = _bootstrap_or_exit(params, stages, by=by, force=force), []
    else:
        outcomes, refusals = promote_stages(params, stages)
    _show_champions(outcomes, bootstrap=bootstrap)
    for refusal in refusals:
        console.print(f"[red]{refusal}[/red]")
    if refusals:
        raise typer.Exit(1)


def _check_promote_flags(bootstrap: bool, *, by: str | None, force: bool) -> None:
    """Exit 2 when --by or --force is given without --bootstrap (a promotion needs a reviewer)."""
    if by is not None and not bootstrap:
        console.print(
            "[red]--by only names who bootstraps a first champion. A promotion's approver is "
            "the reviewer who ran `casepilot approve STAGE --version N` signed in as themselves "
            "(README: 'Promotion and approval'); drop --by[/red]"
        )
        raise typer.Exit(2)
    if force and not bootstrap:
        console.print(
            "[red]--force only applies to --bootstrap (a first champion past failed gates); a "
            "promotion always needs a reviewer's approval: drop --force[/red]"
        )
        raise typer.Exit(2)


def _bootstrap_or_exit(
    params: Any, stages: tuple[str, ...], *, by: str | None, force: bool
) -> list[Any]:
    """`bootstrap_champion`'s outcomes; exit 1 with its refusal (a failed offline gate)."""
    from pipelines.registry.approval import PromotionRefused
    from pipelines.registry.bootstrap import bootstrap_champion

    try:
        return bootstrap_champion(params, by=by or getpass.getuser(), stages=stages, force=force)
    except PromotionRefused as err:
        console.print(f"[red]{err}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None


def _show_champions(outcomes: list[Any], *, bootstrap: bool) -> None:
    """The champion table, and a warning for every champion forced past its gates."""
    table = Table(title="champion" + (" (bootstrap)" if bootstrap else ""))
    for column in ("stage", "model", "champion", "previous", "approved by", "note"):
        table.add_column(column)
    for o in outcomes:
        approver = "bootstrap" if bootstrap and not o.skipped else o.approved_by or "-"
        note = o.skipped or ("moved, forced" if o.forced else "moved")
        table.add_row(o.stage, o.name, o.version or "-", o.previous or "-", approver, note)
    if outcomes:
        console.print(table)
    for o in outcomes:
        if o.forced:
            console.print(f"[yellow]{o.stage} v{o.version}: champion forced past failed offline "
                          "gates (recorded in the audit run)[/yellow]", soft_wrap=True)  # fmt: skip


def rollback(
    stage: str = typer.Argument(..., help="trigger, topic, retrieve, answer or tone"),
    reason: str = typer.Option(..., "--reason", help="why: recorded in MLflow and in the page"),
    yes: bool = typer.Option(False, "--yes", help="do it without asking"),
    params_file: Path = PARAMS,
) -> None:
    """Move `champion` back to `previous-champion`, record the audit trail and page on-call."""
    from pipelines.registry.rollback import rollback_champion

    params = _params(params_file)
    if not yes and not typer.confirm(f"roll back the champion of {stage}?"):
        raise typer.Exit(1)
    try:
        done = rollback_champion(params, stage, reason)
    except (LookupError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{done.name}: champion v{done.from_version} -> v{done.to_version} "
        f"(audit run {done.audit_run_id}); page {done.page.status}: {done.page.reason}"
    )
    from flows.lifecycle.promote import reload_service

    served = reload_service(params)  # the running service serves the restored champion now
    console.print(f"service reload: {served['status']} {served.get('reason', '')}".rstrip())


@mlflow_server_app.command("start")
def server_start(
    port: int | None = typer.Option(None, "--port", help="default: register.server_port"),
    params_file: Path = PARAMS,
) -> None:
    """Start `mlflow server` on 127.0.0.1 (same store as the embedded default) and wait for it."""
    from flows.platform.services import start_mlflow_server

    params = _params(params_file)
    try:
        info = start_mlflow_server(params, port=port)
    except (RuntimeError, ValueError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    console.print(f"mlflow server {info.url} (pid {info.pid}, log {info.log})")
    console.print(f"use it: export CASEPILOT_MLFLOW_TRACKING_URI={info.url}")


@mlflow_server_app.command("stop")
def server_stop(params_file: Path = PARAMS) -> None:
    """Stop the local `mlflow server` and all its worker processes."""
    from flows.platform.services import stop_mlflow_server

    stopped = stop_mlflow_server(_params(params_file))
    console.print("stopped mlflow server" if stopped else "no mlflow server was running")


@mlflow_server_app.command("status")
def server_status(params_file: Path = PARAMS) -> None:
    """Show whether the local `mlflow server` runs and answers `/health`."""
    from flows.platform.services import healthy, read_server

    info = read_server(_params(params_file))
    if info is None:
        console.print("mlflow server: not running")
        raise typer.Exit(1)
    state = "healthy" if healthy(info.url) else "[red]not answering /health[/red]"
    console.print(
        f"mlflow server {info.url}: {state} (pid {info.pid}, store {info.backend_store_uri})"
    )
