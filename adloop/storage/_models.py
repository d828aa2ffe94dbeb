"""Trained model versions and the promotion history that says which one is current."""

from __future__ import annotations

from datetime import datetime

import duckdb

from adloop.storage._core import StoreCore
from adloop.storage._fields import decode_json, encode_json, exists, fetch_dicts, naive_utc, require
from adloop.storage.errors import ConflictError, NotFoundError


class ModelsMixin(StoreCore):
    """Model versions, promotions and rollbacks (promotions are append-only)."""

    def add_model_version(self, record: dict) -> None:
        """Record a trained model version (``version, path, base, parent, data_hash, metrics``).

        Raises:
            ConflictError: the version exists already.
        """
        version = require(record, "version", "model version")
        row = [
            version,
            None if record.get("path") is None else str(record["path"]),
            record.get("base"),
            record.get("parent"),
            record.get("data_hash"),
            encode_json(record.get("metrics") or {}, "metrics"),
            naive_utc(record.get("created_at") or self._now(), "created_at"),
        ]

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if exists(connection, "SELECT 1 FROM model_versions WHERE version = ?", [version]):
                raise ConflictError(f"model version {version} already exists")
            connection.execute("INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        self._write(write)

    @staticmethod
    def _decode_model(row: dict) -> dict:
        row["metrics"] = decode_json(row["metrics"], {})
        return row

    def model_versions(self) -> list[dict]:
        """Every recorded model version, oldest first."""
        rows = fetch_dicts(self._read("SELECT * FROM model_versions ORDER BY created_at, version"))
        return [self._decode_model(row) for row in rows]

    def _promotion_stack(self, connection: duckdb.DuckDBPyConnection) -> list[tuple[str, datetime]]:
        stack: list[tuple[str, datetime]] = []
        for version, action, promoted_at in connection.execute(
            "SELECT version, action, promoted_at FROM model_promotions ORDER BY rowid"
        ).fetchall():
            if action == "rollback" and stack:
                stack.pop()
            else:
                stack.append((version, promoted_at))
        return stack

    def promote_model(self, version: str) -> None:
        """Make ``version`` the current model (appends a promotion row).

        Raises:
            NotFoundError: no such version.
        """
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if not exists(connection, "SELECT 1 FROM model_versions WHERE version = ?", [version]):
                raise NotFoundError(f"no model version {version}")
            connection.execute(
                "INSERT INTO model_promotions VALUES (?, 'promote', ?)", [version, now]
            )

        self._write(write)

    def _model_with_promotion(self, version: str, promoted_at: datetime) -> dict:
        rows = fetch_dicts(self._read("SELECT * FROM model_versions WHERE version = ?", [version]))
        model = self._decode_model(rows[0])
        model["promoted_at"] = promoted_at
        return model

    def current_model(self) -> dict | None:
        """The most recently promoted model version still in force, with ``promoted_at``."""
        stack = self._promotion_stack(self._db().reader())
        return self._model_with_promotion(*stack[-1]) if stack else None

    def rollback_model(self) -> dict | None:
        """Return to the version promoted before the current one; None when there is none."""
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> str | None:
            stack = self._promotion_stack(connection)
            if len(stack) < 2:
                return None
            connection.execute(
                "INSERT INTO model_promotions VALUES (?, 'rollback', ?)", [stack[-2][0], now]
            )
            return stack[-2][0]

        if self._write(write) is None:
            return None
        return self.current_model()
