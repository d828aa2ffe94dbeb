"""The store on PostgreSQL, which several processes (e.g. several ``adloop serve``) share.

:class:`PostgresStore` is assembled from the same parts as :class:`adloop.storage.Store`
(campaigns, reviews, events, statistics, models, admin) and runs their statements on
PostgreSQL: only the core (connections, transactions) and a few fragments of SQL
(``_dialect.POSTGRES``) differ, plus event ingest (``_pg_ingest``), which validates each row
exactly as the DuckDB writer does and deduplicates with the events' primary key.

How it keeps several writers correct:

- every write other than event ingest runs in a SERIALIZABLE transaction and is retried when
  PostgreSQL reports a serialization failure, so read-then-write steps (a review's status
  check, a promotion, "does this campaign exist?") behave as if one process ran at a time;
- event ingest runs in one READ COMMITTED transaction per batch; ``INSERT … ON CONFLICT DO
  NOTHING`` on ``(campaign_id, event_id)`` counts a duplicate once, whichever process sees it.

psycopg 3 is an optional dependency: ``pip install 'adloop[scale]'``.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb
import polars as pl

from adloop.storage import _pg_ingest
from adloop.storage._admin import AdminMixin
from adloop.storage._campaigns import VARIANT_COLUMNS, CampaignsMixin
from adloop.storage._dialect import POSTGRES, to_pyformat
from adloop.storage._events import EventsMixin
from adloop.storage._fields import Clock, utc_now
from adloop.storage._models import ModelsMixin
from adloop.storage._pg_schema import PG_SCHEMA_VERSION, SCHEMA, SCHEMA_LOCK
from adloop.storage._reviews import ReviewsMixin
from adloop.storage._stats import StatsMixin
from adloop.storage._writer import IngestJob, WriterHealth
from adloop.storage.errors import (
    ConflictError,
    SchemaError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    StoreClosedError,
)
from adloop.storage.interface import redact_url

__all__ = ["PostgresStore"]

#: A serializable write that keeps conflicting with others is tried this many times.
MAX_ATTEMPTS = 8

# PostgreSQL type OIDs of the columns statistics return, and their polars types.
_POLARS_TYPES = {20: pl.Int64, 23: pl.Int64, 701: pl.Float64, 25: pl.String, 1043: pl.String}


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    return to_pyformat(sql)


def _retryable(psycopg: Any) -> tuple[type[Exception], ...]:
    """The errors after which a transaction may simply run again."""
    errors = psycopg.errors
    return (errors.SerializationFailure, errors.DeadlockDetected, errors.TransactionRollback)


class _Statements:
    """A psycopg connection that takes the shared statements' ``?`` and ``$name`` placeholders."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, params: list | dict | None = None) -> Any:
        if params is None:
            return self.connection.execute(sql)
        return self.connection.execute(_pyformat(sql), params)

    def executemany(self, sql: str, rows: list) -> None:
        self.connection.cursor().executemany(_pyformat(sql), rows)


