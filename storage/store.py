"""The DuckDB-backed store: campaigns, variants, the append-only event log and arm statistics."""

from __future__ import annotations

import atexit
import json
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from adloop.storage import io as _io
from adloop.storage._writer import CallJob, IngestJob, Writer
from adloop.storage.errors import (
    ConflictError,
    InvalidRecordError,
    NotFoundError,
    SchemaError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
)
from adloop.storage.result import AppendResult
from adloop.storage.schema import LATEST_VERSION, MIGRATIONS

__all__ = ["Store"]

Clock = Callable[[], datetime]

CAMPAIGN_OBJECTIVES = ("ctr", "cvr", "value")
CAMPAIGN_STATUSES = ("active", "paused", "completed")
VARIANT_STATUSES = ("active", "retired", "winner")
#: Events stamped further than this ahead of the store's clock are rejected.
FUTURE_TOLERANCE = timedelta(minutes=5)
DEFAULT_MAX_ERRORS = 1000

_DECISION_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("campaign_id", pa.string()),
        ("variant_id", pa.string()),
        ("segment", pa.string()),
        ("probability", pa.float64()),
        ("ts", pa.timestamp("us")),
    ]
)


#: Arrow columns that need no conversion at all (what the HTTP service and the engine send).
_TYPED_COLUMNS = {
    "event_id": pa.string(),
    "type": pa.string(),
    "campaign_id": pa.string(),
    "variant_id": pa.string(),
    "decision_id": pa.string(),
    "segment": pa.string(),
    "ts": pa.timestamp("us"),
    "value": pa.float64(),
}


_TYPED_SCHEMA = pa.schema(list(_TYPED_COLUMNS.items()))


def _typed_canonical(batch: Any) -> pa.Table | None:
    """``_io.to_canonical(batch)`` for an Arrow table already in the typed columns, else None.

    The general conversion inspects and casts each column; for the service's batches (every
    column present with exactly its type) the canonical table is assembled as is, which
    matters when thousands of small batches a second arrive.
    """
    if not isinstance(batch, pa.Table) or batch.num_rows == 0:
        return None
    schema = batch.schema
    if not schema.equals(_TYPED_SCHEMA) and (
        len(schema) != len(_TYPED_COLUMNS)
        or any(_TYPED_COLUMNS.get(field.name) != field.type for field in schema)
    ):
        return None
    n = batch.num_rows

    def column(name: str) -> pa.Array:
        chunks = batch.column(name)
        return chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()

    no_text = pa.nulls(n, pa.string())
    arrays = [pa.array(np.arange(n, dtype=np.int64))]
    arrays += [column(name) for name in _io.CANONICAL_SCHEMA.names[1:7]]
    arrays += [column("ts"), no_text, column("value"), no_text, no_text, no_text]
    return pa.Table.from_arrays(arrays, schema=_io.CANONICAL_SCHEMA)


