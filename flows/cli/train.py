"""`casepilot train …` and `casepilot evaluate …`: one command per cascade stage."""

from __future__ import annotations

import typer

train_app = typer.Typer(help="Train a cascade stage on labeled cases.", no_args_is_help=True)
evaluate_app = typer.Typer(
    help="Evaluate a trained stage or the whole cascade.", no_args_is_help=True
)

from flows.cli.train_classifiers import evaluate_topic, evaluate_trigger, train_topic, train_trigger  # noqa: E402

train_app.command("trigger")(train_trigger)
train_app.command("topic")(train_topic)
evaluate_app.command("trigger")(evaluate_trigger)
evaluate_app.command("topic")(evaluate_topic)

from flows.cli.cascade import evaluate_cascade, evaluate_retrieve, train_retrieve  # noqa: E402

train_app.command("retrieve")(train_retrieve)
evaluate_app.command("retrieve")(evaluate_retrieve)
evaluate_app.command("cascade")(evaluate_cascade)

from flows.cli.train_generators import evaluate_answer, evaluate_tone, train_answer, train_tone  # noqa: E402

train_app.command("answer")(train_answer)
train_app.command("tone")(train_tone)
evaluate_app.command("answer")(evaluate_answer)
evaluate_app.command("tone")(evaluate_tone)
