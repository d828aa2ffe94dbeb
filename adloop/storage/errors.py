"""Errors raised by :mod:`adloop.storage`.

Hierarchy::

    StorageError                 base class; catch this to handle any storage failure
    ├── StoreLockedError         another process holds the database file
    ├── StoreClosedError         the store was used after ``close()``
    ├── WriterStoppedError       the writer thread has ended (also a ``RuntimeError``)
    ├── StorageUnavailableError  the storage failed under a write (I/O error, database
    │   │                        invalidated); the store heals itself once the cause is gone
    │   └── StorageFullError     the disk (or quota) holding the database file is full
    ├── SchemaError              the file's schema is newer than this code, or a migration failed
    ├── ConflictError            a row with the same id already exists (campaign, variant, ...)
    ├── NotFoundError            a campaign, variant or model version does not exist
    ├── InvalidRecordError       a campaign/variant/decision record is malformed
    │   └── InvalidBatchError    an event batch is not rows or a table (also a ``TypeError``)
    ├── InvalidArgumentError     a query argument is out of range (also a ``ValueError``)
    └── UnreadableFileError      an events file is none of CSV, Parquet or NDJSON

The errors that also derive from a built-in exception replaced a bare built-in raise, so code
that caught the built-in keeps working.

Rejected *event rows* are not exceptions: ``Store.append_events`` ingests the good rows and
reports each bad one as a :class:`adloop.storage.RowError`.
"""

from __future__ import annotations

import errno
from pathlib import Path

import duckdb

__all__ = [
    "ConflictError",
    "InvalidArgumentError",
    "InvalidBatchError",
    "InvalidRecordError",
    "NotFoundError",
    "SchemaError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
    "StoreClosedError",
    "StoreLockedError",
    "UnreadableFileError",
    "WriterStoppedError",
    "storage_fault",
]


class StorageError(Exception):
    """Base class of every error raised by :mod:`adloop.storage`."""


class StoreLockedError(StorageError):
    """Another process holds the write lock on the database file.

    Attributes:
        path: the database file.
        pid: the process id holding the lock, when DuckDB reported it.
    """

    def __init__(self, path: Path, pid: int | None, detail: str = "") -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        message = (
            f"the database file {path} is in use by {holder}. DuckDB allows one writing "
            f"process per file. Stop that process first (for example the `adloop serve` server "
            f"or a running simulation), or, if it is an `adloop serve` server, send your events "
            f"through its HTTP API instead of opening the file; or point --db at a different file."
        )
        if detail:
            message += f" (DuckDB said: {detail})"
        super().__init__(message)


class StoreClosedError(StorageError):
    """The store was used after :meth:`adloop.storage.Store.close`."""


class WriterStoppedError(StorageError, RuntimeError):
    """The writer thread of the database file has ended, so no write can be queued."""


class SchemaError(StorageError):
    """The database schema cannot be used by this version of adloop."""


class ConflictError(StorageError):
    """A record with the same identifier already exists."""


class NotFoundError(StorageError):
    """A campaign, variant or model version that was named does not exist."""


class InvalidRecordError(StorageError):
    """A campaign, variant, decision or model record is malformed; the message names the field."""


class InvalidBatchError(InvalidRecordError, TypeError):
    """An event batch is neither a list of mappings nor a table (e.g. one dict on its own)."""


class InvalidArgumentError(StorageError, ValueError):
    """A query argument is out of range; the message names the argument and its value."""


class UnreadableFileError(StorageError):
    """An events file could not be parsed as CSV, Parquet or NDJSON."""


class StorageUnavailableError(StorageError):
    """The storage failed under a write: an I/O error, or DuckDB invalidated the database.

    Nothing of the failed write was committed. The store keeps its fire-and-forget work
    (chooser decisions) queued and retries it, and reopens an invalidated database, so it
    recovers without a restart once the cause is gone. ``cause`` is the storage's own words;
    ``needs_reopen`` is True when only a new connection can use the database again.
    """

    needs_reopen = False

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(
            f"the database storage is unavailable: {cause}. Nothing of this write was "
            "stored; retry later (the service recovers by itself once the cause is fixed)"
        )


class StorageFullError(StorageUnavailableError):
    """The filesystem (or quota) holding the database file is full; free space to recover."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        StorageError.__init__(
            self,
            f"the disk holding the database is full: {cause}. Nothing of this write was "
            "stored; free disk space (the service recovers by itself, no restart needed)",
        )


# DuckDB reports OS errors as text; these are its phrasings of "the disk is full" ...
_FULL_MARKERS = ("no space left on device", "disk quota exceeded", "not enough space")
# ... and of a database it has invalidated (every later statement fails until a reopen).
_INVALIDATED_MARKERS = ("database has been invalidated", "must be restarted", "fatal error")


def storage_fault(error: BaseException) -> StorageUnavailableError | None:
    """The storage fault behind ``error``, or None when ``error`` is not the storage's fault.

    A write can fail because of what it asked for (a duplicate id, a malformed record) or
    because the storage under it failed: a full disk (:class:`StorageFullError`), an I/O
    error or a database DuckDB has invalidated (:class:`StorageUnavailableError`). Only the
    second kind is a fault; the service answers it 507/503.

    Example:
        >>> storage_fault(OSError(28, "No space left on device")).__class__.__name__
        'StorageFullError'
    """
    if isinstance(error, StorageUnavailableError):
        return error
    text = str(error).strip()
    lowered = text.lower()
    cause = text.splitlines()[0] if text else type(error).__name__
    fault: StorageUnavailableError | None = None
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        marker in lowered for marker in _FULL_MARKERS
    ):
        fault = StorageFullError(cause)
    elif (
        isinstance(error, OSError | duckdb.IOException | duckdb.FatalException)
        or any(marker in lowered for marker in _INVALIDATED_MARKERS)
        or (isinstance(error, duckdb.TransactionException) and "could not write" in lowered)
    ):
        fault = StorageUnavailableError(cause)
    if fault is not None and (
        isinstance(error, duckdb.FatalException)
        or any(marker in lowered for marker in _INVALIDATED_MARKERS)
    ):
        fault.needs_reopen = True
    return fault
