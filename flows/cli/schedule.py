"""`casepilot schedule`: register the lifecycle deployments, schedules and drift automation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pipelines.config import ScheduleConfig

console = Console()


def schedule(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
    api_url: str | None = typer.Option(
        None, "--api-url", help="Prefect API URL (default: schedule.prefect_api_url)"
    ),
) -> None:
    """Create the process work pool, the retrain/monitor/promote/rollback deployments with their
    schedules (crons, or intervals where params.yaml sets them; promote polls every
    `schedule.promote_poll_seconds`), and the automation that retrains on a drift-breach event."""
    from flows.cli.main import params_or_exit

    params = params_or_exit(params_file)
    if api_url:
        schedule_cfg = params.schedule.model_copy(update={"prefect_api_url": api_url})
        params = params.model_copy(update={"schedule": schedule_cfg})
    import httpx

    from flows.lifecycle.deploy import register_deployments

    try:
        names = register_deployments(params, params_file)
    except RuntimeError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    except httpx.HTTPError as err:
        console.print(
            f"[red]Prefect API {params.schedule.prefect_api_url or '(PREFECT_API_URL)'} did not "
            f"answer ({err!r}); start it (`casepilot up`) or fix schedule.prefect_api_url[/red]"
        )
        raise typer.Exit(1) from None
    for line in _registered(params.schedule, names):
        console.print(line)


def _registered(cfg: ScheduleConfig, names: list[str]) -> list[str]:
    """What `casepilot schedule` registered: the pool, the deployments, when each flow runs."""
    lines = [f"work pool {cfg.work_pool} (process) on {cfg.prefect_api_url or 'PREFECT_API_URL'}"]
    lines += [f"  registered {name}" for name in names]
    retrain = (
        f"every {cfg.retrain_interval_seconds} s"
        if cfg.retrain_interval_seconds
        else cfg.retrain_cron
    )
    monitor = (
        f"every {cfg.monitor_interval_seconds} s"
        if cfg.monitor_interval_seconds
        else cfg.monitor_cron
    )
    lines.append(
        f"retrain: {retrain}, monitor: {monitor}, promote: every {cfg.promote_poll_seconds} s "
        f"({cfg.timezone}); start a worker: prefect worker start --pool {cfg.work_pool} "
        "--type process"
    )
    return lines
