"""``adloop bench NAME``: run one benchmark suite from ``bench/``."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

app = typer.Typer(
    help="Run benchmarks; each writes JSON and a markdown table.", no_args_is_help=True
)

SUITES = ("storage", "bandits", "sim", "generate", "service", "retrain")


def _make(name: str):
    def run(
        out: Path = typer.Option(
            Path("bench/results"), help="Folder for the JSON and markdown results."
        ),
        quick: bool = typer.Option(False, help="Smaller sizes, for a smoke run."),
    ) -> None:
        module = importlib.import_module(f"bench.{name}")
        module.main(out=out, quick=quick)

    run.__doc__ = f"Run the {name} benchmark (see bench/{name}.py)."
    return run


for _name in SUITES:
    app.command(_name)(_make(_name))
