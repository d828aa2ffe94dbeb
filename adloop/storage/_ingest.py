"""Set-based event ingest: validate, deduplicate and append a group of batches at once.

Runs on the writer thread inside the group's transaction. All batches queued together are
concatenated into one Arrow table and handled by one set of statements (never a per-row loop,
never ``executemany``), so a thousand small HTTP requests cost one pass, not a thousand:

1. Staging (``_validate``): each row's first error, if any. When every row is plainly valid
   and typed (the HTTP service and the engine send such batches) this is a handful of Arrow
   checks and one query for the rows' keys (``EVENT_KEY_SQL``: DuckDB's
   ``hash(campaign_id, event_id)``); otherwise one SQL pass (``STAGE_SELECT``) parses
   timestamps and values and words each row's reason.
2. Deduplication, scoped to the campaign (so to its tenant): stored events whose 64-bit key
   matches a key of the group (the writer's in-memory key index, or a semi-join on the log's
   key column), then a comparison by full ``(campaign_id, event_id)`` of only the rows whose
   key is stored or repeated; the first row of a pair (by batch, then row) wins. The same
   event_id in two campaigns is two events.
3. Three inserts straight from Arrow: the new events, their per-hour aggregates, and the
   ingest log (one row per batch and campaign, whose counts are the batches' results).

Groups over ``SMALL_GROUP_ROWS`` (bulk imports) run every step in SQL instead.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adloop.storage._keys import SMALL_GROUP_ROWS, KeyIndex
from adloop.storage._validate import STAGE_SQL, stage_group, with_known_flags
from adloop.storage.result import AppendResult, RowError

if TYPE_CHECKING:
    from adloop.storage._writer import IngestJob

AGGREGATE_TABLES = ("event_aggregates", "decision_aggregates")

#: When a list, each statement's (first words, seconds) is appended to it (for profiling).
TRACE: list | None = None


class _Traced:
    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: list | None = None) -> duckdb.DuckDBPyConnection:
        start = time.perf_counter()
        result = self._connection.execute(sql, params or [])
        if TRACE is not None:
            TRACE.append((" ".join(sql.split())[:60], time.perf_counter() - start))
        return result

    def __getattr__(self, name: str):
        return getattr(self._connection, name)


# The semi-join builds a hash table on the group's keys and streams only the event_key column
# of the log past it; campaign_id and event_id are read for the (rare) matching rows.
_HITS_SQL = """
CREATE OR REPLACE TEMP TABLE _hits AS
SELECT e.event_key, e.campaign_id, e.event_id FROM events AS e
SEMI JOIN (SELECT event_key FROM _stage WHERE error_field IS NULL) AS s ON e.event_key = s.event_key
"""

_INSERT_EVENTS_SQL = """
INSERT INTO events
SELECT s.event_key, s.event_id, s.type::event_type, s.campaign_id, s.variant_id, s.decision_id,
       s.segment, s.ts, s.value, j.batch_id
FROM _stage AS s JOIN _jobs AS j ON j.job = s.job
WHERE s.error_field IS NULL {not_stored} {first_only}
"""

_NOT_STORED = """AND NOT EXISTS (
    SELECT 1 FROM _hits AS h WHERE h.event_key = s.event_key
        AND h.campaign_id = s.campaign_id AND h.event_id = s.event_id)"""

# A repeated (campaign_id, event_id) inside the group: keep its first row (by batch, then row).
_FIRST_ONLY = """QUALIFY row_number() OVER (
    PARTITION BY s.event_key, s.campaign_id, s.event_id ORDER BY s.job, s.r) = 1"""

# The group's new rows are found by batch_id, which only grows, so zone maps skip the old log.
_NEW_ROWS = "(SELECT * FROM events WHERE batch_id BETWEEN $first AND $last)"

_INSERT_AGGREGATES_SQL = """
INSERT INTO event_aggregates
SELECT campaign_id, variant_id, segment, type, date_trunc('hour', ts) AS hour,
       count(*) AS n, sum(value) AS value,
       sum((epoch_us(ts) - epoch_us(date_trunc('hour', ts))) / 1e6) AS ts_offset_sum
