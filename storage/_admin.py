"""The service's API keys and the scheduler's job runs."""

from __future__ import annotations

from datetime import datetime

import duckdb

from adloop.storage._core import StoreCore
from adloop.storage._fields import decode_json, encode_json, exists, fetch_dicts, naive_utc, require
from adloop.storage.errors import ConflictError


class AdminMixin(StoreCore):
    """API key hashes (per tenant) and the record of scheduler job runs."""

    def add_api_key(self, *, tenant: str, key_hash: str, admin: bool = False) -> None:
        """Store the hash of an API key for ``tenant``.

        Raises:
            ConflictError: the hash is stored already.
        """
        require({"tenant": tenant, "key_hash": key_hash}, "tenant", "api key")
        require({"key_hash": key_hash}, "key_hash", "api key")
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if exists(connection, "SELECT 1 FROM api_keys WHERE key_hash = ?", [key_hash]):
                raise ConflictError("an API key with this hash already exists")
            connection.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?)", [key_hash, tenant, bool(admin), now]
            )

        self._write(write)

    def api_key(self, key_hash: str) -> dict | None:
        """``{"tenant", "admin", "created_at"}`` for a stored key hash, else None."""
        rows = fetch_dicts(
            self._read(
                "SELECT tenant, admin, created_at FROM api_keys WHERE key_hash = ?", [key_hash]
            )
        )
        return rows[0] if rows else None

    def record_job_run(
        self,
        *,
        job: str,
        started_at: datetime,
        ended_at: datetime | None,
        outcome: str,
        error: str | None = None,
        detail: dict | None = None,
    ) -> None:
        """Append one scheduler job run."""
        row = [
            require({"job": job}, "job", "job run"),
            naive_utc(started_at, "started_at"),
            None if ended_at is None else naive_utc(ended_at, "ended_at"),
            require({"outcome": outcome}, "outcome", "job run"),
            error,
            encode_json(detail, "detail"),
        ]
        self._write(
            lambda connection: connection.execute(
                "INSERT INTO job_runs VALUES (?, ?, ?, ?, ?, ?)", row
            )
        )

    def job_runs(self, job: str | None = None) -> list[dict]:
        """Recorded job runs (of ``job`` when given), oldest first."""
        rows = fetch_dicts(
            self._read(
                "SELECT * FROM job_runs WHERE ? IS NULL OR job = ? ORDER BY started_at, rowid",
                [job, job],
            )
        )
        for row in rows:
            row["detail"] = decode_json(row["detail"])
        return rows