class _Connections:
    """One psycopg connection per thread (autocommit; a write opens its own transaction)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._psycopg = psycopg
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self.closed = False

    def get(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.broken:
            psycopg = self._psycopg
            try:
                # Client-side binding: the shared statements' ``? IS NULL`` needs no type.
                connection = psycopg.connect(
                    self.url, autocommit=True, cursor_factory=psycopg.ClientCursor
                )
                connection.execute("SET TIME ZONE 'UTC'")
            except psycopg.OperationalError as error:
                raise StorageUnavailableError(
                    f"cannot connect to {redact_url(self.url)}: {error}"
                ) from error
            with self._lock:
                self._all = [c for c in self._all if not c.closed]
                self._all.append(connection)
            self._local.connection = connection
        return connection

    def reader(self) -> _Statements:
        return _Statements(self.get())

    def close(self) -> None:
        self.closed = True
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()


class PostgresStore(CampaignsMixin, ReviewsMixin, EventsMixin, StatsMixin, ModelsMixin, AdminMixin):
    """The store's tables in a PostgreSQL database; any number of processes may open it.

    Behaves as :class:`adloop.storage.Store` does (the same validation, deduplication,
    errors and return types; the contract tests check both), except that writes are
    synchronous: ``submit_events`` returns a future that is already resolved, and
    ``log_decisions`` has committed when it returns.

    Args:
        url: ``postgresql://user[:password]@host[:port]/database`` (libpq's URL; its
            ``options=-csearch_path=…`` picks the schema the tables live in).
        clock: returns "now" as a naive UTC datetime.

    Raises:
        StorageError: psycopg is not installed (``pip install 'adloop[scale]'``).
        StorageUnavailableError: the server cannot be reached.
        SchemaError: the database was set up by a newer adloop.

    Example:
        >>> url = "postgresql://adloop@127.0.0.1:5432/adloop"
        >>> with PostgresStore(url) as store:  # doctest: +SKIP
        ...     store.campaigns()
        []
    """

    shared = True
    """Other processes write to the same database (campaigns, variants, keys, events)."""
    _dialect = POSTGRES

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        try:
            import psycopg  # noqa: F401
        except ModuleNotFoundError as error:
            raise StorageError(
                "a postgresql:// store needs psycopg 3: pip install 'adloop[scale]'"
            ) from error
        self.url = url
        self._clock = clock or utc_now
        self._connections: _Connections | None = _Connections(url)
        self._duck = threading.local()
        self._fault: StorageUnavailableError | None = None
        self._create_schema()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this store opened (each write committed when it returned)."""
        connections, self._connections = self._connections, None
        if connections is not None:
            connections.close()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    def _db(self) -> _Connections:
        if self._connections is None:
            raise StoreClosedError(f"the store for {redact_url(self.url)} is closed")
        return self._connections

    def flush(self) -> None:
        """Nothing to wait for: every write has committed when its call returns."""
        self._db()

    def write_health(self) -> WriterHealth:
        """Whether the last write reached the database (no work is ever kept for a retry)."""
        fault = self._fault
        return WriterHealth(
            fault=None if fault is None else fault.cause,
            disk_full=isinstance(fault, StorageFullError),
            deferred_rows=0,
            dropped_rows=0,
        )

    def _create_schema(self) -> None:
        connection = self._db().get()
        with self._errors(), connection.transaction():
            connection.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            connection.execute(SCHEMA)
            (current,) = connection.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
            if current > PG_SCHEMA_VERSION:
                raise SchemaError(
                    f"{redact_url(self.url)} has schema version {current}, newer than this "
                    f"adloop understands ({PG_SCHEMA_VERSION}); upgrade adloop to open it"
                )
            if current < PG_SCHEMA_VERSION:
                connection.execute(
                    "INSERT INTO schema_version VALUES (%s, %s, %s)",
                    [PG_SCHEMA_VERSION, "PostgreSQL store", utc_now()],
                )

    # -- reading and writing ---------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self):
        """Turn psycopg's errors into the store's: conflicts and storage faults."""
        import psycopg

        try:
            yield
        except psycopg.errors.UniqueViolation as error:
            raise ConflictError(f"already exists: {error.diag.message_detail or error}") from error
        except (psycopg.errors.DiskFull, psycopg.errors.OutOfMemory) as error:
            self._fault = StorageFullError(str(error).strip())
            raise self._fault from error
        except _retryable(psycopg):
            raise  # a serialization failure or deadlock: ``_write`` tries again
        except psycopg.OperationalError as error:
            self._fault = StorageUnavailableError(str(error).strip() or type(error).__name__)
            raise self._fault from error
        else:
            self._fault = None

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        import psycopg

        connection = self._db().get()
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self._errors(), connection.transaction():
                    connection.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    return fn(_Statements(connection))
            except _retryable(psycopg):
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2**attempt))  # back off, then again
        raise AssertionError("unreachable")

    def _read(self, sql: str, params: list | None = None) -> Any:
        with self._errors():
            return self._db().reader().execute(sql, params or [])

    def _frame(self, sql: str, params: dict[str, Any] | list) -> pl.DataFrame:
        with self._errors():
            cursor = self._db().reader().execute(sql, params)
            rows = cursor.fetchall()
        schema = {
            column.name: _POLARS_TYPES.get(column.type_code, pl.Float64)
            for column in cursor.description
        }
        return pl.DataFrame(rows, schema=schema, orient="row")

    def _enqueue(self, job: IngestJob) -> None:
        """Validate, deduplicate and append ``job`` now; resolve its future (if any)."""
        try:
            result = self._ingest(job)
        except BaseException as error:
            if job.future is None:
                raise
            job.future.set_exception(error)
            return
        if job.future is not None:
            job.future.set_result(result)

    def _ingest(self, job: IngestJob) -> Any:
        connection = self._db().get()
        with self._errors():
            stage = None
            if job.events.num_rows:
                stage = _pg_ingest.stage_batch(self._staging(), connection, job)
            return _pg_ingest.ingest(connection, stage, job)

    def _staging(self) -> duckdb.DuckDBPyConnection:
        """This thread's in-memory DuckDB, which stages batches as the embedded store does."""
        duck = getattr(self._duck, "connection", None)
        if duck is None:
            duck = duckdb.connect()
            duck.execute("SET TimeZone = 'UTC'")
            self._duck.connection = duck
        return duck

    @staticmethod
    def _append_variant_rows(connection: Any, rows: list[list]) -> None:
        names = ", ".join(VARIANT_COLUMNS)
        marks = ", ".join("?" * len(VARIANT_COLUMNS))
        connection.executemany(f"INSERT INTO variants ({names}) VALUES ({marks})", rows)
