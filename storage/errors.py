"""Errors raised by :mod:`adloop.storage`.

Hierarchy::

    StorageError                 base class; catch this to handle any storage failure
    ├── StoreLockedError         another process holds the database file
    ├── StoreClosedError         the store was used after ``close()``
    ├── WriterStoppedError       the writer thread has ended (also a ``RuntimeError``)
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

from pathlib import Path

__all__ = [
    "ConflictError",
    "InvalidArgumentError",
    "InvalidBatchError",
    "InvalidRecordError",
    "NotFoundError",
    "SchemaError",
    "StorageError",
    "StoreClosedError",
    "StoreLockedError",
    "UnreadableFileError",
    "WriterStoppedError",
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
