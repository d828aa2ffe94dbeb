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
from adloop.storage._writer import CallJob
from adloop.storage.errors import StoreClosedError


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
        """Commit everything queued, stop the writer (if no other Store shares it), close."""
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
        return self._db().reader().execute(sql, params or [])

    def flush(self) -> None:
        """Wait until everything queued so far (e.g. by :meth:`log_decisions`) is committed."""
        self._write(lambda connection: None)
