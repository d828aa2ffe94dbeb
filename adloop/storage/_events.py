"""Queueing event batches and chooser decisions for the append-only event log."""

from __future__ import annotations

import secrets
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from adloop.storage import io as _io
from adloop.storage._core import StoreCore
from adloop.storage._fields import naive_utc
from adloop.storage._writer import IngestJob
from adloop.storage.errors import InvalidRecordError
from adloop.storage.result import AppendResult

#: Events stamped further than this ahead of the store's clock are rejected.
FUTURE_TOLERANCE = timedelta(minutes=5)
DEFAULT_MAX_ERRORS = 1000
#: The ``store_meta`` key under which the decision-id secret is kept.
_DECISION_SECRET_KEY = "decision_id_secret"

_DECISION_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("campaign_id", pa.string()),
        ("variant_id", pa.string()),
        ("segment", pa.string()),
        ("probability", pa.float64()),
        ("ts", pa.timestamp("us")),
    ]
)


#: Arrow columns that need no conversion at all (what the HTTP service and the engine send).
_TYPED_COLUMNS = {
    "event_id": pa.string(),
    "type": pa.string(),
    "campaign_id": pa.string(),
    "variant_id": pa.string(),
    "decision_id": pa.string(),
    "segment": pa.string(),
    "ts": pa.timestamp("us"),
    "value": pa.float64(),
}


_TYPED_SCHEMA = pa.schema(list(_TYPED_COLUMNS.items()))


def _typed_canonical(batch: Any) -> pa.Table | None:
    """``_io.to_canonical(batch)`` for an Arrow table already in the typed columns, else None.

    The general conversion inspects and casts each column; for the service's batches (every
    column present with exactly its type) the canonical table is assembled as is, which
    matters when thousands of small batches a second arrive.
    """
    if not isinstance(batch, pa.Table) or batch.num_rows == 0:
        return None
    schema = batch.schema
    if not schema.equals(_TYPED_SCHEMA) and (
        len(schema) != len(_TYPED_COLUMNS)
        or any(_TYPED_COLUMNS.get(field.name) != field.type for field in schema)
    ):
        return None
    n = batch.num_rows

    def column(name: str) -> pa.Array:
        chunks = batch.column(name)
        return chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()

    no_text = pa.nulls(n, pa.string())
    arrays = [pa.array(np.arange(n, dtype=np.int64))]
    arrays += [column(name) for name in _io.CANONICAL_SCHEMA.names[1:7]]
    arrays += [column("ts"), no_text, column("value"), no_text, no_text, no_text]
    return pa.Table.from_arrays(arrays, schema=_io.CANONICAL_SCHEMA)


