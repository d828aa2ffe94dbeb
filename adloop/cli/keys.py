"""``adloop keys``: create, list and revoke API keys (shown once, stored hashed).

Each command works on the database file (``--db``) while the service is stopped, or through
a running service (``--url`` with an admin ``--api-key``): DuckDB lets one process open a
file, so while ``adloop serve`` runs, the service is the way in. A revocation made through
the service takes effect at once; one made in the file is seen by the next ``adloop serve``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from adloop.cli._common import fail, print_json

app = typer.Typer(help="Manage API keys for the HTTP service.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

_DB_HELP = (
    "The deployment's store: a DuckDB file path or duckdb:///abs/path (while the service is "
    "stopped), or postgresql://user@host:port/db (at any time)."
)
_URL_HELP = "A running service, e.g. http://127.0.0.1:8000 (instead of --db)."
_KEY_HELP = "An admin key of that service (with --url)."


def _expiry(text: str) -> datetime:
    """``--expires``: a duration from now (``30d``, ``12h``, ``90m``, ``3600s``, ``2w``) or
    an ISO 8601 time (UTC when it has no offset)."""
    match = _DURATION.match(text.strip())
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return datetime.now(UTC) + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--expires: expected a duration like 30d, 12h, 90m or an ISO time, got {text!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _where(db: str | None, url: str | None, api_key: str | None) -> None:
    if (db is None) == (url is None):
        fail("give exactly one of --db (service stopped) or --url (service running)")
    if url is not None and not api_key:
        fail("--url needs --api-key: an admin key of that service")


def _call(url: str, api_key: str, method: str, path: str, body: Any = None) -> Any:
    """One request to the service; its JSON answer, or ``fail`` with its error message."""
    request = urllib.request.Request(
        url.rstrip("/") + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        fail(f"{method} {path}: {exc.code} {message}")
    except urllib.error.URLError as exc:
        fail(f"cannot reach {url}: {exc.reason}")


@app.command("create")
def create(
    tenant: str = typer.Option(..., help="Tenant the key is bound to (letters, digits, _ . -)."),
    db: str | None = typer.Option(None, help=_DB_HELP),
    url: str | None = typer.Option(None, help=_URL_HELP),
    api_key: str | None = typer.Option(None, help=_KEY_HELP, envvar="ADLOOP_API_KEY"),
    admin: bool = typer.Option(
        False, help="An admin key can create, list and revoke keys of every tenant."
    ),
    expires: str | None = typer.Option(
        None, help="The key stops working after this: 30d, 12h, 90m, or an ISO time."
    ),
    json_output: bool = typer.Option(False, "--json", help='Print {"tenant", "api_key"} as JSON.'),
) -> None:
    """Create an API key for TENANT and print it once (only its SHA-256 hash is stored)."""
    from adloop.optimizer.auth import create_key, key_id
    from adloop.optimizer.errors import InvalidRequest
    from adloop.storage import StorageError, open_store

    _where(db, url, api_key)
    expires_at = None if expires is None else _expiry(expires)
    if url is not None:
        body: dict[str, Any] = {"tenant": tenant, "admin": admin}
        if expires_at is not None:
            seconds = (expires_at - datetime.now(UTC)).total_seconds()
            body["expires_in_seconds"] = max(1, round(seconds))
        made = _call(url, api_key or "", "POST", "/v1/keys", body)
        key, expires_text = made["api_key"], made.get("expires_at")
    else:
        try:
            with open_store(db) as store:  # type: ignore[arg-type]
                key = create_key(store, tenant=tenant, admin=admin, expires_at=expires_at)
        except (InvalidRequest, StorageError) as exc:
            fail(str(exc))
        expires_text = None if expires_at is None else expires_at.isoformat()
    if json_output:
        print_json(
            {
                "tenant": tenant,
                "api_key": key,
                "admin": admin,
                "key_id": key_id(key),
                "expires_at": expires_text,
            }
        )
        return
    typer.echo(key)
    typer.secho(
        f"API key {key_id(key)} for tenant {tenant!r}{' (admin)' if admin else ''}"
        f"{f', expires {expires_text}' if expires_text else ''}: store it now, "
        "it is not shown again.",
        err=True,
    )


@app.command("list")
def list_keys(
    db: str | None = typer.Option(None, help=_DB_HELP),
    url: str | None = typer.Option(None, help=_URL_HELP),
    api_key: str | None = typer.Option(None, help=_KEY_HELP, envvar="ADLOOP_API_KEY"),
    tenant: str | None = typer.Option(None, help="Only this tenant's keys."),
    json_output: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """List stored keys by id (never the keys themselves): tenant, admin, expiry, revocation."""
    from adloop.storage import StorageError, open_store

    _where(db, url, api_key)
    if url is not None:
        query = "" if tenant is None else f"?tenant={urllib.request.quote(tenant)}"
        rows = _call(url, api_key or "", "GET", f"/v1/keys{query}")["keys"]
    else:
        try:
            with open_store(db) as store:  # type: ignore[arg-type]
                rows = store.api_keys(tenant)
        except StorageError as exc:
            fail(str(exc))
    if json_output:
        print_json(rows)
        return
    for row in rows:
        state = "revoked" if row.get("revoked_at") else "active"
        expiry = f" expires {row['expires_at']}" if row.get("expires_at") else ""
        role = " admin" if row.get("admin") else ""
        typer.echo(f"{row['key_id']}  {row['tenant']}{role}  {state}{expiry}")


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key's id, as 'adloop keys list' shows it."),
    db: str | None = typer.Option(None, help=_DB_HELP),
    url: str | None = typer.Option(None, help=_URL_HELP),
    api_key: str | None = typer.Option(None, help=_KEY_HELP, envvar="ADLOOP_API_KEY"),
) -> None:
    """Revoke a key: through a running service it stops working at once."""
    from adloop.storage import StorageError, open_store

    _where(db, url, api_key)
    if url is not None:
        row = _call(url, api_key or "", "DELETE", f"/v1/keys/{urllib.request.quote(key_id)}")
    else:
        try:
            with open_store(db) as store:  # type: ignore[arg-type]
                row = store.revoke_api_key(key_id)
        except StorageError as exc:
            fail(str(exc))
    typer.secho(f"revoked {row['key_id']} (tenant {row['tenant']!r})", err=True)
