"""What the engine, the service, the CLI and the scheduler ask of a store, and opening one by URL.

Two backends implement :class:`StoreBackend`:

- ``duckdb:///abs/path/adloop.duckdb`` (or a plain path): :class:`adloop.storage.Store`, one
  embedded DuckDB file, one writing process (the default);
- ``postgresql://user@host:port/db``: :class:`adloop.storage.PostgresStore`, a PostgreSQL
  database that several processes (e.g. several ``adloop serve``) open at once.

The same contract tests (``tests/test_store_contract.py``) run against both.

Example:
    >>> with open_store("duckdb:///tmp/adloop.duckdb") as store:  # doctest: +SKIP
    ...     store.campaigns()
    []
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import unquote, urlsplit

import polars as pl

from adloop.storage.errors import InvalidArgumentError
from adloop.storage.result import AppendResult

__all__ = ["StoreBackend", "open_store", "redact_url", "store_identity"]

#: URL schemes of PostgreSQL (as libpq and SQLAlchemy spell them).
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@runtime_checkable
class StoreBackend(Protocol):
    """The store's public surface: campaigns and variants, reviews, the event log, statistics,
    model versions, API keys and job runs. Timestamps are naive UTC datetimes throughout."""

    #: True when other processes may write to the same store at the same time (PostgreSQL),
    #: so a process must read what it did not write itself (e.g. another one's campaigns).
    shared: bool

    # -- lifecycle
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def flush(self) -> None: ...
    def write_health(self) -> Any: ...

    # -- campaigns and variants
    def insert_campaign(self, campaign: dict, variants: list[dict]) -> None: ...
    def insert_variants(self, campaign_id: str, variants: list[dict]) -> None: ...
    def campaign(self, campaign_id: str) -> dict | None: ...
    def campaigns(self, tenant: str | None = None) -> list[dict]: ...
    def variants(self, campaign_id: str, statuses: Iterable[str] | None = None) -> list[dict]: ...
    def set_campaign_status(
        self, campaign_id: str, status: str, *, winner_variant_id: str | None = None
    ) -> None: ...
    def set_variant_status(self, campaign_id: str, variant_id: str, status: str) -> None: ...

    # -- reviews
    def review_variant(
        self, campaign_id: str, variant_id: str, action: str, *, reviewer: str, note: str | None
    ) -> dict: ...
    def variant_reviews(self, campaign_id: str) -> list[dict]: ...

    # -- the event log
    def append_events(
        self, batch: Any, *, max_errors: int = ..., source: str = ...
    ) -> AppendResult: ...
    def submit_events(
        self, batch: Any, *, max_errors: int = ..., source: str = ...
    ) -> Future[AppendResult]: ...
    def log_decisions(self, decisions: list[dict] | pl.DataFrame, *, impressions: bool) -> None: ...
    def decision_id_secret(self) -> bytes: ...

    # -- statistics
    def arm_stats(
        self,
        campaign_id: str,
        *,
        segment: str | None = None,
        since: datetime | None = None,
        half_life: timedelta | None = None,
        by_segment: bool = False,
    ) -> pl.DataFrame: ...
    def decision_stats(self, campaign_id: str) -> pl.DataFrame: ...
    def data_quality(self, campaign_id: str) -> dict[str, Any]: ...

    # -- model versions
    def add_model_version(self, record: dict) -> None: ...
    def model_versions(self) -> list[dict]: ...
    def promote_model(self, version: str) -> None: ...
    def current_model(self) -> dict | None: ...
    def rollback_model(self) -> dict | None: ...

    # -- API keys and job runs
    def add_api_key(
        self,
        *,
        tenant: str,
        key_hash: str,
        admin: bool = False,
        expires_at: datetime | None = None,
    ) -> None: ...
    def api_key(self, key_hash: str) -> dict | None: ...
    def api_keys(self, tenant: str | None = None) -> list[dict]: ...
    def revoke_api_key(self, key_id: str) -> dict: ...
    def record_job_run(
        self,
        *,
        job: str,
        started_at: datetime,
        ended_at: datetime | None,
        outcome: str,
        error: str | None = None,
        detail: dict | None = None,
    ) -> None: ...
    def job_runs(self, job: str | None = None) -> list[dict]: ...


def store_identity(store: StoreBackend) -> str:
    """A short, stable name of this store's data (16 hex digits), the same from every process.

    Derived from the store's own secret (:meth:`StoreBackend.decision_id_secret`), so a copy
    of the database file keeps it and two databases never share it; it reveals nothing of the
    secret. Files kept outside the database per store (model versions) live under it.

    Example:
        >>> store_identity(store)  # doctest: +SKIP
        '3f9a0c1d2b4e5f60'
    """
    import hashlib

    return hashlib.sha256(b"adloop store identity\0" + store.decision_id_secret()).hexdigest()[:16]


def open_store(url: str | Path, *, clock: Callable[[], datetime] | None = None) -> StoreBackend:
    """Open the store ``url`` names: ``duckdb:///abs/path``, a plain path, or ``postgresql://…``.

    Args:
        url: where the store lives. A plain path (``str`` or :class:`~pathlib.Path`) opens
            the DuckDB file, exactly as ``Store(path)`` does; ``duckdb:///abs/path`` names one
            by URL (three slashes and an absolute path); ``postgresql://user@host:port/db``
            (also ``postgres://``) opens a PostgreSQL database with psycopg 3.
        clock: returns "now" as a naive UTC datetime (see :class:`adloop.storage.Store`).

    Raises:
        InvalidArgumentError: the URL's scheme is none of duckdb, postgresql; or a
            ``duckdb://`` URL names no absolute path.
        StorageError: the store cannot be opened (e.g. ``psycopg`` is not installed:
            ``pip install 'adloop[scale]'``).

    Example:
        >>> store = open_store("postgresql://adloop@127.0.0.1:5432/adloop")  # doctest: +SKIP
        >>> store = open_store("adloop.duckdb")  # doctest: +SKIP
    """
    from adloop.storage.store import Store

    if isinstance(url, Path):
        return Store(url, clock=clock)
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgumentError(f"store URL must be a non-empty string or path, got {url!r}")
    scheme, separator, _ = url.partition("://")
    if not separator or "/" in scheme or "\\" in scheme or len(scheme) < 2:
        return Store(url, clock=clock)  # a plain path (``C:\\`` has a one-letter "scheme")
    scheme = scheme.lower()
    if scheme == "duckdb":
        path = unquote(urlsplit(url).path)
        if urlsplit(url).netloc or not path.startswith("/"):
            raise InvalidArgumentError(
                f"store URL {redact_url(url)!r}: write duckdb:///absolute/path/to/file.duckdb "
                "(three slashes, then an absolute path), or give the plain path"
            )
        return Store(path, clock=clock)
    if scheme in POSTGRES_SCHEMES:
        from adloop.storage.postgres import PostgresStore

        return PostgresStore(url, clock=clock)
    raise InvalidArgumentError(
        f"store URL {redact_url(url)!r}: unknown scheme {scheme!r} (expected duckdb:///abs/path, "
        "postgresql://… or a plain file path)"
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and reprs).

    Example:
        >>> redact_url("postgresql://ann:secret@db:5432/adloop")
        'postgresql://ann:***@db:5432/adloop'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