def utc_now() -> datetime:
    """The current time as a timezone-naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


class _Database:
    """One open file per process: the write connection, its writer thread, reader cursors.

    Several :class:`Store` objects on the same file in one process share it, so there is
    always exactly one writer per file (two writers could both accept the same event_id).
    """

    _open: dict[Path, _Database] = {}
    _open_lock = threading.Lock()

    @classmethod
    def close_all(cls) -> None:
        """Commit what is queued and close every open file (at interpreter exit)."""
        with cls._open_lock:
            databases = list(cls._open.values())
        for database in databases:
            database.users = 1
            database.release()

    @classmethod
    def acquire(cls, path: Path) -> _Database:
        with cls._open_lock:
            database = cls._open.get(path)
            if database is None:
                database = cls(path)
                cls._open[path] = database
            database.users += 1
            return database

    def release(self) -> None:
        with self._open_lock:
            self.users -= 1
            if self.users > 0 or self._open.get(self.path) is not self:
                return  # still shared, or already closed (e.g. at interpreter exit)
            del self._open[self.path]
        self.writer.stop()
        with self._cursor_lock:
            for cursor in self._cursors:
                cursor.close()
            self._cursors.clear()
            self._factory.close()
        self.connection.close()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.connection = duckdb.connect(str(path))
        except duckdb.IOException as error:
            message = str(error)
            if "lock" in message.lower():
                match = re.search(r"PID (\d+)", message)
                raise StoreLockedError(path, int(match.group(1)) if match else None) from error
            raise StorageError(f"cannot open the database file {path}: {message}") from error
        except duckdb.Error as error:
            raise StorageError(f"cannot open the database file {path}: {error}") from error
        try:
            self.connection.execute("SET TimeZone = 'UTC'")
            _migrate(self.connection, path)
            _check_event_keys(self.connection)
        except BaseException:
            self.connection.close()  # release the file lock before reporting
            raise
        # Readers get their own connections (cursors) made from this one, never the writer's.
        self._factory = self.connection.cursor()
        self._cursor_lock = threading.Lock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._local = threading.local()
        self.writer = Writer(self.connection, path.name)

    def reader(self) -> duckdb.DuckDBPyConnection:
        """This thread's read connection (created on first use)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursor_lock:
                cursor = self._factory.cursor()
                cursor.execute("SET TimeZone = 'UTC'")
                self._cursors.append(cursor)
            self._local.cursor = cursor
        return cursor


# Fire-and-forget writes (decisions) still queued at exit are committed, not dropped.
atexit.register(_Database.close_all)


