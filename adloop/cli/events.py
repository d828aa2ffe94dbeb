"""``adloop events``: load event files into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adloop.cli._common import DB_HELP, fail, open_store, print_json

app = typer.Typer(
    help="Load ad events (impressions, clicks, conversions) into the store.", no_args_is_help=True
)

#: At most this many per-row errors are printed; the counts are always exact.
MAX_ERRORS_SHOWN = 100


@app.command("import")
def import_events(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, Parquet or NDJSON with event_id, type, campaign_id, variant_id, ts "
            "[, decision_id, segment, value]."
        ),
    ],
    db: Annotated[str, typer.Option("--db", help=DB_HELP)],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Import an events file into the store; event_ids already stored count as duplicates.

    Bad rows are reported by row (0-based, header excluded) and field; the rest still lands.
    Exits non-zero only when the file cannot be read at all or the database cannot be opened.
    """
    from adloop.storage import StorageError, read_events_file

    try:
        table = read_events_file(file)
    except StorageError as error:
        fail(str(error))
    try:
        with open_store(db) as store:
            result = store.append_events(table, max_errors=MAX_ERRORS_SHOWN, source="file")
    except StorageError as error:
        fail(str(error))
    if json_output:
        print_json(result.to_dict())
        return
    typer.echo(
        f"{file}: {result.accepted} accepted, {result.duplicates} duplicates, "
        f"{result.rejected} rejected"
    )
    for error in result.errors:
        typer.echo(f"  row {error.row}: {error.field}: {error.reason}", err=True)
    if result.rejected > len(result.errors):
        typer.echo(f"  ... and {result.rejected - len(result.errors)} more rejected rows", err=True)
