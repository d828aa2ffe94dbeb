"""Helpers of the store's parts: checking and encoding record fields, reading rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb

from adloop.storage.errors import InvalidRecordError

#: Returns "now" as a naive UTC datetime (the store's clock).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time as a timezone-naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


def encode_json(value: Any, field: str) -> str | None:
    """``value`` as JSON text (None stays None); names ``field`` when it cannot be encoded."""
    if value is None:
        return None
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise InvalidRecordError(f"{field} is not JSON-serialisable: {error}") from error


def decode_json(text: str | None, default: Any = None) -> Any:
    """The value stored as JSON ``text``, or ``default`` when none was stored."""
    return default if text is None else json.loads(text)


def require(record: dict, field: str, kind: str) -> Any:
    """``record[field]``, which a ``kind`` record must have (not None, not blank)."""
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRecordError(f"{kind} field {field!r} is missing or empty (got {value!r})")
    return value


def one_of(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    """``value`` when it is one of ``allowed``, else an error naming ``field``."""
    if value not in allowed:
        raise InvalidRecordError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def naive_utc(value: Any, field: str) -> datetime:
    """A datetime or ISO string as a naive UTC datetime (zoned values are converted)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as error:
            raise InvalidRecordError(f"{field} is not an ISO timestamp: {value!r}") from error
    if not isinstance(value, datetime):
        raise InvalidRecordError(f"{field} must be a datetime, got {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def fetch_dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The cursor's remaining rows, each as a dict keyed by column name."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def exists(connection: duckdb.DuckDBPyConnection, sql: str, params: list) -> bool:
    """Whether ``sql`` (a ``SELECT 1 ...`` lookup) returns any row."""
    return bool(connection.execute(sql, params).fetchall())
