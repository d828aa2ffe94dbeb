"""``adloop models``: placeholder until its issue lands."""

from __future__ import annotations

import typer

app = typer.Typer(help="models commands.", no_args_is_help=True)


# ---------------------------------------------------------------------------- rollback
# (model versions are written and promoted by retraining: see optimizer/retrain.py)
import pathlib as _pathlib  # noqa: E402


@app.command("rollback")
def rollback(
    db: _pathlib.Path = typer.Option(..., "--db", help="The DuckDB file of the deployment."),
    json_output: bool = typer.Option(False, "--json", help="Print the restored version as JSON."),
) -> None:
    """Restore the model version that was promoted before the current one."""
    from optimizer.cli._common import fail, print_json
    from storage import StorageError, Store

    try:
        store = Store(db)
    except StorageError as exc:
        fail(str(exc))
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
        print_json({"rolled_back": current["version"], "current": restored["version"],
                    "path": restored["path"]})  # fmt: skip
    else:
        typer.echo(f"rolled back {current['version']} -> {restored['version']} ({restored['path']})")