def _migrate(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
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


_CANARY = "adloop event key canary"


def _check_event_keys(connection: duckdb.DuckDBPyConnection) -> None:
    """Recompute every event_key when this DuckDB's ``hash()`` is not the one that wrote them."""
    (current,) = connection.execute("SELECT hash(?)::VARCHAR", [_CANARY]).fetchall()[0]
    stored = connection.execute(
        "SELECT value FROM store_meta WHERE key = 'event_key_canary'"
    ).fetchall()
    if stored and stored[0][0] == current:
        return
    connection.execute("BEGIN TRANSACTION")
    if stored:
        # Keys are derived data (the log itself is untouched): rewrite them under the new hash.
        connection.execute("UPDATE events SET event_key = hash(event_id)")
    connection.execute("DELETE FROM store_meta WHERE key = 'event_key_canary'")
    connection.execute("INSERT INTO store_meta VALUES ('event_key_canary', ?)", [current])
    connection.execute("COMMIT")


def _json(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise InvalidRecordError(f"{field} is not JSON-serialisable: {error}") from error


def _unjson(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def _require(record: dict, field: str, kind: str) -> Any:
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRecordError(f"{kind} field {field!r} is missing or empty (got {value!r})")
    return value


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidRecordError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _naive_utc(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as error:
            raise InvalidRecordError(f"{field} is not an ISO timestamp: {value!r}") from error
    if not isinstance(value, datetime):
        raise InvalidRecordError(f"{field} must be a datetime, got {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class Store:
    """A DuckDB file holding campaigns, variants, the append-only event log and model history.

    All writes go through one writer thread that owns the write connection and group-commits
    whatever is queued; ``append_events`` returns only after the COMMIT that made its rows
    durable. Reads use a per-thread connection, so a Store may be shared by many threads.

    Args:
        path: the database file (created, with parent folders, if absent).
        clock: returns "now" as a naive UTC datetime; used for timestamps the store stamps
            itself, for rejecting events from the future, and for discounting.

    Raises:
        StoreLockedError: another process has the file open.
        SchemaError: the file was written by a newer adloop.

    Example:
        >>> with Store(tmp_path / "adloop.duckdb") as store:  # doctest: +SKIP
        ...     store.insert_campaign({"campaign_id": "c_1", "objective": "ctr"},
        ...                           [{"variant_id": "v_1", "headline": "Hi"}])
        ...     store.append_events([{"event_id": "e1", "type": "impression",
        ...         "campaign_id": "c_1", "variant_id": "v_1", "ts": "2024-05-01 12:00"}]).accepted
        1
    """

    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self._clock: Clock = clock or utc_now
        self._database: _Database | None = _Database.acquire(self.path)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Commit everything queued, stop the writer (if no other Store shares it), close."""
        database, self._database = self._database, None
        if database is not None:
            database.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def _db(self) -> _Database:
        if self._database is None:
            raise StoreClosedError(f"the store for {self.path} is closed")
        return self._database

    def _now(self) -> datetime:
        return _naive_utc(self._clock(), "clock()")

    def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        future: Future = Future()
        self._db().writer.submit(CallJob(fn=fn, future=future))
        return future.result()

    def _read(self, sql: str, params: list | None = None) -> duckdb.DuckDBPyConnection:
        return self._db().reader().execute(sql, params or [])

    def flush(self) -> None:
        """Wait until everything queued so far (e.g. by :meth:`log_decisions`) is committed."""
        self._write(lambda connection: None)

    # -- campaigns and variants -------------------------------------------------------------

    def _campaign_row(self, campaign: dict, now: datetime) -> list:
        campaign_id = _require(campaign, "campaign_id", "campaign")
        created = _naive_utc(campaign.get("created_at") or now, "created_at")
        return [
            campaign_id,
            campaign.get("tenant") or "default",
            campaign.get("name"),
            _json(campaign.get("brief"), "brief"),
            _choice(campaign.get("objective", "ctr"), "objective", CAMPAIGN_OBJECTIVES),
            _choice(campaign.get("status", "active"), "status", CAMPAIGN_STATUSES),
            _json(campaign.get("settings") or {}, "settings"),
            campaign.get("winner_variant_id"),
            created,
            created,
        ]

    def _variant_rows(self, campaign_id: str, variants: list[dict], now: datetime) -> list[list]:
        rows = []
        seen: set[str] = set()
        for variant in variants:
            variant_id = _require(variant, "variant_id", "variant")
            if variant.get("campaign_id") not in (None, campaign_id):
                raise InvalidRecordError(
                    f"variant {variant_id} names campaign {variant['campaign_id']!r}, "
                    f"expected {campaign_id!r}"
                )
            if variant_id in seen:
                raise ConflictError(f"variant {variant_id} appears twice in the list")
            seen.add(variant_id)
            status = _choice(variant.get("status", "active"), "status", VARIANT_STATUSES)
            created = _naive_utc(variant.get("created_at") or now, "created_at")
            parent_ids = list(variant.get("parent_ids") or [])
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
                    _json(parent_ids, "parent_ids"),
                    _json(variant.get("provenance") or {}, "provenance"),
                    status,
                    created,
                    created,
                    created if status == "retired" else None,
                ]
            )
        return rows

    @staticmethod
    def _insert_variant_rows(connection: duckdb.DuckDBPyConnection, rows: list[list]) -> None:
        if not rows:
            return
        ids = [row[0] for row in rows]
        clash = connection.execute(
            "SELECT variant_id FROM variants WHERE list_contains(?, variant_id) LIMIT 1", [ids]
        ).fetchall()
        if clash:
            raise ConflictError(f"variant {clash[0][0]} already exists")
        columns = list(zip(*rows, strict=True))
        names = [
            "variant_id", "campaign_id", "headline", "description", "text", "language",
            "generator", "model_version", "parent_ids", "provenance", "status", "created_at",
            "updated_at", "retired_at",
        ]  # fmt: skip
        types = [pa.string()] * 11 + [pa.timestamp("us")] * 3
        table = pa.table(
            {
                name: pa.array(column, kind)
                for name, column, kind in zip(names, columns, types, strict=True)
            }
        )
        connection.register("_new_variants", table)
        try:
            connection.execute(f"INSERT INTO variants SELECT {', '.join(names)} FROM _new_variants")
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
            if connection.execute(
                "SELECT 1 FROM campaigns WHERE campaign_id = ?", [row[0]]
            ).fetchall():
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
            if not connection.execute(
                "SELECT 1 FROM campaigns WHERE campaign_id = ?", [campaign_id]
            ).fetchall():
                raise NotFoundError(f"no campaign {campaign_id}")
            self._insert_variant_rows(connection, rows)

        self._write(write)

    @staticmethod
    def _decode_campaign(row: dict) -> dict:
        row["brief"] = _unjson(row["brief"])
        row["settings"] = _unjson(row["settings"], {})
        return row

    @staticmethod
    def _decode_variant(row: dict) -> dict:
        row["parent_ids"] = _unjson(row["parent_ids"], [])
        row["provenance"] = _unjson(row["provenance"], {})
        return row

    def campaign(self, campaign_id: str) -> dict | None:
        """The campaign's fields (brief and settings decoded), or None when absent."""
        rows = _rows(self._read("SELECT * FROM campaigns WHERE campaign_id = ?", [campaign_id]))
        return self._decode_campaign(rows[0]) if rows else None

    def campaigns(self, tenant: str | None = None) -> list[dict]:
        """All campaigns (of ``tenant`` when given), oldest first."""
        sql = (
            "SELECT * FROM campaigns WHERE ? IS NULL OR tenant = ? ORDER BY created_at, campaign_id"
        )
        return [self._decode_campaign(row) for row in _rows(self._read(sql, [tenant, tenant]))]

    def variants(self, campaign_id: str, statuses: Iterable[str] | None = None) -> list[dict]:
        """The campaign's variants (only those whose status is in ``statuses``), oldest first."""
        wanted = None if statuses is None else list(statuses)
        sql = (
            "SELECT * FROM variants WHERE campaign_id = ? "
            "AND (? IS NULL OR list_contains(?, status)) "
            "ORDER BY created_at, variant_id"
        )
        rows = _rows(self._read(sql, [campaign_id, wanted, wanted]))
        return [self._decode_variant(row) for row in rows]

    def set_campaign_status(
        self, campaign_id: str, status: str, *, winner_variant_id: str | None = None
    ) -> None:
        """Change a campaign's status (and record its winner, when given).

        Raises:
            NotFoundError: no such campaign, or the winner is not one of its variants.
        """
        _choice(status, "status", CAMPAIGN_STATUSES)
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if not connection.execute(
                "SELECT 1 FROM campaigns WHERE campaign_id = ?", [campaign_id]
            ).fetchall():
                raise NotFoundError(f"no campaign {campaign_id}")
            if (
                winner_variant_id is not None
                and not connection.execute(
                    "SELECT 1 FROM variants WHERE campaign_id = ? AND variant_id = ?",
                    [campaign_id, winner_variant_id],
                ).fetchall()
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
        _choice(status, "status", VARIANT_STATUSES)
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if not connection.execute(
                "SELECT 1 FROM variants WHERE campaign_id = ? AND variant_id = ?",
                [campaign_id, variant_id],
            ).fetchall():
                raise NotFoundError(f"campaign {campaign_id} has no variant {variant_id}")
            connection.execute(
                """UPDATE variants SET status = ?, updated_at = ?,
                       retired_at = CASE WHEN ? = 'retired' THEN coalesce(retired_at, ?)
                                         ELSE NULL END
                   WHERE campaign_id = ? AND variant_id = ?""",
                [status, now, status, now, campaign_id, variant_id],
            )

        self._write(write)

    # -- events ----------------------------------------------------------------------------

    def append_events(
        self, batch: Any, *, max_errors: int = DEFAULT_MAX_ERRORS, source: str = "append"
    ) -> AppendResult:
        """Append a batch to the event log; return once it is committed.

        The same as ``submit_events(...).result()``.

        Idempotent on ``event_id``: rows whose id is already stored, or that repeat an earlier
        row of the same batch, count as duplicates and add nothing. Invalid rows (unknown
        campaign/variant/type, missing or malformed event_id, unparseable timestamp or one more
        than 5 minutes ahead of the store's clock, NaN/negative/unparseable value) are rejected
        with a reason; the rest of the batch is still stored, all in one transaction.

        Args:
            batch: a list of dicts, a polars DataFrame or an Arrow table with columns
                ``event_id, type, campaign_id, variant_id, ts`` and optional
                ``decision_id, segment, value``.
            max_errors: at most this many :class:`RowError` are returned (counts stay exact).
            source: a label kept in the ingest log (e.g. ``"http"``, ``"file"``).

        Example:
            >>> store.append_events(rows).to_dict()  # doctest: +SKIP
            {'accepted': 2, 'duplicates': 0, 'rejected': 1, 'errors': [{'row': 2, ...}]}
        """
        return self.submit_events(batch, max_errors=max_errors, source=source).result()

    def submit_events(
        self, batch: Any, *, max_errors: int = DEFAULT_MAX_ERRORS, source: str = "append"
    ) -> Future[AppendResult]:
        """Queue a batch for the event log; the returned future resolves after its COMMIT.

        Validation, deduplication and results are exactly those of :meth:`append_events`
        (which waits on this future). An async caller can await it without holding a thread:
        ``await asyncio.wrap_future(store.submit_events(rows))``. A batch queued with others is
        committed in the same group: a row repeating an event_id of an earlier batch in the
        group counts as a duplicate of its own batch. If the group's transaction fails, each
        batch is retried alone and only the failing one's future raises.

        Raises:
            StoreClosedError: the store is closed.
            InvalidRecordError / UnreadableFileError: ``batch`` cannot be read as events.

        Example:
            >>> result = await asyncio.wrap_future(store.submit_events(rows))  # doctest: +SKIP
        """
        now = self._now()
        job = IngestJob(
            events=_typed_canonical(batch) or _io.to_canonical(batch),
            source=source,
            received_at=now,
            max_ts=now + FUTURE_TOLERANCE,
            max_errors=max(0, int(max_errors)),
            future=Future(),
        )
        if job.events.num_rows == 0:
            job.future.set_result(AppendResult(accepted=0, duplicates=0, rejected=0, errors=[]))
            return job.future
        self._db().writer.submit(job)
        return job.future

    def log_decisions(self, decisions: list[dict] | pl.DataFrame, *, impressions: bool) -> None:
        """Queue chooser decisions (and, with ``impressions``, one impression event per decision).

        Each decision needs ``decision_id, campaign_id, variant_id, probability, ts`` and may
        have ``segment``. The impression's event_id is the decision_id, so a later impression
        report for the same decision is a duplicate, not a second impression. Fire-and-forget:
        returns at once and is durable at the writer's next group commit (see :meth:`flush`).

        Raises:
            InvalidRecordError: a decision lacks a field or has a probability outside [0, 1].
        """
        table = _io.to_arrow(decisions)
        if table.num_rows == 0:
            return
        for name in ("decision_id", "campaign_id", "variant_id", "probability", "ts"):
            if name not in table.column_names or table.column(name).null_count:
                raise InvalidRecordError(f"every decision needs a non-null {name!r}")
        if "segment" not in table.column_names:
            table = table.append_column("segment", pa.nulls(table.num_rows, pa.string()))
        ts = table.column("ts")
        if not pa.types.is_timestamp(ts.type):
            try:
                ts = pa.array(
                    [_naive_utc(value, "ts") for value in ts.to_pylist()], pa.timestamp("us")
                )
            except InvalidRecordError as error:
                raise InvalidRecordError(f"decision {error}") from error
        table = table.set_column(table.column_names.index("ts"), "ts", ts)
        try:
            table = table.select(_DECISION_SCHEMA.names).cast(_DECISION_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise InvalidRecordError(f"decisions have the wrong column types: {error}") from error
        probability = table.column("probability").to_numpy()
        if not ((probability >= 0) & (probability <= 1)).all():
            raise InvalidRecordError("decision probability must lie in [0, 1]")
        now = self._now()
        n = table.num_rows
        if impressions:
            events = pa.table(
                {
                    "event_id": table.column("decision_id"),
                    "type": pa.array(["impression"] * n, pa.string()),
                    "campaign_id": table.column("campaign_id"),
                    "variant_id": table.column("variant_id"),
                    "decision_id": table.column("decision_id"),
                    "segment": table.column("segment"),
                    "ts": table.column("ts"),
                    "value": pa.array([0.0] * n, pa.float64()),
                }
            )
        else:
            events = pa.table({name: pa.array([], pa.string()) for name in _io.REQUIRED_COLUMNS})
        job = IngestJob(
            events=_io.to_canonical(events),
            source="decisions",
            received_at=now,
            max_ts=now + FUTURE_TOLERANCE,
            max_errors=0,
            decisions=table,
        )
        self._db().writer.submit(job)

    # -- statistics ------------------------------------------------------------------------

    def arm_stats(
        self,
        campaign_id: str,
        *,
        segment: str | None = None,
        since: datetime | None = None,
        half_life: timedelta | None = None,
        by_segment: bool = False,
    ) -> pl.DataFrame:
        """Deduplicated impressions, clicks, conversions and conversion value per variant.

        Reads the per-hour aggregate rows written with the events (a few rows per variant and
        hour), not the event log, so it stays fast with tens of millions of events.

        Args:
            campaign_id: the campaign.
            segment: only events of this segment.
            since: only events with ``ts >= since`` (exact: the partial first hour is read from
                the log).
            half_life: weight each event by ``0.5 ** (age / half_life)`` (age measured from the
                store's clock); counts become floats. Events of one hour are weighted at their
                mean time: for a half-life of ``h`` hours the relative error is at most
                ``0.06 / h**2`` (``0.02 / h**2`` for events spread evenly over the hour).
            by_segment: one row per (variant, segment) seen, instead of one per variant.

        Returns:
            ``variant_id`` [, ``segment``], ``impressions``, ``clicks``, ``conversions`` (Int64, or
            Float64 when discounted), ``value`` (Float64); every variant of the campaign appears,
            with zeros when it has no events; rows in variant creation order.
        """
        params: dict[str, Any] = {"campaign": campaign_id, "segment": segment}
        since_hour = None
        parts = [
            """SELECT variant_id, segment, type, n::DOUBLE AS n, value,
                      epoch_us(hour) / 1e6 + ts_offset_sum / n AS t
               FROM event_aggregates
               WHERE campaign_id = $campaign AND ($segment IS NULL OR segment = $segment)
                 AND ($since_hour IS NULL OR hour >= $since_hour)"""
        ]
        if since is not None:
            since = _naive_utc(since, "since")
            floor = since.replace(minute=0, second=0, microsecond=0)
            since_hour = floor if floor == since else floor + timedelta(hours=1)
            if since_hour != since:
                params["since"] = since
                parts.append(
                    """SELECT variant_id, segment, type, 1.0 AS n, value, epoch_us(ts) / 1e6 AS t
                       FROM events
                       WHERE campaign_id = $campaign AND ($segment IS NULL OR segment = $segment)
                         AND ts >= $since AND ts < $since_hour"""
                )
        params["since_hour"] = since_hour
        if half_life is not None:
            seconds = half_life.total_seconds()
            if not seconds > 0:
                raise ValueError(f"half_life must be positive, got {half_life!r}")
            params["now"] = self._now().replace(tzinfo=UTC).timestamp()
            params["half_life"] = seconds
            weight = "pow(2.0, -($now - t) / $half_life)"
            count_type, value_type = "DOUBLE", "DOUBLE"
        else:
            weight = "1.0"
            count_type, value_type = "BIGINT", "DOUBLE"
        union = " UNION ALL ".join(parts)
        sums = ", ".join(
            f"coalesce(sum(p.{column} * {weight}) FILTER (WHERE p.type = '{kind}'), 0)::{cast} "
            f"AS {name}"
            for column, kind, cast, name in [
                ("n", "impression", count_type, "impressions"),
                ("n", "click", count_type, "clicks"),
                ("n", "conversion", count_type, "conversions"),
                ("value", "conversion", value_type, "value"),
            ]
        )
        if by_segment:
            sql = f"""
                WITH p AS ({union}),
                     v AS (SELECT variant_id, created_at FROM variants
                           WHERE campaign_id = $campaign),
                     s AS (SELECT DISTINCT segment FROM p)
                SELECT v.variant_id, s.segment, {sums}
                FROM v CROSS JOIN s
                LEFT JOIN p
                    ON p.variant_id = v.variant_id AND p.segment IS NOT DISTINCT FROM s.segment
                GROUP BY v.variant_id, v.created_at, s.segment
                ORDER BY v.created_at, v.variant_id, s.segment NULLS FIRST"""
        else:
            sql = f"""
                WITH p AS ({union}),
                     v AS (SELECT variant_id, created_at FROM variants
                           WHERE campaign_id = $campaign)
                SELECT v.variant_id, {sums}
                FROM v LEFT JOIN p ON p.variant_id = v.variant_id
                GROUP BY v.variant_id, v.created_at
                ORDER BY v.created_at, v.variant_id"""
        used = {name: value for name, value in params.items() if f"${name}" in sql}
        return self._db().reader().sql(sql, params=used).pl()

    def decision_stats(self, campaign_id: str) -> pl.DataFrame:
        """Per variant: how many decisions chose it and the sum of their assignment probabilities.

        Returns:
            ``variant_id``, ``decisions`` (Int64), ``expected_share_sum`` (Float64); every variant
            of the campaign appears.
        """
        sql = """
            SELECT v.variant_id, coalesce(sum(d.n), 0)::BIGINT AS decisions,
                   coalesce(sum(d.probability_sum), 0)::DOUBLE AS expected_share_sum
            FROM variants AS v
            LEFT JOIN decision_aggregates AS d
                ON d.campaign_id = v.campaign_id AND d.variant_id = v.variant_id
            WHERE v.campaign_id = ?
            GROUP BY v.variant_id, v.created_at ORDER BY v.created_at, v.variant_id"""
        return self._db().reader().sql(sql, params=[campaign_id]).pl()

    def data_quality(self, campaign_id: str) -> dict[str, Any]:
        """Problems in the campaign's event stream; nothing here is ever dropped from the log.

        Returns:
            ``orphan_clicks`` / ``orphan_conversions``: clicks / conversions carrying a
            decision_id for which no impression is stored (yet); ``unattributed_events``: clicks
            and conversions without a decision_id (they cannot be checked);
            ``clicks_exceed_impressions``: variant ids with more clicks than impressions;
            ``events_for_retired_variants``: events stamped after their variant was retired;
            ``duplicate_deliveries``: valid rows received again and not stored;
            ``rejected_rows``: invalid rows received.
        """
        reader = self._db().reader()
        orphans = reader.execute(
            """WITH shown AS (
                   SELECT DISTINCT decision_id FROM events
                   WHERE campaign_id = $c AND type = 'impression' AND decision_id IS NOT NULL)
               SELECT
                   count(*) FILTER (WHERE e.type = 'click' AND e.decision_id IS NOT NULL
                                    AND s.decision_id IS NULL),
                   count(*) FILTER (WHERE e.type = 'conversion' AND e.decision_id IS NOT NULL
                                    AND s.decision_id IS NULL),
                   count(*) FILTER (WHERE e.decision_id IS NULL)
               FROM events AS e LEFT JOIN shown AS s ON s.decision_id = e.decision_id
               WHERE e.campaign_id = $c AND e.type IN ('click', 'conversion')""",
            {"c": campaign_id},
        ).fetchall()[0]
        (late,) = reader.execute(
            """SELECT count(*) FROM events AS e
               JOIN variants AS v ON v.campaign_id = e.campaign_id AND v.variant_id = e.variant_id
               WHERE e.campaign_id = $c AND v.status = 'retired' AND e.ts > v.retired_at""",
            {"c": campaign_id},
        ).fetchall()[0]
        duplicates, rejected = reader.execute(
            "SELECT coalesce(sum(duplicates), 0), coalesce(sum(rejected), 0) FROM ingest_log "
            "WHERE campaign_id = ?",
            [campaign_id],
        ).fetchall()[0]
        stats = self.arm_stats(campaign_id)
        exceed = stats.filter(pl.col("clicks") > pl.col("impressions"))["variant_id"].to_list()
        return {
            "orphan_clicks": int(orphans[0]),
            "orphan_conversions": int(orphans[1]),
            "unattributed_events": int(orphans[2]),
            "clicks_exceed_impressions": exceed,
            "events_for_retired_variants": int(late),
            "duplicate_deliveries": int(duplicates),
            "rejected_rows": int(rejected),
        }

    # -- model versions --------------------------------------------------------------------

    def add_model_version(self, record: dict) -> None:
        """Record a trained model version (``version, path, base, parent, data_hash, metrics``).

        Raises:
            ConflictError: the version exists already.
        """
        version = _require(record, "version", "model version")
        row = [
            version,
            None if record.get("path") is None else str(record["path"]),
            record.get("base"),
            record.get("parent"),
            record.get("data_hash"),
            _json(record.get("metrics") or {}, "metrics"),
            _naive_utc(record.get("created_at") or self._now(), "created_at"),
        ]

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if connection.execute(
                "SELECT 1 FROM model_versions WHERE version = ?", [version]
            ).fetchall():
                raise ConflictError(f"model version {version} already exists")
            connection.execute("INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        self._write(write)

    @staticmethod
    def _decode_model(row: dict) -> dict:
        row["metrics"] = _unjson(row["metrics"], {})
        return row

    def model_versions(self) -> list[dict]:
        """Every recorded model version, oldest first."""
        rows = _rows(self._read("SELECT * FROM model_versions ORDER BY created_at, version"))
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
            if not connection.execute(
                "SELECT 1 FROM model_versions WHERE version = ?", [version]
            ).fetchall():
                raise NotFoundError(f"no model version {version}")
            connection.execute(
                "INSERT INTO model_promotions VALUES (?, 'promote', ?)", [version, now]
            )

        self._write(write)

    def _model_with_promotion(self, version: str, promoted_at: datetime) -> dict:
        rows = _rows(self._read("SELECT * FROM model_versions WHERE version = ?", [version]))
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

    # -- API keys and job runs -------------------------------------------------------------

    def add_api_key(self, *, tenant: str, key_hash: str, admin: bool = False) -> None:
        """Store the hash of an API key for ``tenant``.

        Raises:
            ConflictError: the hash is stored already.
        """
        _require({"tenant": tenant, "key_hash": key_hash}, "tenant", "api key")
        _require({"key_hash": key_hash}, "key_hash", "api key")
        now = self._now()

        def write(connection: duckdb.DuckDBPyConnection) -> None:
            if connection.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = ?", [key_hash]
            ).fetchall():
                raise ConflictError("an API key with this hash already exists")
            connection.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?)", [key_hash, tenant, bool(admin), now]
            )

        self._write(write)

    def api_key(self, key_hash: str) -> dict | None:
        """``{"tenant", "admin", "created_at"}`` for a stored key hash, else None."""
        rows = _rows(
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
            _require({"job": job}, "job", "job run"),
            _naive_utc(started_at, "started_at"),
            None if ended_at is None else _naive_utc(ended_at, "ended_at"),
            _require({"outcome": outcome}, "outcome", "job run"),
            error,
            _json(detail, "detail"),
        ]
        self._write(
            lambda connection: connection.execute(
                "INSERT INTO job_runs VALUES (?, ?, ?, ?, ?, ?)", row
            )
        )

    def job_runs(self, job: str | None = None) -> list[dict]:
        """Recorded job runs (of ``job`` when given), oldest first."""
        rows = _rows(
            self._read(
                "SELECT * FROM job_runs WHERE ? IS NULL OR job = ? ORDER BY started_at, rowid",
                [job, job],
            )
        )
        for row in rows:
            row["detail"] = _unjson(row["detail"])
        return rows
