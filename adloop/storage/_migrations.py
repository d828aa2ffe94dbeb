"""Bringing a database file up to the latest schema, and its event keys up to this DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb

from adloop.storage._fields import utc_now
from adloop.storage._keys import EVENT_KEY_SQL
from adloop.storage.errors import SchemaError
from adloop.storage.schema import LATEST_VERSION, MIGRATIONS


def migrate(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Apply each migration newer than the file's schema version, one transaction each."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER NOT NULL, description VARCHAR, applied_at TIMESTAMP NOT NULL)"
    )
    (current,) = connection.execute(
        "SELECT coalesce(max(version), 0) FROM schema_version"
    ).fetchall()[0]
    if current > LATEST_VERSION:
        raise SchemaError(
            f"{path} has schema version {current}, newer than this adloop understands "
            f"({LATEST_VERSION}); upgrade adloop to open it"
        )
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        try:
            connection.execute("BEGIN TRANSACTION")
            for statement in statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)", [version, description, utc_now()]
            )
            connection.execute("COMMIT")
        except duckdb.Error as error:
            connection.execute("ROLLBACK")
            raise SchemaError(
                f"migrating {path} to schema version {version} failed: {error}"
            ) from error


_CANARY = ("adloop canary campaign", "adloop event key canary")


def check_event_keys(connection: duckdb.DuckDBPyConnection) -> None:
    """Recompute every event_key when this DuckDB's ``hash()`` is not the one that wrote them.

    The canary is the key (``EVENT_KEY_SQL``) of a fixed (campaign_id, event_id) pair.
    """
    (current,) = connection.execute(
        f"SELECT ({EVENT_KEY_SQL})::VARCHAR FROM (SELECT ? AS campaign_id, ? AS event_id)",
        list(_CANARY),
    ).fetchall()[0]
    stored = connection.execute(
        "SELECT value FROM store_meta WHERE key = 'event_key_canary'"
    ).fetchall()
    if stored and stored[0][0] == current:
        return
    connection.execute("BEGIN TRANSACTION")
    if stored:
        # Keys are derived data (the log itself is untouched): rewrite them under the new hash.
        connection.execute(f"UPDATE events SET event_key = {EVENT_KEY_SQL}")
    connection.execute("DELETE FROM store_meta WHERE key = 'event_key_canary'")
    connection.execute("INSERT INTO store_meta VALUES ('event_key_canary', ?)", [current])
    connection.execute("COMMIT")
