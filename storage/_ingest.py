"""Set-based event ingest: validate, deduplicate and append a group of batches in SQL.

Runs on the writer thread inside the group's transaction. Every step is one statement over
the whole group (never a per-row loop, never ``executemany``):

1. ``_stage``: each row parsed (timestamps, values) and given its first error, if any.
2. ``_hits``: stored events whose 64-bit key matches a key in the group (a semi-join that reads
   only the key column of the log, plus the ids of the few matches).
3. ``INSERT INTO events``: valid rows that are neither already stored (same key *and* same
   event_id) nor an earlier row of the group with the same event_id; each step is skipped when
   a cheap count shows it cannot match anything.
4. Per-hour aggregates and the ingest log, computed from the rows just appended.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage._keys import SMALL_GROUP_ROWS, KeyIndex
from storage.result import AppendResult, RowError

if TYPE_CHECKING:
    from storage._writer import IngestJob

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


_STAGE_SQL = """
CREATE OR REPLACE TEMP VIEW _stage AS
WITH parsed AS (
    SELECT
        i.job, i.r, i.event_id, i.type, i.campaign_id, i.variant_id, i.decision_id, i.segment,
        i.ts_text,
        coalesce(i.ts_native, TRY_CAST(TRY_CAST(i.ts_text AS TIMESTAMPTZ) AS TIMESTAMP)) AS ts,
        i.value_text,
        CASE WHEN i.value_num IS NOT NULL THEN i.value_num
             WHEN i.value_text IS NULL OR trim(i.value_text) = '' THEN 0.0
             ELSE TRY_CAST(i.value_text AS DOUBLE) END AS value,
        j.max_ts, i.parse_field, i.parse_error, i.campaign_known, i.variant_known
    FROM _in AS i
    JOIN _jobs AS j ON j.job = i.job
)
SELECT
    job, r, hash(event_id) AS event_key, event_id, type, campaign_id, variant_id, decision_id,
    segment, ts, value,
    CASE
        WHEN parse_error IS NOT NULL THEN parse_field
        WHEN event_id IS NULL OR trim(event_id) = '' OR length(event_id) > 128 THEN 'event_id'
        WHEN type IS NULL OR type NOT IN ('impression', 'click', 'conversion') THEN 'type'
        WHEN campaign_id IS NULL OR NOT campaign_known THEN 'campaign_id'
        WHEN variant_id IS NULL OR NOT variant_known THEN 'variant_id'
        WHEN ts IS NULL OR ts > max_ts THEN 'ts'
        WHEN value IS NULL OR isnan(value) OR isinf(value) OR value < 0 THEN 'value'
    END AS error_field,
    CASE
        WHEN parse_error IS NOT NULL THEN parse_error
        WHEN event_id IS NULL OR trim(event_id) = '' THEN 'missing event_id'
        WHEN length(event_id) > 128 THEN 'event_id longer than 128 characters'
        WHEN type IS NULL THEN 'missing type'
        WHEN type NOT IN ('impression', 'click', 'conversion')
            THEN 'unknown event type ' || to_json(type)
                 || ' (expected impression, click or conversion)'
        WHEN campaign_id IS NULL THEN 'missing campaign_id'
        WHEN NOT campaign_known THEN 'unknown campaign ' || to_json(campaign_id)
        WHEN variant_id IS NULL THEN 'missing variant_id'
        WHEN NOT variant_known
            THEN 'unknown variant ' || to_json(variant_id)
                 || ' in campaign ' || to_json(campaign_id)
        WHEN ts IS NULL AND ts_text IS NULL THEN 'missing ts'
        WHEN ts IS NULL THEN 'unparseable timestamp ' || to_json(ts_text)
        WHEN ts > max_ts
            THEN 'timestamp ' || strftime(ts, '%Y-%m-%dT%H:%M:%S')
                 || ' is more than 5 minutes in the future'
        WHEN value IS NULL THEN 'unparseable value ' || to_json(value_text)
        WHEN isnan(value) THEN 'value is NaN'
        WHEN isinf(value) THEN 'value is infinite'
        WHEN value < 0 THEN 'negative value ' || value::VARCHAR
    END AS error_reason
