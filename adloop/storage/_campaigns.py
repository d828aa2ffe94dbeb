"""Campaigns and their variants: creating them, reading them, changing their status.

A variant's ``segments`` (schema 5) are the audience segments it is served to; an empty list
(and NULL, as every variant stored before schema 5 reads) means every segment.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import duckdb
import pyarrow as pa

from adloop.storage._core import StoreCore
from adloop.storage._dialect import DUCKDB, Dialect
from adloop.storage._fields import (
    decode_json,
    encode_json,
    exists,
    fetch_dicts,
    naive_utc,
    one_of,
    require,
)
from adloop.storage.errors import ConflictError, InvalidRecordError, NotFoundError

CAMPAIGN_OBJECTIVES = ("ctr", "cvr", "value")
CAMPAIGN_STATUSES = ("active", "paused", "completed")
VARIANT_STATUSES = ("active", "retired", "winner", "pending", "rejected")
#: The columns of a variant row, in the order ``_variant_rows`` builds them.
VARIANT_COLUMNS = (
    "variant_id", "campaign_id", "headline", "description", "text", "language",
    "generator", "model_version", "parent_ids", "provenance", "status", "created_at",
    "updated_at", "retired_at", "segments",
)  # fmt: skip


class CampaignsMixin(StoreCore):
    """The store's campaign and variant records."""

    _dialect: Dialect = DUCKDB

    def _campaign_row(self, campaign: dict, now: datetime) -> list:
        campaign_id = require(campaign, "campaign_id", "campaign")
        created = naive_utc(campaign.get("created_at") or now, "created_at")
        return [
            campaign_id,
            campaign.get("tenant") or "default",
            campaign.get("name"),
            encode_json(campaign.get("brief"), "brief"),
            one_of(campaign.get("objective", "ctr"), "objective", CAMPAIGN_OBJECTIVES),
            one_of(campaign.get("status", "active"), "status", CAMPAIGN_STATUSES),
            encode_json(campaign.get("settings") or {}, "settings"),
            campaign.get("winner_variant_id"),
            created,
            created,
        ]

    def _variant_rows(self, campaign_id: str, variants: list[dict], now: datetime) -> list[list]:
        rows = []
        seen: set[str] = set()
        for variant in variants:
            variant_id = require(variant, "variant_id", "variant")
            if variant.get("campaign_id") not in (None, campaign_id):
                raise InvalidRecordError(
                    f"variant {variant_id} names campaign {variant['campaign_id']!r}, "
                    f"expected {campaign_id!r}"
                )
            if variant_id in seen:
                raise ConflictError(f"variant {variant_id} appears twice in the list")
            seen.add(variant_id)
            status = one_of(variant.get("status", "active"), "status", VARIANT_STATUSES)
            created = naive_utc(variant.get("created_at") or now, "created_at")
            parent_ids = list(variant.get("parent_ids") or [])
            segments = _segments(variant.get("segments"), variant_id)
            rows.append(
                [
                    variant_id,
                    campaign_id,
                    variant.get("headline"),
                    variant.get("description"),
                    variant.get("text") or variant.get("headline"),
                    variant.get("language"),
                    variant.get("generator"),
                    variant.get("model_version"),
                    encode_json(parent_ids, "parent_ids"),
                    encode_json(variant.get("provenance") or {}, "provenance"),
                    status,
                    created,
                    created,
                    created if status == "retired" else None,
                    encode_json(segments, "segments"),
                ]
            )
        return rows

    def _insert_variant_rows(self, connection: duckdb.DuckDBPyConnection, rows: list[list]) -> None:
        if not rows:
            return
        ids = [row[0] for row in rows]
        clash = connection.execute(
            f"SELECT variant_id FROM variants WHERE {self._dialect.in_list.format('variant_id')} "
            "LIMIT 1",
            [ids],
        ).fetchall()
        if clash:
            raise ConflictError(f"variant {clash[0][0]} already exists")
        self._append_variant_rows(connection, rows)

    @staticmethod
    def _append_variant_rows(connection: duckdb.DuckDBPyConnection, rows: list[list]) -> None:
        """Insert ``rows`` (in ``VARIANT_COLUMNS`` order) in one statement, from Arrow."""
        columns = list(zip(*rows, strict=True))
        types = [pa.string()] * 11 + [pa.timestamp("us")] * 3 + [pa.string()]
        table = pa.table(
            {
                name: pa.array(column, kind)
                for name, column, kind in zip(VARIANT_COLUMNS, columns, types, strict=True)
            }
        )
        connection.register("_new_variants", table)
        try:
            # Columns named: schema migrations append columns, so positions are not a contract.
            columns_sql = ", ".join(VARIANT_COLUMNS)
            connection.execute(
                f"INSERT INTO variants ({columns_sql}) SELECT {columns_sql} FROM _new_variants"
            )
        finally:
            connection.unregister("_new_variants")

    def insert_campaign(self, campaign: dict, variants: list[dict]) -> None:
        """Store a new campaign and its first variants in one transaction.

        Raises:
            ConflictError: the campaign or a variant id exists already.
            InvalidRecordError: a field is missing or has a value outside its allowed set.
        """
        now = self._now()
        row = self._campaign_row(campaign, now)
        variant_rows = self._variant_rows(row[0], variants, now)

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if exists(connection, "SELECT 1 FROM campaigns WHERE campaign_id = ?", [row[0]]):
                raise ConflictError(f"campaign {row[0]} already exists")
            connection.execute("INSERT INTO campaigns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._insert_variant_rows(connection, variant_rows)

        self._write(write)

    def insert_variants(self, campaign_id: str, variants: list[dict]) -> None:
        """Add variants to an existing campaign (one transaction).

        Raises:
            NotFoundError: no such campaign.
            ConflictError: a variant id exists already.
        """
        rows = self._variant_rows(campaign_id, variants, self._now())

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if not exists(
                connection, "SELECT 1 FROM campaigns WHERE campaign_id = ?", [campaign_id]
            ):
                raise NotFoundError(f"no campaign {campaign_id}")
            self._insert_variant_rows(connection, rows)

        self._write(write)

    @staticmethod
    def _decode_campaign(row: dict) -> dict:
        row["brief"] = decode_json(row["brief"])
        row["settings"] = decode_json(row["settings"], {})
        return row

    @staticmethod
    def _decode_variant(row: dict) -> dict:
        row["parent_ids"] = decode_json(row["parent_ids"], [])
        row["provenance"] = decode_json(row["provenance"], {})
        row["segments"] = decode_json(row.get("segments"), [])
        return row

    def campaign(self, campaign_id: str) -> dict | None:
        """The campaign's fields (brief and settings decoded), or None when absent."""
        rows = fetch_dicts(
            self._read("SELECT * FROM campaigns WHERE campaign_id = ?", [campaign_id])
        )
        return self._decode_campaign(rows[0]) if rows else None

    def campaigns(self, tenant: str | None = None) -> list[dict]:
        """All campaigns (of ``tenant`` when given), oldest first."""
        sql = (
            "SELECT * FROM campaigns WHERE ? IS NULL OR tenant = ? ORDER BY created_at, campaign_id"
        )
        return [
            self._decode_campaign(row) for row in fetch_dicts(self._read(sql, [tenant, tenant]))
        ]

    def variants(self, campaign_id: str, statuses: Iterable[str] | None = None) -> list[dict]:
        """The campaign's variants (only those whose status is in ``statuses``), oldest first."""
        wanted = None if statuses is None else list(statuses)
        sql = (
            "SELECT * FROM variants WHERE campaign_id = ? "
            f"AND (? IS NULL OR {self._dialect.in_list.format('status')}) "
            "ORDER BY created_at, variant_id"
        )
        rows = fetch_dicts(self._read(sql, [campaign_id, wanted, wanted]))
        return [self._decode_variant(row) for row in rows]

    def set_campaign_status(
        self, campaign_id: str, status: str, *, winner_variant_id: str | None = None
    ) -> None:
        """Change a campaign's status (and record its winner, when given).

        Raises:
            NotFoundError: no such campaign, or the winner is not one of its variants.
        """
        one_of(status, "status", CAMPAIGN_STATUSES)
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if not exists(
                connection, "SELECT 1 FROM campaigns WHERE campaign_id = ?", [campaign_id]
            ):
                raise NotFoundError(f"no campaign {campaign_id}")
            if winner_variant_id is not None and not exists(
                connection,
                "SELECT 1 FROM variants WHERE campaign_id = ? AND variant_id = ?",
                [campaign_id, winner_variant_id],
            ):
                raise NotFoundError(f"campaign {campaign_id} has no variant {winner_variant_id}")
            connection.execute(
                "UPDATE campaigns SET status = ?, updated_at = ?, "
                "winner_variant_id = coalesce(?, winner_variant_id) WHERE campaign_id = ?",
                [status, now, winner_variant_id, campaign_id],
            )

        self._write(write)

    def set_variant_status(self, campaign_id: str, variant_id: str, status: str) -> None:
        """Change a variant's status; retiring records when, so late events can be reported.

        Raises:
            NotFoundError: the campaign has no such variant.
        """
        one_of(status, "status", VARIANT_STATUSES)
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if not exists(
                connection,
                "SELECT 1 FROM variants WHERE campaign_id = ? AND variant_id = ?",
                [campaign_id, variant_id],
            ):
                raise NotFoundError(f"campaign {campaign_id} has no variant {variant_id}")
            connection.execute(
                """UPDATE variants SET status = ?, updated_at = ?,
                       retired_at = CASE WHEN ? = 'retired' THEN coalesce(retired_at, ?)
                                         ELSE NULL END
                   WHERE campaign_id = ? AND variant_id = ?""",
                [status, now, status, now, campaign_id, variant_id],
            )

        self._write(write)


def _segments(value: object, variant_id: str) -> list[str]:
    """A variant's target segments: distinct non-empty strings (none: every segment)."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InvalidRecordError(
            f"variant {variant_id}: segments must be a list of segment names, got {value!r}"
        )
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise InvalidRecordError(
                f"variant {variant_id}: segments must be non-empty strings, got {name!r}"
            )
    return list(dict.fromkeys(value))
