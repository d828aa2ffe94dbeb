"""``adloop keys``: create API keys (shown once, stored hashed) for a tenant."""

from __future__ import annotations

from pathlib import Path

import typer

from adloop.cli._common import fail, print_json

app = typer.Typer(help="Manage API keys for the HTTP service.", no_args_is_help=True)


@app.command("create")
def create(
    tenant: str = typer.Option(..., help="Tenant the key is bound to (letters, digits, _ . -)."),
    db: Path = typer.Option(..., help="The DuckDB file of the deployment."),
    admin: bool = typer.Option(False, help="An admin key may also create keys over the API."),
    json_output: bool = typer.Option(False, "--json", help='Print {"tenant", "api_key"} as JSON.'),
) -> None:
    """Create an API key for TENANT and print it once (only its SHA-256 hash is stored)."""
    from adloop.optimizer.auth import create_key
    from adloop.optimizer.errors import InvalidRequest
    from adloop.storage import StorageError, Store

    try:
        with Store(db) as store:
            key = create_key(store, tenant=tenant, admin=admin)
    except InvalidRequest as exc:
        fail(str(exc))
    except StorageError as exc:
        fail(str(exc))
    if json_output:
        print_json({"tenant": tenant, "api_key": key, "admin": admin})
        return
    typer.echo(key)
    typer.secho(
        f"API key for tenant {tenant!r}{' (admin)' if admin else ''}: store it now, "
        "it is not shown again.",
        err=True,
    )
