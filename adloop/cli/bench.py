"""``adloop bench NAME``: run one benchmark suite from the repository's ``bench/`` folder.

Benchmarks are not part of the installed package: they live beside the source, so this
command works from a checkout (the folder holding ``bench/``, or the current directory).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from adloop.cli._common import fail

app = typer.Typer(
    help="Run benchmarks from a source checkout; each writes JSON and a markdown table.",
    no_args_is_help=True,
)

SUITES = ("storage", "bandits", "sim", "generate", "service", "retrain")


def _bench_root() -> Path | None:
    """The checkout holding ``bench/``: the current directory, or the one this package sits in."""
    for folder in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (folder / "bench" / "__init__.py").exists():
            return folder
    return None


def _make(name: str):
    def run(
        out: Path = typer.Option(
            Path("bench/results"), help="Folder for the JSON and markdown results."
        ),
        quick: bool = typer.Option(False, help="Smaller sizes, for a smoke run."),
    ) -> None:
        root = _bench_root()
        if root is None:
            fail(
                "benchmarks live in the source repository, not in the installed package: "
                "run `adloop bench` from a checkout of adloop (the folder that holds bench/)"
            )
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        module = importlib.import_module(f"bench.{name}")
        module.main(out=out, quick=quick)

    run.__doc__ = f"Run the {name} benchmark (see bench/{name}.py)."
    return run


for _name in SUITES:
    app.command(_name)(_make(_name))