class EventsMixin(StoreCore):
    """Appending to the event log; the writer validates, deduplicates and commits."""

    def append_events(
        self, batch: Any, *, max_errors: int = DEFAULT_MAX_ERRORS, source: str = "append"
    ) -> AppendResult:
        """Append a batch to the event log; return once it is committed.

        The same as ``submit_events(...).result()``.

        Idempotent on ``(campaign_id, event_id)``: rows whose id is already stored for the
        same campaign, or that repeat an earlier row of the same batch, count as duplicates
        and add nothing. Deduplication is scoped to the campaign (so to its tenant): the same
        event_id in another campaign is another event, and never counts as a duplicate here.
        Invalid rows (unknown campaign/variant/type, missing or malformed event_id,
        unparseable timestamp or one more than 5 minutes ahead of the store's clock,
        NaN/negative/unparseable value) are rejected with a reason; the rest of the batch is
        still stored, all in one transaction.

        Args:
            batch: a list of dicts, a polars DataFrame or an Arrow table with columns
                ``event_id, type, campaign_id, variant_id, ts`` and optional
                ``decision_id, segment, value``.
            max_errors: at most this many :class:`RowError` are returned (counts stay exact).
            source: a label kept in the ingest log (e.g. ``"http"``, ``"file"``).

        Example:
            >>> store.append_events(rows).to_dict()  # doctest: +SKIP
            {'accepted': 2, 'duplicates': 0, 'rejected': 1, 'errors': [{'row': 2, ...}]}
        """
        return self.submit_events(batch, max_errors=max_errors, source=source).result()

    def submit_events(
        self, batch: Any, *, max_errors: int = DEFAULT_MAX_ERRORS, source: str = "append"
    ) -> Future[AppendResult]:
        """Queue a batch for the event log; the returned future resolves after its COMMIT.

        Validation, deduplication and results are exactly those of :meth:`append_events`
        (which waits on this future). An async caller can await it without holding a thread:
        ``await asyncio.wrap_future(store.submit_events(rows))``. A batch queued with others is
        committed in the same group: a row repeating a (campaign_id, event_id) of an earlier
        batch in the group counts as a duplicate of its own batch. If the group's transaction
        fails, each batch is retried alone and only the failing one's future raises.

        Raises:
            StoreClosedError: the store is closed.
            InvalidRecordError / UnreadableFileError: ``batch`` cannot be read as events.

        Example:
            >>> result = await asyncio.wrap_future(store.submit_events(rows))  # doctest: +SKIP
        """
        now = self._now()
        job = IngestJob(
            events=_typed_canonical(batch) or _io.to_canonical(batch),
            source=source,
            received_at=now,
            max_ts=now + FUTURE_TOLERANCE,
            max_errors=max(0, int(max_errors)),
            future=Future(),
        )
        if job.events.num_rows == 0:
            job.future.set_result(AppendResult(accepted=0, duplicates=0, rejected=0, errors=[]))
            return job.future
        self._enqueue(job)
        return job.future

    def log_decisions(self, decisions: list[dict] | pl.DataFrame, *, impressions: bool) -> None:
        """Queue chooser decisions (and, with ``impressions``, one impression event per decision).

        Each decision needs ``decision_id, campaign_id, variant_id, probability, ts`` and may
        have ``segment``. The impression's event_id is the decision_id, so a later impression
        report for the same decision is a duplicate, not a second impression. Fire-and-forget:
        returns at once and is durable at the writer's next group commit (see :meth:`flush`).

        Raises:
            InvalidRecordError: a decision lacks a field or has a probability outside [0, 1].
        """
        table = _io.to_arrow(decisions)
        if table.num_rows == 0:
            return
        for name in ("decision_id", "campaign_id", "variant_id", "probability", "ts"):
            if name not in table.column_names or table.column(name).null_count:
                raise InvalidRecordError(f"every decision needs a non-null {name!r}")
        if "segment" not in table.column_names:
            table = table.append_column("segment", pa.nulls(table.num_rows, pa.string()))
        ts = table.column("ts")
        if not pa.types.is_timestamp(ts.type):
            try:
                ts = pa.array(
                    [naive_utc(value, "ts") for value in ts.to_pylist()], pa.timestamp("us")
                )
            except InvalidRecordError as error:
                raise InvalidRecordError(f"decision {error}") from error
        table = table.set_column(table.column_names.index("ts"), "ts", ts)
        try:
            table = table.select(_DECISION_SCHEMA.names).cast(_DECISION_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise InvalidRecordError(f"decisions have the wrong column types: {error}") from error
        probability = table.column("probability").to_numpy()
        if not ((probability >= 0) & (probability <= 1)).all():
            raise InvalidRecordError("decision probability must lie in [0, 1]")
        now = self._now()
        n = table.num_rows
        if impressions:
            events = pa.table(
                {
                    "event_id": table.column("decision_id"),
                    "type": pa.array(["impression"] * n, pa.string()),
                    "campaign_id": table.column("campaign_id"),
                    "variant_id": table.column("variant_id"),
                    "decision_id": table.column("decision_id"),
                    "segment": table.column("segment"),
                    "ts": table.column("ts"),
                    "value": pa.array([0.0] * n, pa.float64()),
                }
            )
        else:
            events = pa.table({name: pa.array([], pa.string()) for name in _io.REQUIRED_COLUMNS})
        job = IngestJob(
            events=_io.to_canonical(events),
            source="decisions",
            received_at=now,
            max_ts=now + FUTURE_TOLERANCE,
            max_errors=0,
            decisions=table,
        )
        self._enqueue(job)

    def _enqueue(self, job: IngestJob) -> None:
        """Hand ``job`` to the writer thread (its future, if any, resolves after the COMMIT)."""
        self._db().writer.submit(job)

    def decision_id_secret(self) -> bytes:
        """This store's secret key for the decision ids of idempotent choices (32 bytes).

        Created once, from ``secrets``, on first use and kept in the ``store_meta`` table, so
        a retried request gets the same decision id after a restart while nobody without the
        database file can compute another campaign's ids. Anyone who can read the file can
        also read every event it holds, so the secret adds no new reader.

        Example:
            >>> len(store.decision_id_secret())  # doctest: +SKIP
            32
        """
        stored = self._read(
            "SELECT value FROM store_meta WHERE key = ?", [_DECISION_SECRET_KEY]
        ).fetchall()
        if stored:
            return bytes.fromhex(stored[0][0])

        def create(connection: duckdb.DuckDBPyConnection) -> str:
            # Checked again on the writer thread: two first uses must agree on one secret.
            found = connection.execute(
                "SELECT value FROM store_meta WHERE key = ?", [_DECISION_SECRET_KEY]
            ).fetchall()
            if found:
                return found[0][0]
            value = secrets.token_hex(32)
            connection.execute(
                "INSERT INTO store_meta VALUES (?, ?)", [_DECISION_SECRET_KEY, value]
            )
            return value

        return bytes.fromhex(self._write(create))
