"""adloop's event store: one DuckDB file with campaigns, variants and an append-only event log.

Example:
    >>> from adloop.storage import Store
    >>> with Store("adloop.duckdb") as store:  # doctest: +SKIP
    ...     result = store.append_events(read_events_file("events.csv"))
"""

from adloop.storage.errors import (
    ConflictError,
    InvalidArgumentError,
    InvalidBatchError,
    InvalidRecordError,
    NotFoundError,
    SchemaError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    UnreadableFileError,
    WriterStoppedError,
)
from adloop.storage.io import read_events_file
from adloop.storage.result import AppendResult, RowError
from adloop.storage.store import Store, utc_now

__all__ = [
    "AppendResult",
    "ConflictError",
    "InvalidArgumentError",
    "InvalidBatchError",
    "InvalidRecordError",
    "NotFoundError",
    "RowError",
    "SchemaError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "UnreadableFileError",
    "WriterStoppedError",
    "read_events_file",
    "utc_now",
]
