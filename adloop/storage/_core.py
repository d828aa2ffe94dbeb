"""What every part of the store shares: the open file, the clock, and how to read and write."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import duckdb

from adloop.storage._database import Database
from adloop.storage._fields import Clock, naive_utc, utc_now
from adloop.storage._writer import CallJob, WriterHealth
from adloop.storage.errors import StoreClosedError, storage_fault


class StoreCore:
    """The store's lifecycle and its read/write primitives; each part of ``Store`` builds on it.

    Writes run as functions of the write connection on the file's writer thread (``_write``
    waits for their commit); reads use this thread's own connection (``_read``).
    """

    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self._clock: Clock = clock or utc_now
        self._database: Database | None = Database.acquire(self.path)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Commit everything queued, stop the writer (if no other Store shares it), close.

        Raises:
            StorageUnavailableError: queued chooser decisions could not be written even by a
                last retry (the file is closed all the same); the message says how many.
        """
        database, self._database = self._database, None
        if database is not None:
            database.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def _db(self) -> Database:
        if self._database is None:
            raise StoreClosedError(f"the store for {self.path} is closed")
        return self._database

    def _now(self) -> datetime:
        return naive_utc(self._clock(), "clock()")

    def _write(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        future: Future = Future()
        self._db().writer.submit(CallJob(fn=fn, future=future))
        return future.result()

    def _read(self, sql: str, params: list | None = None) -> duckdb.DuckDBPyConnection:
        database = self._db()
        try:
            return database.reader().execute(sql, params or [])
        except duckdb.Error as error:
            fault = storage_fault(error)
            if fault is None:
                raise
            database.writer.probe()  # e.g. an invalidated database: the writer reopens it
            raise fault from error

    def flush(self) -> None:
        """Wait until everything queued so far (e.g. by :meth:`log_decisions`) is committed.

        While the storage is failing, chooser decisions that could not be written are kept
        and retried rather than committed; :meth:`write_health` counts them.
        """
        self._write(lambda connection: None)

    def write_health(self) -> WriterHealth:
        """Whether writes work: the current storage fault, and the decisions kept for a retry.

        Example:
            >>> store.write_health().fault is None  # doctest: +SKIP
            True
        """
        return self._db().writer.health()
