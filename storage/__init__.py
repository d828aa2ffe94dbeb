"""adloop's event store: one DuckDB file with campaigns, variants and an append-only event log.

Example:
    >>> from adloop.storage import Store
    >>> with Store("adloop.duckdb") as store:  # doctest: +SKIP
    ...     result = store.append_events(read_events_file("events.csv"))
"""

from adloop.storage.errors import (
    ConflictError,
    InvalidRecordError,
    NotFoundError,
    SchemaError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    UnreadableFileError,
)
from adloop.storage.io import read_events_file
from adloop.storage.result import AppendResult, RowError
from adloop.storage.store import Store, utc_now

__all__ = [
    "AppendResult",
    "ConflictError",
    "InvalidRecordError",
    "NotFoundError",
    "RowError",
    "SchemaError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "UnreadableFileError",
    "read_events_file",
    "utc_now",
]
