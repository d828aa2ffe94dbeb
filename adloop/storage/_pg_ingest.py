"""Event ingest on PostgreSQL: the embedded store's validation, PostgreSQL's dedupe and COPY.

Each batch is staged exactly as the DuckDB writer stages it (``_validate``: the same checks,
the same field names and reasons, run by an in-memory DuckDB over the batch's Arrow table),
with the campaigns' variant ids read from PostgreSQL. Then, in **one transaction**:

1. the valid rows (the first of each ``(campaign_id, event_id)`` in the batch) are copied
   into a temporary table and inserted into ``events`` with ``ON CONFLICT DO NOTHING``: the
   primary key makes deduplication exact even with several processes writing at once;
2. the rows actually inserted are summed per hour (``_ingest._hourly``, as DuckDB's writer
   does) and appended to ``event_aggregates``: counts are never updated in place;
3. one ``ingest_log`` row per campaign keeps the batch's accepted/duplicate/rejected counts,
   and chooser decisions (with their aggregates) are appended with their impressions.

A failure anywhere rolls the whole batch back.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from adloop.storage._ingest import _hourly
from adloop.storage._validate import _UNKNOWN, stage_group, with_known_flags
from adloop.storage.result import AppendResult, RowError

if TYPE_CHECKING:
    from adloop.storage._writer import IngestJob

_EVENT_COLUMNS = ("r", "event_id", "type", "campaign_id", "variant_id", "decision_id", "segment",
                  "ts", "value")  # fmt: skip
_AGGREGATE_COLUMNS = ("campaign_id", "variant_id", "segment", "type", "hour", "n", "value",
                      "ts_offset_sum")  # fmt: skip
_DECISION_COLUMNS = ("decision_id", "campaign_id", "variant_id", "segment", "probability", "ts")

_STAGE_TABLE = """CREATE TEMP TABLE IF NOT EXISTS adloop_events_in (
    r BIGINT, event_id TEXT, type TEXT, campaign_id TEXT, variant_id TEXT, decision_id TEXT,
    segment TEXT, ts TIMESTAMP, value DOUBLE PRECISION) ON COMMIT DELETE ROWS"""

_INSERT_EVENTS = """
INSERT INTO events (event_id, type, campaign_id, variant_id, decision_id, segment, ts, value,
                    batch_id)
