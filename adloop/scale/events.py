"""Events on the wire: Arrow IPC messages of at least a hundred events, checked as columns.

A message on the events topic is one Arrow IPC stream holding one record batch of
:data:`EVENT_SCHEMA` (``event_id, type, campaign_id, variant_id, segment, ts, value``), all of
one campaign (the message key, so a campaign's events stay in one partition, in order).
:func:`check_events` applies the ingest rules that need no database (types, required ids,
value range, timestamps) to whole columns at once; campaign and variant ids are checked
against the registered arms inside the aggregation's transaction.

Example
-------
>>> table = events_table([{"event_id": "e1", "type": "click", "campaign_id": "c",
...                        "variant_id": "v", "ts": "2026-01-01T00:00:00"}])
>>> good, bad = check_events(decode(encode(table)))
>>> good.num_rows, bad.num_rows
(1, 0)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adloop.storage import MAX_EVENT_VALUE
from adloop.storage.io import to_canonical

__all__ = ["EVENT_SCHEMA", "EVENT_TYPES", "check_events", "decode", "encode", "events_table"]

EVENT_TYPES = ("impression", "click", "conversion")
MAX_ID_LENGTH = 200

EVENT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("type", pa.string()), ("campaign_id", pa.string()),
    ("variant_id", pa.string()), ("segment", pa.string()), ("ts", pa.timestamp("us")),
    ("value", pa.float64()),
])  # fmt: skip


def _timestamp(value: Any) -> datetime | None:
    """An ISO 8601 text as naive UTC (zoned values converted), or None when it does not parse."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _number(value: str | None) -> float:
    """A value's text as a number: empty is 0, unreadable is NaN (rejected as ``value``)."""
    if value is None or not value.strip():
        return 0.0
    try:
        return float(value)
    except ValueError:
        return math.nan


def events_table(events: Any) -> pa.Table:
    """Events in any shape the store takes (dicts as the HTTP API takes them, an Arrow table, a
    polars frame) as a table of :data:`EVENT_SCHEMA`, read by the store's own
    :func:`~adloop.storage.io.to_canonical`.

    A timestamp or value that does not parse becomes null or NaN, which :func:`check_events`
    rejects with the field named; a missing value is 0.
    """
    table = to_canonical(events)
    ts = [
        native if native is not None else (None if text is None else _timestamp(text))
        for native, text in zip(table["ts_native"].to_pylist(), table["ts_text"].to_pylist(),
                                strict=True)
    ]  # fmt: skip
    value = [
        number if number is not None else _number(text)
        for number, text in zip(table["value_num"].to_pylist(), table["value_text"].to_pylist(),
                                strict=True)
    ]  # fmt: skip
    return pa.table(
        {
            "event_id": table["event_id"], "type": table["type"],
            "campaign_id": table["campaign_id"], "variant_id": table["variant_id"],
            "segment": pc.fill_null(table["segment"], ""),
            "ts": pa.array(ts, pa.timestamp("us")), "value": pa.array(value, pa.float64()),
        },
        schema=EVENT_SCHEMA,
    )  # fmt: skip


def encode(table: pa.Table) -> bytes:
    """One Arrow IPC stream (the message value)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EVENT_SCHEMA) as writer:
        writer.write_table(table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA))
    return sink.getvalue().to_pybytes()


def decode(payload: bytes) -> pa.Table:
    """The table of one message; a payload that is not an events stream raises ``ValueError``."""
    try:
        table = pa.ipc.open_stream(payload).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"not an Arrow IPC events message: {error}") from error
    if table.schema.names != EVENT_SCHEMA.names:
        raise ValueError(f"events message has columns {table.schema.names}")
    return table


def check_events(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(valid rows, rejected rows with ``field`` and ``reason``), by the ingest's rules."""
    n = table.num_rows
    field = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)

    def flag(bad: pa.Array | pa.ChunkedArray, name: str, why: str) -> None:
        mask = np.asarray(pc.fill_null(bad, True)) & (field == "")
        field[mask], reason[mask] = name, why

    for name in ("event_id", "campaign_id", "variant_id"):
        length = pc.utf8_length(table[name])
        flag(pc.or_(pc.equal(length, 0), pc.greater(length, MAX_ID_LENGTH)), name,
             f"required, 1 to {MAX_ID_LENGTH} characters")  # fmt: skip
    flag(pc.invert(pc.is_in(table["type"], pa.array(EVENT_TYPES))), "type",
         "must be impression, click or conversion")  # fmt: skip
    flag(pc.is_null(table["ts"]), "ts", "missing or not an ISO 8601 timestamp")
    value = table["value"]
    finite = pc.and_(pc.is_finite(value), pc.greater_equal(value, 0.0))
    flag(pc.invert(pc.and_(finite, pc.less_equal(value, MAX_EVENT_VALUE))), "value",
         f"must be a finite number in [0, {MAX_EVENT_VALUE:g}]")  # fmt: skip
    bad = field != ""
    rejected = table.filter(pa.array(bad))
    rejected = rejected.append_column("field", pa.array(field[bad].tolist(), pa.string()))
    rejected = rejected.append_column("reason", pa.array(reason[bad].tolist(), pa.string()))
    return table.filter(pa.array(~bad)), rejected
