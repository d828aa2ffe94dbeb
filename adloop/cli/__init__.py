"""The ``adloop`` command line.

Each command group lives in its own module and imports heavy libraries (torch,
transformers, duckdb, the HTTP stack) inside the command body, so ``adloop --help``
and commands that need no language model start in well under a second.
"""

from __future__ import annotations

import typer

from adloop.cli import (
    bench,
    campaign,
    demo,
    events,
    generate,
    keys,
    models,
    retrain,
    scale,
    scorer,
    serve,
    sim,
    variants,
)

app = typer.Typer(
    name="adloop",
    help=(
        "Write ad copy with language models and learn from clicks and conversions which copy wins."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)

app.add_typer(campaign.app, name="campaign")
app.add_typer(variants.app, name="variants")
app.add_typer(events.app, name="events")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(sim.app, name="sim")
app.add_typer(bench.app, name="bench")
app.add_typer(scale.app, name="snapshots")
app.add_typer(scorer.app, name="scorer")
app.command("generate")(generate.generate)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("retrain")(retrain.retrain)
app.command("scheduler")(retrain.scheduler)
app.command("aggregate")(scale.aggregate)

__all__ = ["app", "main"]


def main() -> None:
    """Run the ``adloop`` command line."""
    app()