SELECT event_id, type, campaign_id, variant_id, decision_id, segment, ts, value, %s
FROM adloop_events_in ORDER BY r
ON CONFLICT (campaign_id, event_id) DO NOTHING
RETURNING campaign_id, event_id
"""


def stage_batch(duck: duckdb.DuckDBPyConnection, connection: Any, job: IngestJob) -> pa.Table:
    """Each row of ``job`` with its first error (``error_field``, ``error_reason``), if any."""
    events = job.events
    n = events.num_rows
    merged = events.append_column("job", pa.array(np.zeros(n, dtype=np.int32)))
    merged = merged.append_column("max_ts", pa.array([job.max_ts] * n, pa.timestamp("us")))
    merged = with_known_flags(duck, merged, _known_variants(connection, merged))
    return stage_group(duck, merged)


def _known_variants(connection: Any, merged: pa.Table) -> dict[str, frozenset[str]]:
    """Each campaign the batch names: its variant ids (``_UNKNOWN`` for no such campaign)."""
    campaign_ids = pc.unique(merged.column("campaign_id")).drop_null().to_pylist()
    if not campaign_ids:
        return {}
    rows = connection.execute(
        "SELECT c.campaign_id, v.variant_id FROM campaigns AS c "
        "LEFT JOIN variants AS v ON v.campaign_id = c.campaign_id "
        "WHERE c.campaign_id = ANY(%s)",
        [campaign_ids],
    ).fetchall()
    found: dict[str, set[str]] = {}
    for campaign_id, variant_id in rows:
        variants = found.setdefault(campaign_id, set())
        if variant_id is not None:
            variants.add(variant_id)
    return {c: frozenset(found[c]) if c in found else _UNKNOWN for c in campaign_ids}


def ingest(connection: Any, stage: pa.Table | None, job: IngestJob) -> AppendResult:
    """Append the staged batch (and ``job.decisions``) in one transaction; its counts."""
    if stage is None:
        stage = pa.table({name: pa.array([], pa.string()) for name in ("campaign_id",)})
        valid = np.zeros(0, dtype=bool)
    else:
        valid = pc.is_null(stage.column("error_field")).to_numpy(zero_copy_only=False)
    good = _first_of_each(stage.filter(pa.array(valid))) if valid.any() else None
    with connection.transaction():
        (batch_id,) = connection.execute("SELECT nextval('ingest_batch_id')").fetchone()
        inserted: set[tuple[str, str]] = set()
        new = None
        if good is not None:
            connection.execute(_STAGE_TABLE)
            _copy(connection, "adloop_events_in", good.select(list(_EVENT_COLUMNS)))
            inserted = set(connection.execute(_INSERT_EVENTS, [batch_id]).fetchall())
            if inserted:
                keys = pc.binary_join_element_wise(good["campaign_id"], good["event_id"], "\x1f")
                wanted = pa.array([f"{c}\x1f{e}" for c, e in inserted], pa.string())
                new = good.filter(pc.is_in(keys, value_set=wanted))
                _copy(connection, "event_aggregates", _hourly(new).select(_AGGREGATE_COLUMNS))
        log = _log_rows(stage, valid, new)
        if log:
            connection.cursor().executemany(
                "INSERT INTO ingest_log VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(batch_id, job.source, job.received_at, *row) for row in log],
            )
        if job.decisions is not None and job.decisions.num_rows:
            _append_decisions(connection, job.decisions)
    errors = []
    if not valid.all():
        bad = stage.filter(pc.invert(pa.array(valid))).sort_by("r").slice(0, job.max_errors)
        errors = [
            RowError(row=int(row), field=field, reason=reason)
            for row, field, reason in zip(
                *(bad.column(name).to_pylist() for name in ("r", "error_field", "error_reason")),
                strict=True,
            )
        ]
    n_valid = int(valid.sum())
    return AppendResult(
        accepted=len(inserted),
        duplicates=n_valid - len(inserted),
        rejected=len(valid) - n_valid,
        errors=errors,
        batch_id=int(batch_id),
    )


def _first_of_each(good: pa.Table) -> pa.Table:
    """The valid rows without repeats inside the batch: the first row of each (campaign, id)."""
    first = (
        good.select(["campaign_id", "event_id", "r"])
        .group_by(["campaign_id", "event_id"], use_threads=False)
        .aggregate([("r", "min")])
        .column("r_min")
    )
    if len(first) == good.num_rows:
        return good
    return good.filter(pc.is_in(good.column("r"), value_set=first))


def _log_rows(stage: pa.Table, valid: np.ndarray, new: pa.Table | None) -> list[tuple]:
    """``(campaign_id, accepted, duplicates, rejected)`` per campaign the batch names."""
    counts: dict[str | None, list[int]] = {}
    for campaign_id, ok in zip(stage.column("campaign_id").to_pylist(), valid, strict=True):
        row = counts.setdefault(campaign_id, [0, 0, 0])
        row[0 if ok else 2] += 1  # valid, _, rejected
    if new is not None:
        for campaign_id in new.column("campaign_id").to_pylist():
            counts[campaign_id][1] += 1
    return [
        (campaign_id, accepted, n_valid - accepted, rejected)
        for campaign_id, (n_valid, accepted, rejected) in counts.items()
    ]


def _append_decisions(connection: Any, decisions: pa.Table) -> None:
    _copy(connection, "decisions", decisions.select(list(_DECISION_COLUMNS)))
    grouped = decisions.group_by(["campaign_id", "variant_id"], use_threads=False).aggregate(
        [("probability", "count"), ("probability", "sum")]
    )
    _copy(
        connection,
        "decision_aggregates",
        grouped.select(["campaign_id", "variant_id", "probability_count", "probability_sum"]),
        columns=("campaign_id", "variant_id", "n", "probability_sum"),
    )


def _copy(
    connection: Any, table: str, rows: pa.Table, columns: tuple[str, ...] | None = None
) -> None:
    """COPY ``rows`` into ``table`` as CSV (strings quoted, so '' and NULL stay apart)."""
    if not rows.num_rows:
        return
    out = io.BytesIO()
    pacsv.write_csv(rows, out, pacsv.WriteOptions(include_header=False))
    names = ", ".join(columns or rows.column_names)
    with connection.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(out.getvalue())
