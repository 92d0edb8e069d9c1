"""`casepilot pii scan`: PII left on disk under CASEPILOT_HOME (thin over
pipelines.data.pii.scan)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

pii_app = typer.Typer(help="PII on disk: scan the home for it.", no_args_is_help=True)
console = Console()


@pii_app.command("scan")
def scan(
    home: Path | None = typer.Option(
        None, "--home", help="the folder to scan (default: $CASEPILOT_HOME)"
    ),
    world: list[Path] = typer.Option(
        [],
        "--world",
        help="a synthetic world's manifest.json whose planted values to look for "
        "(default: every world/manifest.json under the home)",
    ),
    max_mb: int = typer.Option(256, "--max-mb", help="files larger than this are listed, not read"),
) -> None:
    """Report planted and detected PII (cards, IBANs, e-mails, phones) outside quarantine.

    Exit code 0 when nothing is found, 1 when anything is, 2 when the arguments are wrong.
    """
    from pipelines.data.pii.scan import scan_home
    from pipelines.data.pii.world_planted import ManifestError, find_manifests, planted_values
    from pipelines.home import Home

    root = (home or Home.from_env().root).expanduser().resolve()
    if not root.is_dir():
        console.print(f"[red]{root} is not a folder: pass --home DIR or set CASEPILOT_HOME[/red]")
        raise typer.Exit(2)
    manifests = world or find_manifests(root)
    try:
        planted = [value for manifest in manifests for value in planted_values(manifest)]
    except ManifestError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    report = scan_home(root, planted=planted, max_bytes=max_mb * 1024 * 1024)
    _print(report, manifests)
    if not report.clean:
        raise typer.Exit(1)


def _print(report, manifests: list[Path]) -> None:  # noqa: ANN001 - pipelines.data.pii.scan.ScanReport
    sources = ", ".join(str(m) for m in manifests) or "no world manifest found"
    console.print(f"scanned {report.files} files under {report.root} (quarantine folders skipped)")
    console.print(f"planted values looked for: {report.planted_known} ({sources})")
    if report.findings:
        table = Table(Column("file", overflow="fold"), "part", "kind", "planted/detected", "count")
        for f in report.findings:
            table.add_row(
                f.path, f.part, f.kind, "planted" if f.planted else "detected", str(f.count)
            )
        console.print(table)
    for path, reason in report.skipped:
        console.print(f"[yellow]not scanned: {path}: {reason}[/yellow]")
    verdict = "[green]clean[/green]" if report.clean else "[red]PII found[/red]"
    console.print(
        f"{verdict}: {report.planted_found} planted value(s), {report.detected} detected item(s)"
    )
