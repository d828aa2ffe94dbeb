"""PostgreSQL as the shared store of a scaled-out deployment: arms, counts, offsets, snapshots.

Tables (created by :func:`ensure_schema`, all prefixed ``adloop_``):

- ``arms``: which variants of which campaign (and tenant) may receive events, their status and
  text (what ``choose`` answers);
- ``counts``: impressions, clicks, conversions and value per campaign, variant and segment;
- ``seen``: every accepted event's key, the MD5 of ``(campaign_id, event_id)`` (16 bytes, so
  the index stays small; scoped to the campaign like the embedded store's dedupe), so a
  duplicate delivery counts once;
- ``offsets``: per consumer group, topic and partition, the next offset to read;
- ``rejected``: rows that broke an ingest rule, with the field and the reason;
- ``changes``: a sequence number per campaign, bumped by every batch that changed its counts;
- ``snapshots``: versioned allocations (traffic weights) per campaign;
- ``secret``: the key of idempotent decision ids, one per deployment, made at creation.

:func:`apply_batch` is the aggregation step: in **one transaction** it checks that the batch
starts where the group's stored offsets say (so a zombie worker whose partitions moved on
cannot count twice), copies the batch in, drops events already seen, adds the rest to the
counts and moves the offsets past the batch. A worker killed at any point leaves either all
of a batch or none of it.

Example::

    with connect(url) as conn:
        ensure_schema(conn)
        register_arms(conn, "acme", "c_1", ["v_a", "v_b"])
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["BatchResult", "OffsetConflict", "apply_batch", "campaign_counts", "connect",
           "decision_id_secret", "ensure_schema", "event_keys", "register_arms", "rejected_rows",
           "stored_offsets"]  # fmt: skip

SCHEMA = """
CREATE TABLE IF NOT EXISTS adloop_arms (
    tenant TEXT NOT NULL, campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active', PRIMARY KEY (campaign_id, variant_id));
ALTER TABLE adloop_arms ADD COLUMN IF NOT EXISTS text TEXT;
CREATE TABLE IF NOT EXISTS adloop_counts (
    campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL, segment TEXT NOT NULL DEFAULT '',
    impressions BIGINT NOT NULL DEFAULT 0, clicks BIGINT NOT NULL DEFAULT 0,
    conversions BIGINT NOT NULL DEFAULT 0, value DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, variant_id, segment));
CREATE TABLE IF NOT EXISTS adloop_seen (key UUID PRIMARY KEY);
CREATE TABLE IF NOT EXISTS adloop_offsets (
    consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INT NOT NULL,
    next_offset BIGINT NOT NULL, PRIMARY KEY (consumer_group, topic, partition));
CREATE TABLE IF NOT EXISTS adloop_rejected (
    topic TEXT, partition INT, message_offset BIGINT, event_id TEXT, campaign_id TEXT,
    variant_id TEXT, field TEXT NOT NULL, reason TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS adloop_changes (
    campaign_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS adloop_secret (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), secret BYTEA NOT NULL);
INSERT INTO adloop_secret (secret) VALUES (decode(md5(random()::text) || md5(random()::text),
    'hex')) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS adloop_snapshots (
    campaign_id TEXT NOT NULL, version BIGINT NOT NULL, source_seq BIGINT NOT NULL,
    built_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), variants JSONB NOT NULL,
    weights JSONB NOT NULL, PRIMARY KEY (campaign_id, version));
