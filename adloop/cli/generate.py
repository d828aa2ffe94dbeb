"""``adloop generate``: write candidate ads for a brief and print them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from adloop.cli._common import fail, print_json


def generate(
    brief: Annotated[Path, typer.Option("--brief", help="Brief file (YAML or JSON).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of candidates wanted.")] = 8,
    generators: Annotated[
        str | None,
        typer.Option(
            "--generators",
            help="Comma-separated generators: template, lm, recombine, openai (a model behind an "
            "OpenAI-compatible server: set ADLOOP_OPENAI_BASE_URL, ADLOOP_OPENAI_MODEL and, if "
            "it checks keys, ADLOOP_OPENAI_API_KEY). Default: the brief's 'generators' mix, "
            "else all installed. A generator named here that cannot run, or fails, is an error.",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Language model directory (default: the installed SmolLM2)."),
    ] = None,
    winners: Annotated[
        Path | None,
        typer.Option(
            "--winners",
            help="JSON list of winning ads ({variant_id, headline, description}) to recombine.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same output.")] = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of candidates.")
    ] = False,
) -> None:
    """Generate candidate ads from a brief; notes and drop reasons go to stderr.

    Exits 1 with the reason when a generator named in ``--generators`` (or the brief's
    ``generators`` mix) cannot run (a missing model or package, e.g. ``pip install
    'adloop[lm]'``, an unset ``ADLOOP_OPENAI_BASE_URL``) or fails, or nothing passes.
    """
    from rich.console import Console
    from rich.markup import escape

    from adloop.cli._progress import CountProgress
    from adloop.generators import GeneratorError, GeneratorPool, load_brief

    console = Console(stderr=True)
    names = [name.strip() for name in (generators or "").split(",") if name.strip()]
    try:
        loaded = load_brief(brief)
        winner_rows = _read_winners(winners) if winners else []
        if names == ["lm"] and model is None:
            from adloop.generators import resolve_model

            resolve_model(None)  # only the LM was asked for: a missing model is an error
        pool = GeneratorPool(names or None, model_dir=model)
        with CountProgress("generating", n, "passed", enabled=not json_output) as bar:
            result = pool.generate(
                loaded, n, seed=seed, winners=winner_rows,
                progress=lambda done, total, what: bar(done, total, what),
            )  # fmt: skip
    except (GeneratorError, ValueError) as exc:
        fail(str(exc))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if result.drop_counts:
        summary = ", ".join(f"{reason} {count}" for reason, count in result.drop_counts.items())
        console.print(f"dropped {len(result.dropped)}: {summary}", soft_wrap=True)
    if not result.candidates:
        fail("no candidate passed the brief's filters (see the notes above)")
    if json_output:
        print_json([candidate.to_dict() for candidate in result.candidates])
    else:
        for index, candidate in enumerate(result.candidates, start=1):
            typer.echo(f"{index:>3}. [{candidate.generator}] {candidate.text}")


def _read_winners(path: Path) -> list[dict]:
    from adloop.generators import BriefError

    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BriefError("winners", f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BriefError("winners", f"{path} must hold a JSON list of objects")
    return rows
