"""`casepilot data weak-label`: label messages with LFs + kNN + Snorkel, print how well it went."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from pipelines.data.contract import ContractError, LabeledCase, read_jsonl, write_jsonl
from pipelines.data.weak.records import NOT_ANSWERABLE


def weak_label_command(
    gold: Path = typer.Option(..., "--gold", help="gold LabeledCase JSONL"),
    unlabeled: Path = typer.Option(
        ...,
        "--unlabeled",
        help="JSONL of messages (case_id, created_at, message, context, agent_reply)",
    ),
    taxonomy: Path | None = typer.Option(
        None, "--taxonomy", help="taxonomy.json with topics and macros (default: gold's topics)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL for the weakly labeled cases"),
    report_out: Path | None = typer.Option(None, "--report", help="also write the report as JSON"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
) -> None:
    """Weakly label messages and write them as LabeledCase (label_source "weak").

    casepilot data weak-label --gold gold.jsonl --unlabeled new.jsonl
    --taxonomy world/taxonomy.json --out weak.jsonl
    """
    from flows.cli.main import console, params_or_exit  # flows.cli.main imports this module's group
    from pipelines.data.weak import load_taxonomy, read_unlabeled, weak_label

    params = params_or_exit(params_file)
    try:
        gold_cases = read_jsonl(gold, LabeledCase)
        messages = read_unlabeled(unlabeled)
        known = load_taxonomy(taxonomy) if taxonomy else None
        with console.status("applying labeling functions and fitting the label model"):
            result = weak_label(gold_cases, messages, known, params.data.weak)
    except (ContractError, ValueError, FileNotFoundError) as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    from pipelines.data.redact import redact_cases

    # the messages came in raw; what is written is a batch like any other: PII redacted
    write_jsonl(redact_cases(result.cases, params.data.pii)[0], out)
    if report_out:
        report_out.write_text(
            json.dumps(result.report.as_dict(), indent=2) + "\n", encoding="utf-8"
        )
    console.print(_lf_table(result.report))
    report = result.report
    console.print(
        f"label model: labeled {report.labeled}/{report.unlabeled} "
        f"(coverage {report.coverage:.1%}, {report.all_abstained} with every LF abstaining); "
        f"held-out gold accuracy {_pct(report.holdout_accuracy)} "
        f"(majority vote {_pct(report.holdout_majority_accuracy)}) "
        f"on {report.holdout_coverage:.1%} of {report.holdout_cases} cases → {out}"
    )


def _lf_table(report) -> Table:  # noqa: ANN001 - WeakLabelReport
    table = Table(
        title="labeling functions",
        caption="cover/overlap/conflict: on the unlabeled set; gold: held-out gold slice",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("LF", no_wrap=True, min_width=22)
    for column in ("cover", "overlap", "conflict", "gold n", "gold acc"):
        table.add_column(column, justify="right", no_wrap=True, min_width=max(len(column), 6))
    table.add_column("votes", overflow="ellipsis", no_wrap=True)
    for lf in report.lfs:
        table.add_row(
            lf.name,
            f"{lf.coverage:.1%}",
            f"{lf.overlaps:.1%}",
            f"{lf.conflicts:.1%}",
            str(lf.holdout_votes),
            _pct(lf.holdout_accuracy),
            _classes(lf.polarity),
        )
    return table


def _classes(polarity: tuple[str, ...]) -> str:
    topics = [name for name in polarity if name != NOT_ANSWERABLE]
    parts = ([f"{len(topics)} topics"] if len(topics) > 1 else topics) + [
        "NA" for name in polarity if name == NOT_ANSWERABLE
    ]
    return "+".join(parts) or "—"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
