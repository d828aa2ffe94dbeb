"""Staging an event group: each row's first error, or proof that every row is valid.

Two ways to the same answer (a row's ``error_field`` and ``error_reason``, null when valid):

- ``stage_plainly_valid``: a handful of Arrow checks when every row is typed and certainly
  valid (what the HTTP service and the engine send); only the keys come from DuckDB;
- ``STAGE_SELECT``: one SQL pass that parses timestamps and values and words each row's
  reason, for everything else.

Both read the merged group with the ``campaign_known`` / ``variant_known`` flags that
``with_known_flags`` adds.
"""

from __future__ import annotations

import contextlib

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adloop.storage._keys import EVENT_KEY_SQL

MAX_EVENT_VALUE = 1e9
"""The largest ``value`` an event may carry (conversion value, in the campaign's currency unit).

Values must be finite and in ``[0, MAX_EVENT_VALUE]``; a row outside is rejected with field
``value``. The bound keeps every aggregate finite: a float64 sum of ``n`` values is at most
``n * 1e9``, so even ``2**63`` events sum to about ``9.2e27``, far below float64's ``1.8e308``,
and the bandits' posteriors never see an infinite value sum.
"""

STAGE_SELECT = """
WITH parsed AS (
    SELECT
        i.job, i.r, i.event_id, i.type, i.campaign_id, i.variant_id, i.decision_id, i.segment,
        i.ts_text,
        coalesce(i.ts_native, TRY_CAST(TRY_CAST(i.ts_text AS TIMESTAMPTZ) AS TIMESTAMP)) AS ts,
        i.value_text,
        CASE WHEN i.value_num IS NOT NULL THEN i.value_num
             WHEN i.value_text IS NULL OR trim(i.value_text) = '' THEN 0.0
             ELSE TRY_CAST(i.value_text AS DOUBLE) END AS value,
        i.max_ts, i.parse_field, i.parse_error, i.campaign_known, i.variant_known
    FROM _in AS i
)
SELECT
    job, r, hash(campaign_id, event_id) AS event_key,  -- EVENT_KEY_SQL
    event_id, type, campaign_id, variant_id, decision_id, segment, ts, value,
    CASE
        WHEN parse_error IS NOT NULL THEN parse_field
        WHEN event_id IS NULL OR trim(event_id) = '' OR length(event_id) > 128 THEN 'event_id'
        WHEN type IS NULL OR type NOT IN ('impression', 'click', 'conversion') THEN 'type'
        WHEN campaign_id IS NULL OR NOT campaign_known THEN 'campaign_id'
        WHEN variant_id IS NULL OR NOT variant_known THEN 'variant_id'
        WHEN ts IS NULL OR ts > max_ts THEN 'ts'
        WHEN value IS NULL OR isnan(value) OR isinf(value) OR value < 0
             OR value > $max_value THEN 'value'
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
        WHEN value > $max_value
            THEN 'value ' || value::VARCHAR || ' is above the maximum ' || $max_value::VARCHAR
                 || ' (adloop.storage.MAX_EVENT_VALUE)'
    END AS error_reason
FROM parsed
""".replace("$max_value", f"CAST({MAX_EVENT_VALUE!r} AS DOUBLE)")

STAGE_SQL = "CREATE OR REPLACE TEMP VIEW _stage AS " + STAGE_SELECT


def stage_group(connection: duckdb.DuckDBPyConnection, merged: pa.Table) -> pa.Table:
    """The staged group: ``stage_plainly_valid`` when it can tell, else ``STAGE_SELECT``."""
    stage = stage_plainly_valid(connection, merged)
    if stage is not None:
        return stage
    # some row may be invalid (or needs parsing): SQL names each reason
    connection.register("_in", merged)
    try:
        return connection.sql(STAGE_SELECT + " ORDER BY job, r").to_arrow_table()
    finally:
        # After a failed statement DuckDB may refuse even this; the view dies with the error.
        with contextlib.suppress(duckdb.Error):
            connection.unregister("_in")


