"""The service's API keys and the scheduler's job runs."""

from __future__ import annotations

from datetime import datetime

import duckdb

from adloop.storage._core import StoreCore
from adloop.storage._fields import decode_json, encode_json, exists, fetch_dicts, naive_utc, require
from adloop.storage.errors import ConflictError, InvalidArgumentError, NotFoundError

#: Characters of the hex SHA-256 that name a key in listings (64 bits: unique in practice,
#: and useless for authenticating, so listings can be shown to operators).
KEY_ID_LENGTH = 16
_KEY_COLUMNS = "key_hash, tenant, admin, created_at, expires_at, revoked_at"


class AdminMixin(StoreCore):
    """API key hashes (per tenant) and the record of scheduler job runs."""

    def add_api_key(
        self,
        *,
        tenant: str,
        key_hash: str,
        admin: bool = False,
        expires_at: datetime | None = None,
    ) -> None:
        """Store the hash of an API key for ``tenant``, valid until ``expires_at`` (UTC).

        Raises:
            ConflictError: the hash is stored already.
        """
        require({"tenant": tenant, "key_hash": key_hash}, "tenant", "api key")
        require({"key_hash": key_hash}, "key_hash", "api key")
        expires = None if expires_at is None else naive_utc(expires_at, "expires_at")
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if exists(connection, "SELECT 1 FROM api_keys WHERE key_hash = ?", [key_hash]):
                raise ConflictError("an API key with this hash already exists")
            connection.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                [key_hash, tenant, bool(admin), now, expires],
            )

        self._write(write)

    def api_key(self, key_hash: str) -> dict | None:
        """``{"tenant", "admin", "created_at", "expires_at", "revoked_at"}`` for a key hash.

        None when no key has this hash. Revoked and expired keys are returned too: the
        caller decides (``revoked_at``/``expires_at`` say why a key no longer works).
        """
        rows = fetch_dicts(
            self._read(
                "SELECT tenant, admin, created_at, expires_at, revoked_at "
                "FROM api_keys WHERE key_hash = ?",
                [key_hash],
            )
        )
        return rows[0] if rows else None

    def api_keys(self, tenant: str | None = None) -> list[dict]:
        """Every stored key (of ``tenant`` when given), oldest first, without its hash.

        Each row is ``{"key_id", "tenant", "admin", "created_at", "expires_at",
        "revoked_at"}``; ``key_id`` is the first :data:`KEY_ID_LENGTH` hex characters of
        the key's SHA-256, enough to name it for :meth:`revoke_api_key`, not to use it.
        """
        rows = fetch_dicts(
            self._read(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE ? IS NULL OR tenant = ? "
                "ORDER BY created_at, key_hash",
                [tenant, tenant],
            )
        )
        return [{"key_id": row.pop("key_hash")[:KEY_ID_LENGTH], **row} for row in rows]

    def revoke_api_key(self, key_id: str) -> dict:
        """Revoke the key whose hash starts with ``key_id`` (a listing's id, or a full hash).

        Revoking twice keeps the first time. Returns the key's row as :meth:`api_keys`
        lists it.

        Raises:
            NotFoundError: no stored key has this id.
            ConflictError: the id names several keys (give more of the hash).
            InvalidArgumentError: ``key_id`` is not 16-64 hex characters.
        """
        if not (
            isinstance(key_id, str)
            and KEY_ID_LENGTH <= len(key_id) <= 64
            and all(c in "0123456789abcdef" for c in key_id)
        ):
            raise InvalidArgumentError(
                f"key_id: expected {KEY_ID_LENGTH}-64 lowercase hex characters "
                f"(as 'adloop keys list' shows), got {key_id!r}"
            )
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> str:
            hashes = connection.execute(
                "SELECT key_hash FROM api_keys WHERE starts_with(key_hash, ?)", [key_id]
            ).fetchall()
            if not hashes:
                raise NotFoundError(f"key_id: no API key has the id {key_id!r}")
            if len(hashes) > 1:
                raise ConflictError(f"key_id: {key_id!r} names several keys; give more of it")
            connection.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_hash = ?",
                [now, hashes[0][0]],
            )
            return hashes[0][0]

        key_hash = self._write(write)
        return next(row for row in self.api_keys() if key_hash.startswith(row["key_id"]))

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
                "SELECT job, started_at, ended_at, outcome, error, detail FROM job_runs "
                "WHERE ? IS NULL OR job = ? ORDER BY started_at, rowid",
                [job, job],
            )
        )
        for row in rows:
            row["detail"] = decode_json(row["detail"])
        return rows