FROM parsed
"""

# The semi-join builds a hash table on the group's keys and streams only the event_key column
# of the log past it; event_id is read for the (rare) matching rows.
_HITS_SQL = """
CREATE OR REPLACE TEMP TABLE _hits AS
SELECT e.event_key, e.event_id FROM events AS e
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
    SELECT 1 FROM _hits AS h WHERE h.event_key = s.event_key AND h.event_id = s.event_id)"""

# A repeated event_id inside the group: keep its first row (by batch, then row order).
_FIRST_ONLY = """QUALIFY row_number() OVER (
    PARTITION BY s.event_key, s.event_id ORDER BY s.job, s.r) = 1"""

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
) -> list[AppendResult]:
    """Validate, deduplicate and append ``jobs`` (already inside a transaction).

    A small group without replays costs six statements: the writer's throughput for many
    small HTTP batches is bounded by statements per group, not by rows.
    """
    connection = _Traced(connection) if TRACE is not None else connection
    tables = []
    for index, job in enumerate(jobs):
        job_column = pa.array(np.full(job.events.num_rows, index, dtype=np.int32))
        tables.append(job.events.append_column("job", job_column))
    merged = _with_known_flags(
        connection, pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    )
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
    big = merged.num_rows > SMALL_GROUP_ROWS
    connection.register("_in", merged)
    connection.register("_jobs", job_table)
    try:
        connection.execute(_STAGE_SQL)
        has_hits, has_repeats, keys = _find_stored(connection, key_index, big)
        insert = _INSERT_EVENTS_SQL.format(
            not_stored=_NOT_STORED if has_hits else "",
            first_only=_FIRST_ONLY if has_repeats else "",
        )
        if big:
            # The new rows are found again by batch_id (zone maps skip the old log).
            connection.execute(insert)
            new_rows, params = _NEW_ROWS, bounds
        else:
            # A small group's new rows come straight back from the INSERT: no scan at all.
            returned = connection.execute(insert + _RETURNING).fetchall()
            connection.register("_new", _returned_table(returned))
            new_rows, params = "_new", {}
        if key_index.built:
            if keys is None:
                keys = connection.execute(f"SELECT event_key FROM {new_rows}", params).fetchnumpy()[
                    "event_key"
                ]
            # Valid keys, new or not: an extra key only sends a later row to the exact check.
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
        if big:  # free the staging memory now rather than at the next group
            connection.execute("DROP VIEW IF EXISTS _stage; DROP TABLE IF EXISTS _hits")
    finally:
        _unregister(connection, "_in", "_jobs", "_hits_found", "_new")
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


_RETURNING = """
RETURNING event_key, campaign_id, variant_id, segment, type::VARCHAR AS type, ts, value, batch_id
"""

_RETURNED_SCHEMA = pa.schema(
    [
        ("event_key", pa.uint64()),
        ("campaign_id", pa.string()),
        ("variant_id", pa.string()),
        ("segment", pa.string()),
        ("type", pa.string()),
        ("ts", pa.timestamp("us")),
        ("value", pa.float64()),
        ("batch_id", pa.int64()),
    ]
)


def _returned_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in _RETURNED_SCHEMA]
    return pa.Table.from_arrays(
        [
            pa.array(column, field.type)
            for column, field in zip(columns, _RETURNED_SCHEMA, strict=True)
        ],
        schema=_RETURNED_SCHEMA,
    )


def _find_stored(
    connection: duckdb.DuckDBPyConnection, key_index: KeyIndex, big: bool
) -> tuple[bool, bool, np.ndarray | None]:
    """Make ``_hits`` hold stored (event_key, event_id) pairs that may repeat a staged row.

    Small groups ask the in-memory key index which keys could be stored and look only those
    up (usually none); big groups, and small ones while the index is still being built,
    semi-join the whole group against the log's key column.
    Either way the final decision compares full event_ids.

    Returns:
        (any hits, any key repeated inside the group, the group's valid keys when fetched).
    """
    if big or not key_index.ready(connection):
        connection.execute(_HITS_SQL)
        n_hits, n_valid, n_keys = connection.execute(
            """SELECT (SELECT count(*) FROM _hits), count(*), count(DISTINCT event_key)
               FROM _stage WHERE error_field IS NULL"""
        ).fetchall()[0]
        return n_hits > 0, n_keys < n_valid, None
    keys = connection.execute(
        "SELECT event_key FROM _stage WHERE error_field IS NULL"
    ).fetchnumpy()["event_key"]
    keys = np.asarray(keys, dtype=np.uint64)
    unique = np.unique(keys)
    hits = key_index.lookup(connection, unique)
    if not hits:
        return False, len(unique) < len(keys), keys
    found = pa.table(
        {
            "event_key": pa.array([row[0] for row in hits], pa.uint64()),
            "event_id": pa.array([row[1] for row in hits], pa.string()),
        }
    )
    connection.register("_hits_found", found)
    connection.execute("CREATE OR REPLACE TEMP TABLE _hits AS SELECT * FROM _hits_found")
    return len(hits) > 0, len(unique) < len(keys), keys


def _with_known_flags(connection: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Table:
    """Add ``campaign_known`` / ``variant_known`` by set membership in Arrow.

    A batch names few campaigns, so their variants are fetched once and every row is checked
    with a vectorized ``is_in``; joining each row against the variants table in SQL cost more
    than the rest of validation together.
    """
    campaign_ids = pc.unique(table.column("campaign_id")).drop_null().to_pylist()
    rows = connection.execute(
        """SELECT c.campaign_id, c.campaign_id || chr(31) || v.variant_id
           FROM campaigns AS c LEFT JOIN variants AS v ON v.campaign_id = c.campaign_id
           WHERE list_contains(?, c.campaign_id)""",
        [campaign_ids],
    ).fetchall()
    known_campaigns = sorted({row[0] for row in rows})
    pairs = [row[1:] for row in rows if row[1] is not None]
    campaign_known = pc.is_in(
        table.column("campaign_id"), value_set=pa.array(known_campaigns, pa.string())
    )
    pair = pc.binary_join_element_wise(
        table.column("campaign_id"), table.column("variant_id"), "\x1f"
    )
    variant_known = pc.is_in(pair, value_set=pa.array([row[0] for row in pairs], pa.string()))
    table = table.append_column("campaign_known", pc.fill_null(campaign_known, False))
    return table.append_column("variant_known", pc.fill_null(variant_known, False))


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
