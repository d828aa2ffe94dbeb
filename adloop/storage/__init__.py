"""adloop's event store: campaigns, variants and an append-only event log, in one DuckDB file
(``Store``, the default) or a PostgreSQL database several processes share (``PostgresStore``);
``open_store(url)`` opens either by URL.

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
from adloop.storage.interface import StoreBackend, open_store, store_identity
from adloop.storage.io import read_events_file
from adloop.storage.postgres import PostgresStore
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
    "PostgresStore",
    "RowError",
    "SchemaError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
    "Store",
    "StoreBackend",
    "StoreClosedError",
    "StoreLockedError",
    "UnreadableFileError",
    "WriterStoppedError",
    "open_store",
    "read_events_file",
    "storage_fault",
    "store_identity",
    "utc_now",
]
