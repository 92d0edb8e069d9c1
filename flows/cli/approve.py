"""`casepilot approve STAGE --version N`: a reviewer approves a promotion request.

The reviewer signs in as themselves with MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD; the
approval is a run in their ledger (pipelines/registry/approval_ledger.py), so the promote step
knows who approved from the server, not from what anyone typed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
EVIDENCE_ROWS = (
    ("requested by", "casepilot.promotion_requested_by"),
    ("requested at", "casepilot.promotion_requested_at"),
    ("shadow cases", "casepilot.evidence.cases"),
    ("challenger match rate", "casepilot.evidence.challenger_match_rate"),
    ("champion match rate", "casepilot.evidence.champion_match_rate"),
    ("McNemar p", "casepilot.evidence.p_value"),
    ("evidence SHA-256", "casepilot.evidence_sha256"),
    ("MLflow page", "casepilot.promotion_link"),
)


def _evidence_table(params: Any, stage: str, version: str) -> Table:
    """What the reviewer approves: the request's evidence as the version's tags show it."""
    from pipelines.registry.register import registered_model_name, registry_client

    name = registered_model_name(params.register, stage)
    tags = registry_client(params).get_model_version(name, version).tags or {}
    table = Table(title=f"promotion request: {name} v{version}")
    table.add_column("evidence")
    table.add_column("value")
    for label, key in EVIDENCE_ROWS:
        table.add_row(label, tags.get(key, "-"))
    for key in sorted(k for k in tags if k.startswith("casepilot.evidence.stage_delta.")):
        table.add_row(f"delta {key.rsplit('.', 1)[-1]}", tags[key])
    return table


def approve(
    stage: str = typer.Argument(..., help="trigger, topic, retrieve, answer or tone"),
    version: str = typer.Option(
        ..., "--version", help="the model version whose request you approve"
    ),
    reviewer: str | None = typer.Option(
        None, "--reviewer", help="only without a sign-in server: who approves (default: OS user)"
    ),
    yes: bool = typer.Option(False, "--yes", help="approve without asking"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Approve the promotion request of STAGE version N, signed in as yourself.

    Set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD to your MLflow reviewer account when
    `casepilot up` runs MLflow with sign-in. Shows the evidence first (README: "Promotion and
    approval").
    """
    import getpass

    from flows.cli.main import params_or_exit
    from pipelines.registry.approval import PromotionRefused, approve_request
    from pipelines.registry.approval_ledger import USERNAME_ENV, authenticated_user
    from pipelines.registry.tracking import client_tracking_uri, running_auth_server

    params = params_or_exit(params_file)
    server = running_auth_server(params)
    if server and not os.environ.get(USERNAME_ENV):
        console.print(
            f"[red]the MLflow server {server} signs users in: set {USERNAME_ENV} and "
            "MLFLOW_TRACKING_PASSWORD to your reviewer account (never the promoter's)[/red]"
        )
        raise typer.Exit(2)
    try:
        console.print(_evidence_table(params, stage, version))
        if not yes and not typer.confirm(f"approve promoting {stage} version {version}?"):
            raise typer.Exit(1)
        signed = authenticated_user(client_tracking_uri(params))
        approval = approve_request(
            params, stage, version, reviewer=None if signed else reviewer or getpass.getuser()
        )
    except (PromotionRefused, PermissionError, LookupError, ValueError) as err:
        console.print(f"[red]{err}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(
        f"approved by {approval.by} ({approval.store}); requested by {approval.requested_by}; "
        f"approval run {approval.run_id}. `casepilot promote --stage {stage}` can now run."
    )