FROM {new_rows} GROUP BY ALL
"""

# One row per (batch, campaign) with exact counts; RETURNING hands them to the caller, so the
# log and the results cannot disagree.
_INGEST_LOG_SQL = """
INSERT INTO ingest_log
SELECT j.batch_id, j.source, j.received_at, s.campaign_id,
       coalesce(a.accepted, 0), s.valid - coalesce(a.accepted, 0), s.rejected
FROM (
    SELECT job, campaign_id, count(*) FILTER (WHERE error_field IS NULL) AS valid,
           count(*) FILTER (WHERE error_field IS NOT NULL) AS rejected
    FROM _stage GROUP BY ALL
) AS s
JOIN _jobs AS j ON j.job = s.job
LEFT JOIN (SELECT batch_id, campaign_id, count(*) AS accepted FROM {new_rows} GROUP BY ALL) AS a
    ON a.batch_id = j.batch_id AND a.campaign_id IS NOT DISTINCT FROM s.campaign_id
RETURNING batch_id, accepted, duplicates, rejected
"""

_ERRORS_SQL = """
SELECT job, r, error_field, error_reason FROM _stage
WHERE error_field IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY job ORDER BY r) <= ?
ORDER BY job, r
"""


def ingest(
    connection: duckdb.DuckDBPyConnection,
    jobs: list[IngestJob],
    added: dict[str, int],
    key_index: KeyIndex,
    known: dict[str, frozenset[str]] | None = None,
) -> list[AppendResult]:
    """Validate, deduplicate and append ``jobs`` (already inside a transaction).

    All the group's batches are concatenated into one Arrow table and handled by one set of
    statements, however many batches there are: the writer's throughput for many small HTTP
    batches is bounded by statements per group, not by rows or requests. Results stay exact
    per batch: a row repeating an earlier row of the group (same campaign and event_id, same
    batch or an earlier one) counts as a duplicate of the batch it belongs to.

    Args:
        known: the writer's cache of each campaign's variant ids (see ``with_known_flags``).
    """
    connection = _Traced(connection) if TRACE is not None else connection
    tables = []
    for index, job in enumerate(jobs):
        job_column = pa.array(np.full(job.events.num_rows, index, dtype=np.int32))
        tables.append(job.events.append_column("job", job_column))
    # One chunk per column: DuckDB scans one big Arrow chunk much faster than many small.
    merged = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
    job_index = merged.column("job").to_numpy()
    max_ts = pa.array([job.max_ts for job in jobs], pa.timestamp("us"))
    merged = merged.append_column("max_ts", max_ts.take(pa.array(job_index)))
    merged = with_known_flags(connection, merged, {} if known is None else known)
    if merged.num_rows > SMALL_GROUP_ROWS:
        return _ingest_big(connection, jobs, merged, added, key_index)
    stage = stage_group(connection, merged)
    valid = pc.is_null(stage.column("error_field")).to_numpy(zero_copy_only=False)
    keys = np.asarray(stage.column("event_key").to_numpy(), dtype=np.uint64)
    accepted = _first_new(connection, stage, valid, keys, key_index)
    row_job = np.asarray(stage.column("job").to_numpy(), dtype=np.int64)
    batch_ids = np.array([job.batch_id for job in jobs], dtype=np.int64)
    new = stage.filter(pa.array(accepted)).select(_NEW_COLUMNS)
    new = new.append_column("batch_id", pa.array(batch_ids[row_job[accepted]]))
    if key_index.built:
        # Valid keys, new or not: an extra key only sends a later row to the exact check.
        key_index.add_pending(keys[valid])
    counts = (
        pa.table(
            {
                "job": pa.array(row_job),
                "campaign_id": stage.column("campaign_id"),
                "valid": pa.array(valid.astype(np.int64)),
                "accepted": pa.array(accepted.astype(np.int64)),
            }
        )
        .group_by(["job", "campaign_id"], use_threads=False)
        .aggregate([("valid", "sum"), ("valid", "count"), ("accepted", "sum")])
    )
    log_job = counts.column("job").to_numpy()
    n_valid = counts.column("valid_sum").to_numpy()
    n_rows = counts.column("valid_count").to_numpy()
    n_accepted = counts.column("accepted_sum").to_numpy()
    log = pa.table(
        {
            "batch_id": pa.array(batch_ids[log_job]),
            "source": pa.array([jobs[j].source for j in log_job], pa.string()),
            "received_at": pa.array([jobs[j].received_at for j in log_job], pa.timestamp("us")),
            "campaign_id": counts.column("campaign_id"),
            "accepted": pa.array(n_accepted),
            "duplicates": pa.array(n_valid - n_accepted),
            "rejected": pa.array(n_rows - n_valid),
        }
    )
    # Straight Arrow inserts (columns already in table order): registering a view per table
    # and dropping it again cost more than the inserts themselves for a small group.
    if new.num_rows:
        connection.from_arrow(new).insert_into("events")
        aggregates = _hourly(new)
        connection.from_arrow(aggregates).insert_into("event_aggregates")
        added["event_aggregates"] = added.get("event_aggregates", 0) + aggregates.num_rows
    if log.num_rows:
        connection.from_arrow(log).insert_into("ingest_log")
    decisions = [job.decisions for job in jobs if job.decisions is not None]
    if decisions:
        _insert_decisions(connection, decisions, added)
    totals = np.zeros((len(jobs), 3), dtype=np.int64)
    np.add.at(totals, log_job, np.stack([n_accepted, n_valid - n_accepted, n_rows - n_valid], 1))
    errors_by_job: dict[int, list[RowError]] = {}
    if not valid.all():
        bad = np.flatnonzero(~valid)
        rows = stage.select(["job", "r", "error_field", "error_reason"]).take(pa.array(bad))
        for job, row, field, reason in zip(*(c.to_pylist() for c in rows.columns), strict=True):
            found = errors_by_job.setdefault(job, [])
            if len(found) < jobs[job].max_errors:
                found.append(RowError(row=int(row), field=field, reason=reason))
    return [
        AppendResult(
            accepted=int(totals[index][0]),
            duplicates=int(totals[index][1]),
            rejected=int(totals[index][2]),
            errors=errors_by_job.get(index, []),
            batch_id=job.batch_id,
        )
        for index, job in enumerate(jobs)
    ]


_NEW_COLUMNS = [
    "event_key", "event_id", "type", "campaign_id", "variant_id", "decision_id", "segment",
    "ts", "value",
]  # fmt: skip


def _hourly(new: pa.Table) -> pa.Table:
    """The per-hour aggregate rows of ``new`` (as ``_INSERT_AGGREGATES_SQL`` computes them)."""
    ts = new.column("ts")
    hour = pc.floor_temporal(ts, unit="hour")
    offset = pc.divide(pc.subtract(ts, hour).cast(pa.int64()).cast(pa.float64()), 1e6)
    table = pa.table(
        {
            "campaign_id": new.column("campaign_id"),
            "variant_id": new.column("variant_id"),
            "segment": new.column("segment"),
            "type": new.column("type"),
            "hour": hour,
            "value": new.column("value"),
            "ts_offset_sum": offset,
        }
    )
    grouped = table.group_by(
        ["campaign_id", "variant_id", "segment", "type", "hour"], use_threads=False
    ).aggregate(
        [
            ("value", "count", pc.CountOptions(mode="all")),
            ("value", "sum"),
            ("ts_offset_sum", "sum"),
        ]
    )
    names = {"value_count": "n", "value_sum": "value", "ts_offset_sum_sum": "ts_offset_sum"}
    grouped = grouped.rename_columns([names.get(name, name) for name in grouped.column_names])
    # in the table's column order: the rows are inserted by position
    return grouped.select(
        ["campaign_id", "variant_id", "segment", "type", "hour", "n", "value", "ts_offset_sum"]
    )


def _first_new(
    connection: duckdb.DuckDBPyConnection,
    stage: pa.Table,
    valid: np.ndarray,
    keys: np.ndarray,
    key_index: KeyIndex,
) -> np.ndarray:
    """Which staged rows to store: valid, not stored already, first of their (campaign, id).

    Only rows whose 64-bit key is stored already or repeats inside the group are compared by
    full ``(campaign_id, event_id)`` (in row order, so the first row of a repeated pair wins);
    usually none are.
    """
    accepted = valid.copy()
    valid_keys = keys[valid]
    if not len(valid_keys):
        return accepted
    unique, counts = np.unique(valid_keys, return_counts=True)
    if key_index.ready(connection):
        hits = key_index.lookup(connection, unique)
    else:
        hits = _scan(connection, unique)
    suspects = unique[counts > 1]
    if hits:
        suspects = np.union1d(suspects, np.array([row[0] for row in hits], dtype=np.uint64))
    if not len(suspects):
        return accepted
    rows = np.flatnonzero(valid & np.isin(keys, suspects))
    taken = pa.array(rows)
    campaign_ids = stage.column("campaign_id").take(taken).to_pylist()
    event_ids = stage.column("event_id").take(taken).to_pylist()
    seen = {(int(key), campaign_id, event_id) for key, campaign_id, event_id in hits}
    identities = zip(keys[rows].tolist(), campaign_ids, event_ids, strict=True)
    for row, identity in zip(rows.tolist(), identities, strict=True):
        if identity in seen:
            accepted[row] = False
        else:
            seen.add(identity)
    return accepted


def _ingest_big(
    connection: duckdb.DuckDBPyConnection,
    jobs: list[IngestJob],
    merged: pa.Table,
    added: dict[str, int],
    key_index: KeyIndex,
) -> list[AppendResult]:
    """A big group (a bulk import): every step in SQL over the staged view."""
    job_table = pa.table(
        {
            "job": pa.array(range(len(jobs)), pa.int32()),
            "batch_id": pa.array([job.batch_id for job in jobs], pa.int64()),
            "source": pa.array([job.source for job in jobs], pa.string()),
            "received_at": pa.array([job.received_at for job in jobs], pa.timestamp("us")),
            "max_ts": pa.array([job.max_ts for job in jobs], pa.timestamp("us")),
        }
    )
    bounds = {"first": jobs[0].batch_id, "last": jobs[-1].batch_id}
    connection.register("_in", merged)
    connection.register("_jobs", job_table)
    try:
        connection.execute(STAGE_SQL)
        connection.execute(_HITS_SQL)
        n_hits, n_valid, n_keys = connection.execute(
            """SELECT (SELECT count(*) FROM _hits), count(*), count(DISTINCT event_key)
               FROM _stage WHERE error_field IS NULL"""
        ).fetchall()[0]
        insert = _INSERT_EVENTS_SQL.format(
            not_stored=_NOT_STORED if n_hits else "",
            first_only=_FIRST_ONLY if n_keys < n_valid else "",
        )
        # The new rows are found again by batch_id (zone maps skip the old log).
        connection.execute(insert)
        new_rows, params = _NEW_ROWS, bounds
        if key_index.built:
            keys = connection.execute(f"SELECT event_key FROM {new_rows}", params).fetchnumpy()[
                "event_key"
            ]
            key_index.add_pending(keys)
        log_rows = connection.execute(_INGEST_LOG_SQL.format(new_rows=new_rows), params).fetchall()
        (n_aggregates,) = connection.execute(
            _INSERT_AGGREGATES_SQL.format(new_rows=new_rows), params
        ).fetchall()[0]
        added["event_aggregates"] = added.get("event_aggregates", 0) + n_aggregates
        decisions = [job.decisions for job in jobs if job.decisions is not None]
        if decisions:
            _insert_decisions(connection, decisions, added)
        error_rows = []
        if any(row[3] for row in log_rows):
            cap = max(job.max_errors for job in jobs)
            error_rows = connection.execute(_ERRORS_SQL, [cap]).fetchall()
        # free the staging memory now rather than at the next group
        connection.execute("DROP VIEW IF EXISTS _stage; DROP TABLE IF EXISTS _hits")
    finally:
        _unregister(connection, "_in", "_jobs")
    job_of_batch = {job.batch_id: index for index, job in enumerate(jobs)}
    totals = {index: [0, 0, 0] for index in range(len(jobs))}
    for batch_id, accepted, duplicates, rejected in log_rows:
        total = totals[job_of_batch[batch_id]]
        total[0] += accepted
        total[1] += duplicates
        total[2] += rejected
    errors_by_job: dict[int, list[RowError]] = {}
    for job, row, field, reason in error_rows:
        errors_by_job.setdefault(job, []).append(RowError(row=int(row), field=field, reason=reason))
    return [
        AppendResult(
            accepted=int(totals[index][0]),
            duplicates=int(totals[index][1]),
            rejected=int(totals[index][2]),
            errors=errors_by_job.get(index, [])[: job.max_errors],
            batch_id=job.batch_id,
        )
        for index, job in enumerate(jobs)
    ]


def _scan(connection: duckdb.DuckDBPyConnection, keys: np.ndarray) -> list[tuple[int, str, str]]:
    """Stored ``(event_key, campaign_id, event_id)`` rows with one of ``keys`` (a semi-join)."""
    connection.register("_keys", pa.table({"event_key": pa.array(keys, pa.uint64())}))
    try:
        return connection.execute(
            """SELECT e.event_key, e.campaign_id, e.event_id FROM events AS e
               SEMI JOIN _keys AS k ON e.event_key = k.event_key"""
        ).fetchall()
    finally:
        _unregister(connection, "_keys")


def _insert_decisions(
    connection: duckdb.DuckDBPyConnection, decisions: list[pa.Table], added: dict[str, int]
) -> None:
    table = pa.concat_tables(decisions) if len(decisions) > 1 else decisions[0]
    connection.register("_decisions", table)
    try:
        connection.execute(
            """INSERT INTO decisions
               SELECT decision_id, campaign_id, variant_id, segment, probability, ts
               FROM _decisions"""
        )
        (n_aggregates,) = connection.execute(
            """INSERT INTO decision_aggregates
               SELECT campaign_id, variant_id, count(*), sum(probability)
               FROM _decisions GROUP BY ALL"""
        ).fetchall()[0]
        added["decision_aggregates"] = added.get("decision_aggregates", 0) + n_aggregates
    finally:
        _unregister(connection, "_decisions")


def _unregister(connection: duckdb.DuckDBPyConnection, *names: str) -> None:
    # After a failed statement the transaction is aborted and DuckDB refuses even this;
    # the caller rolls back, and the views die with the error being reported.
    for name in names:
        with contextlib.suppress(duckdb.Error):
            connection.unregister(name)


def _count(connection: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def compact(connection: duckdb.DuckDBPyConnection, table: str) -> int:
    """Replace ``table``'s rows by their sums per key (inside a transaction); return the count.

    Totals are unchanged, so every statistic read before and after is identical.
    """
    if table == "event_aggregates":
        select = """SELECT campaign_id, variant_id, segment, type, hour, sum(n)::BIGINT,
                           sum(value), sum(ts_offset_sum) FROM event_aggregates GROUP BY ALL"""
    else:
        select = """SELECT campaign_id, variant_id, sum(n)::BIGINT, sum(probability_sum)
                    FROM decision_aggregates GROUP BY ALL"""
    connection.execute(f"CREATE OR REPLACE TEMP TABLE _compact AS {select}")
    connection.execute(f"DELETE FROM {table}")
    connection.execute(f"INSERT INTO {table} SELECT * FROM _compact")
    connection.execute("DROP TABLE _compact")
    return _count(connection, table)
