"""adloop's event store: one DuckDB file with campaigns, variants and an append-only event log.

Example:
    >>> from storage import Store
    >>> with Store("adloop.duckdb") as store:  # doctest: +SKIP
    ...     result = store.append_events(read_events_file("events.csv"))
"""

from storage.errors import (
    ConflictError,
    InvalidRecordError,
    NotFoundError,
    SchemaError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    UnreadableFileError,
)
from storage.io import read_events_file
from storage.result import AppendResult, RowError
from storage.store import Store, utc_now

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
