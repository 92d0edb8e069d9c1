"""`casepilot data …`: make, import and inspect labeled data."""

from __future__ import annotations

import typer

from flows.cli.importers import import_data
from flows.cli.intake import intake, quarantine_app
from flows.cli.split import split
from flows.cli.synth import synth
from flows.cli.weak import weak_label_command

data_app = typer.Typer(help="Labeled data: synthesize, import, inspect.", no_args_is_help=True)

data_app.command("import")(import_data)
data_app.command("synth")(synth)
data_app.command("intake")(intake)
data_app.command("split")(split)
data_app.add_typer(quarantine_app, name="quarantine")
data_app.command("weak-label")(weak_label_command)
