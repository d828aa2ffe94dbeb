"""Statistics read from the log and its aggregates: arm stats, decision stats, data quality."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from adloop.storage._core import StoreCore
from adloop.storage._dialect import DUCKDB, Dialect
from adloop.storage._fields import naive_utc
from adloop.storage._validate import MAX_EVENT_VALUE
from adloop.storage.errors import InvalidArgumentError

#: The most events a count in ``arm_stats`` reports (``2**53``, the largest integer a float64
#: holds exactly). Unreachable by real traffic; it only stops a corrupt aggregate row from
#: overflowing the BIGINT result.
MAX_REPORTED_COUNT = 2**53

# Rows written before values were bounded (or edited by hand) may hold NaN, infinite, negative
# or huge values and counts. Statistics read each row through these guards, so such a row can
# never make a sum infinite or NaN: a NaN or negative value counts as 0, a huge one as the
# largest value its events could have carried; ``data_quality`` reports the rows.
_ROW_COUNT = "greatest(n, 0)::{double}"
_ROW_VALUE = (
    "CASE WHEN {finite} AND value > 0 "
    f"THEN least(value, greatest(n, 0) * {MAX_EVENT_VALUE!r}) ELSE 0.0 END"
)
_EVENT_VALUE = (
    f"CASE WHEN {{finite}} AND value > 0 THEN least(value, {MAX_EVENT_VALUE!r}) ELSE 0.0 END"
)
# An event's hour-mean time comes from ``ts_offset_sum / n``; a corrupt row can make it NaN or
# far in the future. Weights are clamped to [0, 1]: no event counts more than a fresh one.
_WEIGHT = "greatest(0.0, least(1.0, coalesce(pow(2.0, {exponent}), 0.0)))"
_EXPONENT = "-($now - p.t) / $half_life"


class StatsMixin(StoreCore):
    """Per-variant statistics for the bandits, and checks of the event stream."""

    _dialect: Dialect = DUCKDB

    def arm_stats(
        self,
        campaign_id: str,
        *,
        segment: str | None = None,
        since: datetime | None = None,
        half_life: timedelta | None = None,
        by_segment: bool = False,
    ) -> pl.DataFrame:
        """Deduplicated impressions, clicks, conversions and conversion value per variant.

        Reads the per-hour aggregate rows written with the events (a few rows per variant and
        hour), not the event log, so it stays fast with tens of millions of events.

        Args:
            campaign_id: the campaign.
            segment: only events of this segment.
            since: only events with ``ts >= since`` (exact: the partial first hour is read from
                the log).
            half_life: weight each event by ``0.5 ** (age / half_life)`` (age measured from the
                store's clock); counts become floats. Events of one hour are weighted at their
                mean time: for a half-life of ``h`` hours the relative error is at most
                ``0.06 / h**2`` (``0.02 / h**2`` for events spread evenly over the hour).
                No weight exceeds 1: an event stamped after the store's clock counts as fresh.
            by_segment: one row per (variant, segment) seen, instead of one per variant.

        Returns:
            ``variant_id`` [, ``segment``], ``impressions``, ``clicks``, ``conversions`` (Int64, or
            Float64 when discounted), ``value`` (Float64); every variant of the campaign appears,
            with zeros when it has no events; rows in variant creation order. Always finite and
            non-negative, even over corrupt rows (see ``data_quality``'s
            ``values_out_of_range``); counts stop at ``MAX_REPORTED_COUNT``.

        Raises:
            InvalidArgumentError: ``half_life`` is zero or negative.
        """
        params: dict[str, Any] = {"campaign": campaign_id, "segment": segment}
        since_hour = None
        dialect = self._dialect
        finite = dialect.finite.format("value")
        row_count = _ROW_COUNT.format(double=dialect.double)
        parts = [
            f"""SELECT variant_id, segment, type, {row_count} AS n,
                      {_ROW_VALUE.format(finite=finite)} AS value,
                      {dialect.epoch.format("hour")} + ts_offset_sum / nullif(n, 0) AS t
               FROM event_aggregates
               WHERE campaign_id = $campaign AND ($segment IS NULL OR segment = $segment)
                 AND ($since_hour IS NULL OR hour >= $since_hour)"""
        ]
        if since is not None:
            since = naive_utc(since, "since")
            floor = since.replace(minute=0, second=0, microsecond=0)
            since_hour = floor if floor == since else floor + timedelta(hours=1)
            if since_hour != since:
                params["since"] = since
                parts.append(
                    f"""SELECT variant_id, segment, type, 1.0 AS n,
                              {_EVENT_VALUE.format(finite=finite)} AS value,
                              {dialect.epoch.format("ts")} AS t
                       FROM events
                       WHERE campaign_id = $campaign AND ($segment IS NULL OR segment = $segment)
                         AND ts >= $since AND ts < $since_hour"""
                )
        params["since_hour"] = since_hour
        if half_life is not None:
            seconds = half_life.total_seconds()
            if not seconds > 0:
                raise InvalidArgumentError(f"half_life must be positive, got {half_life!r}")
            params["now"] = self._now().replace(tzinfo=UTC).timestamp()
            params["half_life"] = seconds
            weight = _WEIGHT.format(exponent=dialect.exponent.format(_EXPONENT))
            count_type, value_type = dialect.double, dialect.double
        else:
            weight = "1.0"
            count_type, value_type = "BIGINT", dialect.double
        union = " UNION ALL ".join(parts)
        sums = ", ".join(
            f"least(coalesce(sum(p.{column} * {weight}) FILTER (WHERE p.type = '{kind}'), 0), "
            f"{bound})::{cast} AS {name}"
            for column, kind, cast, name, bound in [
                ("n", "impression", count_type, "impressions", MAX_REPORTED_COUNT),
                ("n", "click", count_type, "clicks", MAX_REPORTED_COUNT),
                ("n", "conversion", count_type, "conversions", MAX_REPORTED_COUNT),
                ("value", "conversion", value_type, "value", MAX_REPORTED_COUNT * MAX_EVENT_VALUE),
            ]
        )
        if by_segment:
            sql = f"""
                WITH p AS ({union}),
                     v AS (SELECT variant_id, created_at FROM variants
                           WHERE campaign_id = $campaign),
                     s AS (SELECT DISTINCT segment FROM p)
                SELECT v.variant_id, s.segment, {sums}
                FROM v CROSS JOIN s
                LEFT JOIN p
                    ON p.variant_id = v.variant_id AND p.segment IS NOT DISTINCT FROM s.segment
                GROUP BY v.variant_id, v.created_at, s.segment
                ORDER BY v.created_at, v.variant_id, s.segment NULLS FIRST"""
        else:
            sql = f"""
                WITH p AS ({union}),
                     v AS (SELECT variant_id, created_at FROM variants
                           WHERE campaign_id = $campaign)
                SELECT v.variant_id, {sums}
                FROM v LEFT JOIN p ON p.variant_id = v.variant_id
                GROUP BY v.variant_id, v.created_at
                ORDER BY v.created_at, v.variant_id"""
        used = {name: value for name, value in params.items() if f"${name}" in sql}
        return self._frame(sql, used)

    def _frame(self, sql: str, params: dict[str, Any] | list) -> pl.DataFrame:
        """The result of a statistics query as a polars DataFrame."""
        return self._db().reader().sql(sql, params=params).pl()

    def decision_stats(self, campaign_id: str) -> pl.DataFrame:
        """Per variant: how many decisions chose it and the sum of their assignment probabilities.

        Returns:
            ``variant_id``, ``decisions`` (Int64), ``expected_share_sum`` (Float64); every variant
            of the campaign appears.
        """
        sql = f"""
            SELECT v.variant_id, coalesce(sum(d.n), 0)::BIGINT AS decisions,
                   coalesce(sum(d.probability_sum), 0)::{self._dialect.double} AS expected_share_sum
            FROM variants AS v
            LEFT JOIN decision_aggregates AS d
                ON d.campaign_id = v.campaign_id AND d.variant_id = v.variant_id
            WHERE v.campaign_id = ?
            GROUP BY v.variant_id, v.created_at ORDER BY v.created_at, v.variant_id"""
        return self._frame(sql, [campaign_id])

    def data_quality(self, campaign_id: str) -> dict[str, Any]:
        """Problems in the campaign's event stream; nothing here is ever dropped from the log.

        Returns:
            ``orphan_clicks`` / ``orphan_conversions``: clicks / conversions carrying a
            decision_id for which no impression is stored (yet); ``unattributed_events``: clicks
            and conversions without a decision_id (they cannot be checked);
            ``clicks_exceed_impressions``: variant ids with more clicks than impressions;
            ``events_for_retired_variants``: events stamped after their variant was retired;
            ``duplicate_deliveries``: valid rows received again and not stored;
            ``rejected_rows``: invalid rows received; ``values_out_of_range``: stored events
            whose value is NaN, infinite, negative or above ``MAX_EVENT_VALUE`` (only rows
            written before values were validated, or edited by hand; ``arm_stats`` reads them
            as 0, or as ``MAX_EVENT_VALUE`` when too large).
        """
        reader = self._db().reader()
        orphans = reader.execute(
            """WITH shown AS (
                   SELECT DISTINCT decision_id FROM events
                   WHERE campaign_id = $c AND type = 'impression' AND decision_id IS NOT NULL)
               SELECT
                   count(*) FILTER (WHERE e.type = 'click' AND e.decision_id IS NOT NULL
                                    AND s.decision_id IS NULL),
                   count(*) FILTER (WHERE e.type = 'conversion' AND e.decision_id IS NOT NULL
                                    AND s.decision_id IS NULL),
                   count(*) FILTER (WHERE e.decision_id IS NULL)
               FROM events AS e LEFT JOIN shown AS s ON s.decision_id = e.decision_id
               WHERE e.campaign_id = $c AND e.type IN ('click', 'conversion')""",
            {"c": campaign_id},
        ).fetchall()[0]
        (late,) = reader.execute(
            """SELECT count(*) FROM events AS e
               JOIN variants AS v ON v.campaign_id = e.campaign_id AND v.variant_id = e.variant_id
               WHERE e.campaign_id = $c AND v.status = 'retired' AND e.ts > v.retired_at""",
            {"c": campaign_id},
        ).fetchall()[0]
        duplicates, rejected = reader.execute(
            "SELECT coalesce(sum(duplicates), 0), coalesce(sum(rejected), 0) FROM ingest_log "
            "WHERE campaign_id = ?",
            [campaign_id],
        ).fetchall()[0]
        finite = self._dialect.finite.format("value")
        (out_of_range,) = reader.execute(
            f"""SELECT count(*) FROM events
               WHERE campaign_id = $c AND NOT ({finite} AND value BETWEEN 0 AND $max)""",
            {"c": campaign_id, "max": MAX_EVENT_VALUE},
        ).fetchall()[0]
        stats = self.arm_stats(campaign_id)
        exceed = stats.filter(pl.col("clicks") > pl.col("impressions"))["variant_id"].to_list()
        return {
            "orphan_clicks": int(orphans[0]),
            "orphan_conversions": int(orphans[1]),
            "unattributed_events": int(orphans[2]),
            "clicks_exceed_impressions": exceed,
            "events_for_retired_variants": int(late),
            "duplicate_deliveries": int(duplicates),
            "rejected_rows": int(rejected),
            "values_out_of_range": int(out_of_range),
        }
