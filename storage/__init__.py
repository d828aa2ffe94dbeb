"""adloop's event store: one DuckDB file with campaigns, variants and an append-only event log.

Example:
    >>> from adloop.storage import Store
    >>> with Store("adloop.duckdb") as store:  # doctest: +SKIP
    ...     result = store.append_events(read_events_file("events.csv"))
"""

from adloop.storage._validate import MAX_EVENT_VALUE
from adloop.storage.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidBatchError,
    InvalidRecordError,
    NotFoundError,
    SchemaError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    StoreClosedError,
    StoreLockedError,
    UnreadableFileError,
    WriterStoppedError,
    storage_fault,
)
from adloop.storage.io import read_events_file
from adloop.storage.result import AppendResult, RowError
from adloop.storage.store import Store, utc_now

__all__ = [
    "MAX_EVENT_VALUE",
    "AppendResult",
    "ConflictError",
    "InvalidArgumentError",
    "InvalidBatchError",
    "InvalidRecordError",
    "NotFoundError",
    "RowError",
    "SchemaError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "UnreadableFileError",
    "WriterStoppedError",
    "read_events_file",
    "storage_fault",
    "utc_now",
]