"""

_BATCH_COLUMNS = ("key", "campaign_id", "variant_id", "segment", "type", "value", "event_id",
                  "partition", "message_offset")  # fmt: skip
_TYPE_CODES = {"impression": 0, "click": 1, "conversion": 2}

_APPLY = """
WITH known AS (
    SELECT b.* FROM adloop_batch b
    JOIN adloop_arms a USING (campaign_id, variant_id)
), fresh AS (
    INSERT INTO adloop_seen (key) SELECT key FROM known
    ON CONFLICT DO NOTHING
    RETURNING key
), added AS (
    INSERT INTO adloop_counts AS c
        (campaign_id, variant_id, segment, impressions, clicks, conversions, value)
    SELECT k.campaign_id, k.variant_id, k.segment,
           count(*) FILTER (WHERE k.type = 0), count(*) FILTER (WHERE k.type = 1),
           count(*) FILTER (WHERE k.type = 2),
           coalesce(sum(k.value) FILTER (WHERE k.type = 2), 0)
    FROM known k JOIN fresh f USING (key)
    GROUP BY k.campaign_id, k.variant_id, k.segment
    ON CONFLICT (campaign_id, variant_id, segment) DO UPDATE SET
        impressions = c.impressions + excluded.impressions,
        clicks = c.clicks + excluded.clicks,
        conversions = c.conversions + excluded.conversions,
        value = c.value + excluded.value
    RETURNING campaign_id
), bumped AS (
    INSERT INTO adloop_changes AS ch (campaign_id, seq)
    SELECT DISTINCT campaign_id, 1 FROM added
    ON CONFLICT (campaign_id) DO UPDATE SET seq = ch.seq + 1
    RETURNING campaign_id
), unknown AS (
    INSERT INTO adloop_rejected
        (topic, partition, message_offset, event_id, campaign_id, variant_id, field, reason)
    SELECT %(topic)s, b.partition, b.message_offset, b.event_id, b.campaign_id, b.variant_id,
           'variant_id', 'unknown campaign or variant (register the arms first)'
    FROM adloop_batch b
    WHERE NOT EXISTS (SELECT 1 FROM adloop_arms a
                      WHERE a.campaign_id = b.campaign_id AND a.variant_id = b.variant_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM unknown), (SELECT count(*) FROM bumped)
"""


def event_keys(campaign_ids: list[str], event_ids: list[str]) -> list[str]:
    """Each event's dedupe key: MD5 of ``campaign_id`` and ``event_id``, as 32 hex digits."""
    return [
        hashlib.md5(f"{c}\x1f{e}".encode(), usedforsecurity=False).hexdigest()
        for c, e in zip(campaign_ids, event_ids, strict=True)
    ]


def _first_of_each(table: pa.Table, keys: list[str]) -> pa.Table:
    """The batch with its repeats removed (the first row of each key), keys as a column."""
    table = table.append_column("key", pa.array(keys, pa.string()))
    indexed = pa.table({"key": table["key"], "row": pa.array(range(table.num_rows), pa.int64())})
    first = indexed.group_by("key", use_threads=False).aggregate([("row", "min")])["row_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))  # in batch order


class OffsetConflict(RuntimeError):
    """The group's stored offsets moved on (another worker took the partition): the batch was
    not applied; seek to :attr:`stored` and read again."""

    def __init__(self, stored: dict[int, int]) -> None:
        super().__init__(f"stored offsets moved on: {stored}")
        self.stored = stored


@dataclass(frozen=True)
class BatchResult:
    """What one applied batch did: rows in, accepted, duplicates and rejected."""

    rows: int
    accepted: int
    duplicates: int
    rejected: int


def connect(url: str, **settings: Any) -> Any:
    """A psycopg 3 connection to ``url`` (``postgresql://…``)."""
    import psycopg

    return psycopg.connect(url, **settings)


def ensure_schema(conn: Any) -> None:
    """Create the tables when absent (idempotent; safe from several processes)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7466830)")  # one creator at a time
        conn.execute(SCHEMA)


def register_arms(
    conn: Any,
    tenant: str,
    campaign_id: str,
    variant_ids: Sequence[str],
    status: str = "active",
    *,
    texts: Sequence[str] | None = None,
) -> None:
    """Let events of these variants in (or set their status: ``active``, ``retired``), with
    the ``texts`` choosers answer (none: keep what is stored).

    The campaign's change sequence moves on too, so the refresher builds a snapshot over the
    arms as they now are (a new campaign gets its first one before any event arrives).
    """
    texts = list(texts) if texts is not None else [None] * len(variant_ids)
    if len(texts) != len(variant_ids):
        raise ValueError(f"texts: got {len(texts)} for {len(variant_ids)} variant_ids")
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO adloop_arms (tenant, campaign_id, variant_id, status, text) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (campaign_id, variant_id) "
            "DO UPDATE SET status = excluded.status, tenant = excluded.tenant, "
            "text = coalesce(excluded.text, adloop_arms.text)",
            [(tenant, campaign_id, v, status, t) for v, t in zip(variant_ids, texts, strict=True)],
        )
        conn.execute(
            "INSERT INTO adloop_changes AS ch (campaign_id, seq) VALUES (%s, 1) "
            "ON CONFLICT (campaign_id) DO UPDATE SET seq = ch.seq + 1",
            (campaign_id,),
        )


def decision_id_secret(conn: Any) -> bytes:
    """The deployment's key of idempotent decision ids (every serving process shares it)."""
    return bytes(conn.execute("SELECT secret FROM adloop_secret").fetchone()[0])


def stored_offsets(conn: Any, group: str, topic: str) -> dict[int, int]:
    """Next offset to read per partition, as the group last committed it."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM adloop_offsets WHERE consumer_group = %s "
        "AND topic = %s",
        (group, topic),
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def _csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))
    return out.getvalue()


def apply_batch(
    conn: Any,
    *,
    group: str,
    topic: str,
    events: pa.Table,
    rejected: pa.Table,
    ranges: Mapping[int, tuple[int, int]],
) -> BatchResult:
    """Apply one batch and move the group's offsets, all in one transaction.

    ``events``: valid rows with ``partition`` and ``message_offset`` columns; ``rejected``:
    rows that broke a rule (``field``, ``reason``); ``ranges``: per partition, the first and last
    offset the batch covers. Raises :class:`OffsetConflict` (nothing applied) when a
    partition's stored offset is not the batch's first.
    """
    with conn.transaction():
        stored = dict(
            conn.execute(
                "SELECT partition, next_offset FROM adloop_offsets WHERE consumer_group = %s "
                "AND topic = %s AND partition = ANY(%s) FOR UPDATE",
                (group, topic, list(ranges)),
            ).fetchall()
        )
        moved = {p: stored[p] for p, (first, _) in ranges.items() if stored.get(p, first) != first}
        if moved:
            raise OffsetConflict(moved)
        conn.execute("SET LOCAL work_mem = '256MB'")  # the batch's aggregation stays in memory
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS adloop_batch (key UUID, campaign_id TEXT, "
            "variant_id TEXT, segment TEXT, type SMALLINT, value DOUBLE PRECISION, event_id TEXT, "
            "partition INT, message_offset BIGINT) ON COMMIT DELETE ROWS"
        )
        keys = event_keys(events["campaign_id"].to_pylist(), events["event_id"].to_pylist())
        unique = _first_of_each(events, keys)
        unique = unique.set_column(
            unique.schema.get_field_index("type"), "type",
            pc.cast(pc.index_in(unique["type"], pa.array(list(_TYPE_CODES))), pa.int16()),
        )  # fmt: skip
        with conn.cursor().copy(
            f"COPY adloop_batch ({', '.join(_BATCH_COLUMNS)}) FROM STDIN (FORMAT csv)"
        ) as copy:
            if unique.num_rows:
                copy.write(_csv(unique.select(list(_BATCH_COLUMNS))))
        fresh, unknown, _ = conn.execute(_APPLY, {"topic": topic}).fetchone()
        if rejected.num_rows:
            conn.cursor().executemany(
                "INSERT INTO adloop_rejected (topic, partition, message_offset, event_id, "
                "campaign_id, variant_id, field, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(topic, r["partition"], r["message_offset"], r["event_id"], r["campaign_id"],
                  r["variant_id"], r["field"], r["reason"]) for r in rejected.to_pylist()],
            )  # fmt: skip
        conn.cursor().executemany(
            "INSERT INTO adloop_offsets (consumer_group, topic, partition, next_offset) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (consumer_group, topic, partition) "
            "DO UPDATE SET next_offset = excluded.next_offset",
            [(group, topic, p, last + 1) for p, (_, last) in ranges.items()],
        )
    # every row is accepted, a duplicate (of an earlier or the same batch) or rejected
    return BatchResult(
        rows=events.num_rows + rejected.num_rows,
        accepted=int(fresh),
        duplicates=events.num_rows - int(fresh) - int(unknown),
        rejected=int(unknown) + rejected.num_rows,
    )


def campaign_counts(conn: Any, campaign_id: str) -> dict[str, dict[str, float]]:
    """Per variant (all segments): impressions, clicks, conversions, value."""
    rows = conn.execute(
        "SELECT variant_id, sum(impressions), sum(clicks), sum(conversions), sum(value) "
        "FROM adloop_counts WHERE campaign_id = %s GROUP BY variant_id",
        (campaign_id,),
    ).fetchall()
    return {
        v: {"impressions": int(i), "clicks": int(c), "conversions": int(k), "value": float(x)}
        for v, i, c, k, x in rows
    }


def rejected_rows(conn: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The latest rejected rows, newest first."""
    cursor = conn.execute(
        "SELECT partition, message_offset, event_id, campaign_id, variant_id, field, reason "
        "FROM adloop_rejected ORDER BY at DESC LIMIT %s",
        (limit,),
    )
    names = [d.name for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
