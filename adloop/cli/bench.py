"""``adloop bench NAME``: run one benchmark from the repository's ``bench/`` folder.

Benchmarks are not part of the installed package: they live beside the source, so this
command works from a checkout (the folder holding ``bench/``, or the current directory).
Suites take ``--quick`` and ``--out``; studies take their own options (``--help`` lists them).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import typer

from adloop.cli._common import fail

app = typer.Typer(
    help="Run benchmarks from a source checkout; each writes JSON and a markdown table.",
    no_args_is_help=True,
)

#: Suites: ``main(out, quick)`` in ``bench/<name>.py``.
SUITES = ("storage", "bandits", "regret", "sim", "generate", "service", "retrain", "hardening",
          "scale")  # fmt: skip
#: Studies with options of their own: command name -> module; ``cli(argv)`` in the module.
STUDIES = {
    "closed-loop": "closed_loop",
    "upworthy-pairs": "upworthy_pairs",
    "retrain-configs": "retrain_configs",
    "near-tie": "regret",
    "copy": "copy_quality",
    "scorer": "scorer",
}


def _bench_root() -> Path | None:
    """The checkout holding ``bench/``: the current directory, or the one this package sits in."""
    for folder in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (folder / "bench" / "__init__.py").exists():
            return folder
    return None


def _load(module: str) -> ModuleType:
    root = _bench_root()
    if root is None:
        fail(
            "benchmarks live in the source repository, not in the installed package: "
            "run `adloop bench` from a checkout of adloop (the folder that holds bench/)"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"bench.{module}")


def _suite(name: str):
    def run(
        out: Path = typer.Option(
            Path("bench/results"), help="Folder for the JSON and markdown results."
        ),
        quick: bool = typer.Option(False, help="Smaller sizes, for a smoke run."),
    ) -> None:
        _load(name).main(out=out, quick=quick)

    run.__doc__ = f"Run the {name} benchmark (bench/{name}.py)."
    return run


def _study(command: str, module: str):
    def run(context: typer.Context) -> None:
        _load(module).cli(list(context.args))

    run.__doc__ = f"Run bench/{module}.py with its own options (`adloop bench {command} --help`)."
    return run


for _name in SUITES:
    app.command(_name)(_suite(_name))
for _command, _module in STUDIES.items():
    app.command(
        _command,
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
        add_help_option=False,
    )(_study(_command, _module))
