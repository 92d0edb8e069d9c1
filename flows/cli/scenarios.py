"""`casepilot scenarios validate|generate|run|rates`: the written suite
(pipelines/evaluate/scenarios)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console()
scenarios_app = typer.Typer(
    help="Written scenarios (persona, situation, expectations) run through the cascade.",
    no_args_is_help=True,
)
PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")
SUITE = typer.Option(None, "--suite", help="scenario folder (default: register.scenario_suite)")


def _params(params_file: Path) -> Any:
    from flows.cli.main import params_or_exit

    return params_or_exit(params_file)


def _suite(params: Any, suite: Path | None) -> Any:
    from pipelines.data.synth.catalog import load_catalog
    from pipelines.evaluate.scenarios.gate import suite_folder
    from pipelines.evaluate.scenarios.schema import ScenarioError, load_suite

    folder = suite or suite_folder(params.register)
    if folder is None:
        console.print("[red]register.scenario_suite is null: pass --suite DIR[/red]")
        raise typer.Exit(2)
    try:
        return load_suite(folder, topics={t.name for t in load_catalog().all_topics})
    except ScenarioError as err:
        console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(2) from None


@scenarios_app.command("validate")
def validate(suite: Path | None = SUITE, params_file: Path = PARAMS) -> None:
    """Load and check every scenario file; print how many scenarios per file."""
    loaded = _suite(_params(params_file), suite)
    console.print(f"{len(loaded.scenarios)} scenarios, {len(loaded.personas)} personas: valid")


@scenarios_app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", help="JSONL file of the generated messages"),
    n: int = typer.Option(3, "--n", min=1, help="messages per scenario"),
    seed: int = typer.Option(0, "--seed", help="same seed, same messages"),
    suite: Path | None = SUITE,
    params_file: Path = PARAMS,
) -> None:
    """Expand each scenario into N seeded persona messages (deterministic, offline)."""
    from pipelines.evaluate.scenarios.generate import generate_suite

    messages = generate_suite(_suite(_params(params_file), suite), n, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(m.as_json(), ensure_ascii=False) for m in messages)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print(f"{len(messages)} messages written to {out}")


@scenarios_app.command("run")
def run(
    alias: str | None = typer.Option(None, "--alias", help="champion or challenger (registry)"),
    models: Path | None = typer.Option(None, "--models", help="a folder of stage folders instead"),
    out: Path = typer.Option(Path("scenario-report"), "--out", help="report folder (json + md)"),
    n: int | None = typer.Option(None, "--n", min=1, help="default: register.scenario_messages_…"),
    seed: int | None = typer.Option(None, "--seed", help="default: register.scenario_seed"),
    suite: Path | None = SUITE,
    params_file: Path = PARAMS,
) -> None:
    """Run the suite through the real cascade; write the report (--alias: also to MLflow)."""
    from pipelines.cascade import load_cascade_from_dirs
    from pipelines.evaluate.scenarios.runner import run_suite

    params = _params(params_file)
    if (alias is None) == (models is None) or alias not in (None, "champion", "challenger"):
        console.print("[red]pass exactly one of --alias champion|challenger or --models DIR[/red]")
        raise typer.Exit(2)
    loaded = _suite(params, suite)
    resolved = {}
    if models is not None:
        try:
            cascade = load_cascade_from_dirs(models, qdrant_location=":memory:")
        except FileNotFoundError as err:
            console.print(f"[red]{err}[/red]")
            raise typer.Exit(2) from None
    else:
        cascade, resolved = _registry_cascade(params, alias)
    cfg = params.register
    report = run_suite(
        cascade, loaded, per_scenario=n or cfg.scenario_messages_per_scenario,
        seed=cfg.scenario_seed if seed is None else seed, pii=params.data.pii,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.to_json(), encoding="utf-8")
    (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
    summary = report.summary()
    console.print(
        f"scenario failure rate {summary['failure_rate']:.1%} over {summary['messages']} messages "
        f"({summary['must_not_failed']} must-not failures); report: {out}/report.md"
    )
    if resolved:
        from pipelines.evaluate.scenarios.record import log_suite_run

        run_id = log_suite_run(params, alias, report, resolved)
        console.print(f"logged to MLflow run {run_id} and tagged on the {alias} versions")


def _registry_cascade(params: Any, alias: str) -> tuple[Any, dict]:
    from pipelines.cascade import Cascade
    from pipelines.registry.model import load_stage_folder
    from pipelines.registry.resolve import resolve_cascade_dirs

    try:
        resolved = resolve_cascade_dirs(params, alias)
    except LookupError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    stages = {
        s: load_stage_folder(s, r.local_dir, qdrant_location=":memory:")
        for s, r in resolved.items()
    }
    versions = {s: f"{r.name}/{r.version}" for s, r in resolved.items()}
    return Cascade(**stages, versions=versions), resolved


@scenarios_app.command("rates")
def rates(params_file: Path = PARAMS) -> None:
    """Per stage: the scenario failure rates the last registration recorded (champion, new)."""
    from pipelines.evaluate.scenarios.gate import scenario_rates

    found = scenario_rates(_params(params_file))
    for line in (r.line() for r in found.values()):
        console.print(line)
    if not found:
        console.print("no registered version carries a scenario gate record yet")