def stage_plainly_valid(connection: duckdb.DuckDBPyConnection, merged: pa.Table) -> pa.Table | None:
    """The staged group, built in Arrow, when every row is certainly valid; else None.

    The common case (typed columns from the HTTP service or the engine, nothing wrong) needs
    no parsing and no reasons, so only the keys come from DuckDB (``hash()`` must be the one
    the log was written with). Each check here is at least as strict as ``STAGE_SELECT``'s,
    so a row it passes is one the SQL would pass with the same values; anything doubtful
    (text timestamps or values, a possible error) returns None and the SQL stage decides.
    """
    n = merged.num_rows
    if merged.column("ts_text").null_count != n or merged.column("value_text").null_count != n:
        return None
    if merged.column("parse_error").null_count != n:
        return None
    event_id = merged.column("event_id")
    value = pc.fill_null(merged.column("value_num"), 0.0)
    ts = merged.column("ts_native")
    checks = [
        merged.column("campaign_known"),
        merged.column("variant_known"),
        pc.is_in(merged.column("type"), value_set=_TYPES),
        pc.less_equal(pc.utf8_length(event_id), 128),
        pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(event_id)), 0),
        pc.less_equal(ts, merged.column("max_ts")),
        pc.is_finite(value),
        pc.greater_equal(value, 0.0),
        pc.less_equal(value, MAX_EVENT_VALUE),
    ]
    for check in checks:
        if check.null_count or not pc.all(check).as_py():
            return None
    keys = _hashes(connection, merged.column("campaign_id"), event_id)
    nulls = pa.nulls(n, pa.string())
    return pa.table(
        {
            "job": merged.column("job"),
            "r": merged.column("r"),
            "event_key": keys,
            "event_id": event_id,
            "type": merged.column("type"),
            "campaign_id": merged.column("campaign_id"),
            "variant_id": merged.column("variant_id"),
            "decision_id": merged.column("decision_id"),
            "segment": merged.column("segment"),
            "ts": ts,
            "value": value,
            "error_field": nulls,
            "error_reason": nulls,
        }
    )


_TYPES = pa.array(["impression", "click", "conversion"], pa.string())


def _hashes(
    connection: duckdb.DuckDBPyConnection, campaign_id: pa.ChunkedArray, event_id: pa.ChunkedArray
) -> pa.Array:
    """Each row's event key (``EVENT_KEY_SQL``, as ``STAGE_SELECT`` computes it), in row order."""
    # A projection keeps its input's order (insertion order is preserved by default), and
    # DuckDB finds the local Arrow table by name: cheaper than registering a view.
    _adloop_event_ids = pa.table({"campaign_id": campaign_id, "event_id": event_id})  # noqa: F841
    keys = connection.execute(
        f"SELECT {EVENT_KEY_SQL} AS event_key FROM _adloop_event_ids"
    ).fetchnumpy()["event_key"]
    return pa.array(np.asarray(keys, dtype=np.uint64), pa.uint64())


def with_known_flags(
    connection: duckdb.DuckDBPyConnection, table: pa.Table, known: dict[str, frozenset[str]]
) -> pa.Table:
    """Add ``campaign_known`` / ``variant_known`` by set membership in Arrow.

    A batch names few campaigns, so their variants are fetched once and every row is checked
    with a vectorized ``is_in``; joining each row against the variants table in SQL cost more
    than the rest of validation together. ``known`` caches each campaign's variant ids
    (an empty set: no such campaign) across groups; the writer clears it whenever any other
    write runs, since only those can add campaigns or variants.
    """
    campaign_ids = pc.unique(table.column("campaign_id")).drop_null().to_pylist()
    missing = [campaign_id for campaign_id in campaign_ids if campaign_id not in known]
    if missing:
        rows = connection.execute(
            """SELECT c.campaign_id, list(v.variant_id) FILTER (WHERE v.variant_id IS NOT NULL)
               FROM campaigns AS c LEFT JOIN variants AS v ON v.campaign_id = c.campaign_id
               WHERE list_contains(?, c.campaign_id) GROUP BY c.campaign_id""",
            [missing],
        ).fetchall()
        found = {campaign_id: frozenset(variants or ()) for campaign_id, variants in rows}
        for campaign_id in missing:
            known[campaign_id] = found.get(campaign_id, _UNKNOWN)
    known_campaigns = [c for c in campaign_ids if known[c] is not _UNKNOWN]
    pairs = [f"{c}\x1f{v}" for c in known_campaigns for v in known[c]]
    campaign_known = pc.is_in(
        table.column("campaign_id"), value_set=pa.array(known_campaigns, pa.string())
    )
    pair = pc.binary_join_element_wise(
        table.column("campaign_id"), table.column("variant_id"), "\x1f"
    )
    variant_known = pc.is_in(pair, value_set=pa.array(pairs, pa.string()))
    table = table.append_column("campaign_known", pc.fill_null(campaign_known, False))
    return table.append_column("variant_known", pc.fill_null(variant_known, False))


#: The cached answer for a campaign that does not exist (distinct from one without variants).
_UNKNOWN: frozenset[str] = frozenset({"\x00unknown"})
