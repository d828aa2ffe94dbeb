"""The event store on a real DuckDB file: idempotent ingest, validation, statistics, history."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from adloop import storage
from adloop.storage import (
    AppendResult,
    ConflictError,
    InvalidRecordError,
    NotFoundError,
    RowError,
    Store,
    StoreClosedError,
)

NOW = datetime(2026, 3, 1, 12, 0, 0)


class FakeClock:
    """A settable clock, so 'the future' and discounting are deterministic."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def event(event_id: str, kind: str = "impression", variant: str = "v_a", **extra) -> dict:
    row = {
        "event_id": event_id,
        "type": kind,
        "campaign_id": "c_1",
        "variant_id": variant,
        "ts": NOW - timedelta(hours=1),
    }
    row.update(extra)
    return row


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_path: Path, clock: FakeClock):
    with Store(db_path, clock=clock) as opened:
        opened.insert_campaign(
            {
                "campaign_id": "c_1",
                "tenant": "acme",
                "name": "spring",
                "objective": "ctr",
                "brief": {"product": "shoes"},
            },
            [{"variant_id": "v_a", "headline": "A"}, {"variant_id": "v_b", "headline": "B"}],
        )
        yield opened


def stats_by_variant(frame: pl.DataFrame) -> dict[str, dict]:
    return {row["variant_id"]: row for row in frame.to_dicts()}


def test_public_surface_is_named():
    for name in storage.__all__:
        assert hasattr(storage, name), name
    assert {
        "Store",
        "AppendResult",
        "RowError",
        "StorageError",
        "StoreLockedError",
        "read_events_file",
    } <= set(storage.__all__)


def test_replayed_batch_adds_nothing(store: Store):
    batch = [event(f"e{i}") for i in range(50)] + [event("k1", "click")]
    first = store.append_events(batch)
    assert (first.accepted, first.duplicates, first.rejected) == (51, 0, 0)
    again = store.append_events(batch)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 51, 0)
    stats = stats_by_variant(store.arm_stats("c_1"))
    assert stats["v_a"]["impressions"] == 50
    assert stats["v_a"]["clicks"] == 1
    assert store.data_quality("c_1")["duplicate_deliveries"] == 51


def test_duplicates_within_one_batch_count_once(store: Store):
    batch = [event("x"), event("x"), event("y"), event("x", variant="v_b"), event("y")]
    result = store.append_events(batch)
    assert (result.accepted, result.duplicates, result.rejected) == (2, 3, 0)
    stats = stats_by_variant(store.arm_stats("c_1"))
    # The first delivery wins: "x" was first reported for v_a.
    assert stats["v_a"]["impressions"] == 2
    assert stats["v_b"]["impressions"] == 0


def test_bad_rows_rejected_with_reasons_while_good_rows_land(store: Store, clock: FakeClock):
    batch = [
        event("good-1"),
        event("", kind="click"),
        event("x" * 129),
        event("e-type", kind="purchase"),
        {**event("e-campaign"), "campaign_id": "c_nope"},
        event("e-variant", variant="v_nope"),
        event("e-ts", ts="last tuesday"),
        event("e-future", ts=clock.now + timedelta(minutes=6)),
        event("e-nan", kind="conversion", value=math.nan),
        event("e-neg", kind="conversion", value=-2.0),
        event("good-2", kind="conversion", value=4.5, ts=clock.now + timedelta(minutes=4)),
        {"event_id": None, "type": "click", "campaign_id": "c_1", "variant_id": "v_a", "ts": NOW},
    ]
    result = store.append_events(batch)
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, 10)
    by_row = {error.row: error for error in result.errors}
    expected_fields = {
        1: "event_id",
        2: "event_id",
        3: "type",
        4: "campaign_id",
        5: "variant_id",
        6: "ts",
        7: "ts",
        8: "value",
        9: "value",
        11: "event_id",
    }
    assert {row: error.field for row, error in by_row.items()} == expected_fields
    assert "purchase" in by_row[3].reason
    assert "c_nope" in by_row[4].reason
    assert "v_nope" in by_row[5].reason
    assert "last tuesday" in by_row[6].reason
    assert "future" in by_row[7].reason
    assert "NaN" in by_row[8].reason
    assert "negative" in by_row[9].reason
    stats = stats_by_variant(store.arm_stats("c_1"))
    assert stats["v_a"]["impressions"] == 1
    assert stats["v_a"]["conversions"] == 1
    assert stats["v_a"]["value"] == pytest.approx(4.5)
    assert store.data_quality("c_1")["rejected_rows"] == 9  # the unknown campaign is logged apart


def test_missing_column_rejects_every_row_by_name(store: Store):
    result = store.append_events(
        [{"event_id": "a", "type": "click", "campaign_id": "c_1", "variant_id": "v_a"}]
    )
    assert result.rejected == 1
    assert result.errors == [RowError(row=0, field="ts", reason=result.errors[0].reason)]
    assert "absent" in result.errors[0].reason


def test_errors_are_capped_but_counts_exact(store: Store):
    batch = [event(f"bad{i}", kind="nope") for i in range(30)] + [event("ok")]
    result = store.append_events(batch, max_errors=5)
    assert result.rejected == 30 and result.accepted == 1
    assert [error.row for error in result.errors] == [0, 1, 2, 3, 4]
    assert result.to_dict().keys() == {"accepted", "duplicates", "rejected", "errors"}


def test_timestamps_in_any_shape_are_utc(store: Store):
    batch = pa.table(
        {
            "event_id": ["t1", "t2", "t3"],
            "type": ["impression"] * 3,
            "campaign_id": ["c_1"] * 3,
            "variant_id": ["v_a"] * 3,
            "ts": ["2026-03-01T11:00:00+02:00", "2026-03-01 09:00:00", "2026-03-01T09:30:00Z"],
        }
    )
    assert store.append_events(batch).accepted == 3
    frame = store.arm_stats("c_1", since=datetime(2026, 3, 1, 9, 0))
    assert stats_by_variant(frame)["v_a"]["impressions"] == 3
    frame = store.arm_stats("c_1", since=datetime(2026, 3, 1, 9, 15))
    # 11:00+02:00 is 09:00 UTC, so only the 09:30Z event is at or after 09:15.
    assert stats_by_variant(frame)["v_a"]["impressions"] == 1


def test_polars_and_arrow_batches(store: Store):
    frame = pl.DataFrame([event(f"p{i}") for i in range(5)])
    assert store.append_events(frame).accepted == 5
    assert store.append_events(frame.to_arrow()).duplicates == 5


def test_click_before_its_impression_is_counted(store: Store):
    click = store.append_events([event("c1", "click", decision_id="d_1")])
    assert click.accepted == 1
    quality = store.data_quality("c_1")
    assert quality["orphan_clicks"] == 1
    assert quality["clicks_exceed_impressions"] == ["v_a"]
    store.append_events([event("i1", "impression", decision_id="d_1")])
    stats = stats_by_variant(store.arm_stats("c_1"))
    assert (stats["v_a"]["impressions"], stats["v_a"]["clicks"]) == (1, 1)
    quality = store.data_quality("c_1")
    assert quality["orphan_clicks"] == 0
    assert quality["clicks_exceed_impressions"] == []


def test_every_variant_present_even_without_events(store: Store):
    frame = store.arm_stats("c_1")
    assert frame["variant_id"].to_list() == ["v_a", "v_b"]
    assert frame.schema["impressions"] == pl.Int64
    assert frame.schema["value"] == pl.Float64
    assert frame["impressions"].to_list() == [0, 0]


def test_window_segment_and_discounting(store: Store, clock: FakeClock):
    day = timedelta(days=1)
    rows = []
    for i in range(8):  # v_a: 8 impressions, 2 days old, mobile
        rows.append(event(f"old{i}", ts=NOW - 2 * day, segment="mobile"))
    for i in range(4):  # v_a: 4 impressions, now, desktop
        rows.append(event(f"new{i}", ts=NOW, segment="desktop"))
    rows.append(event("conv", "conversion", ts=NOW - day, segment="mobile", value=10.0))
    store.append_events(rows)

    plain = stats_by_variant(store.arm_stats("c_1"))["v_a"]
    assert (plain["impressions"], plain["conversions"], plain["value"]) == (12, 1, 10.0)

    windowed = stats_by_variant(store.arm_stats("c_1", since=NOW - timedelta(hours=36)))["v_a"]
    assert windowed["impressions"] == 4 and windowed["conversions"] == 1

    mobile = stats_by_variant(store.arm_stats("c_1", segment="mobile"))["v_a"]
    assert mobile["impressions"] == 8

    segmented = store.arm_stats("c_1", by_segment=True)
    pairs = {(r["variant_id"], r["segment"]): r["impressions"] for r in segmented.to_dicts()}
    assert pairs == {
        ("v_a", "desktop"): 4,
        ("v_a", "mobile"): 8,
        ("v_b", "desktop"): 0,
        ("v_b", "mobile"): 0,
    }

    discounted = store.arm_stats("c_1", half_life=day)
    assert discounted.schema["impressions"] == pl.Float64
    row = stats_by_variant(discounted)["v_a"]
    assert row["impressions"] == pytest.approx(4 + 8 * 0.25, rel=1e-9)
    assert row["conversions"] == pytest.approx(0.5, rel=1e-9)
    assert row["value"] == pytest.approx(5.0, rel=1e-9)

    clock.now = NOW + day  # one half-life later everything weighs half as much
    later = stats_by_variant(store.arm_stats("c_1", half_life=day))["v_a"]
    assert later["impressions"] == pytest.approx(row["impressions"] / 2, rel=1e-9)


def test_discounting_within_an_hour_uses_event_times(store: Store):
    # Events spread over one hour: the aggregate weighs them at their mean time.
    rows = [event(f"m{i}", ts=NOW - timedelta(hours=3, minutes=i)) for i in range(60)]
    store.append_events(rows)
    half_life = timedelta(hours=6)
    got = stats_by_variant(store.arm_stats("c_1", half_life=half_life))["v_a"]["impressions"]
    exact = sum(0.5 ** ((3 * 60 + i) / 360) for i in range(60))
    assert got == pytest.approx(exact, rel=1e-3)


def test_aggregates_agree_with_the_event_log(store: Store, db_path: Path):
    rows = []
    for i in range(400):
        kind = ("impression", "click", "conversion")[i % 3]
        rows.append(
            event(
                f"r{i}",
                kind,
                variant=("v_a", "v_b")[i % 2],
                segment=("s1", "s2")[i % 5 % 2],
                ts=NOW - timedelta(minutes=37 * i),
                value=float(i % 7) if kind == "conversion" else 0.0,
            )
        )
    for start in range(0, 400, 40):  # many small batches, some replayed
        store.append_events(rows[start : start + 40])
        store.append_events(rows[max(0, start - 20) : start + 20])
    since = NOW - timedelta(hours=100, minutes=13)
    frame = store.arm_stats("c_1", by_segment=True, since=since)
    store.close()
    with duckdb.connect(str(db_path), read_only=True) as connection:
        truth = connection.execute(
            """SELECT variant_id, segment, count(*) FILTER (WHERE type = 'impression'),
                      count(*) FILTER (WHERE type = 'click'),
                      count(*) FILTER (WHERE type = 'conversion'),
                      coalesce(sum(value) FILTER (WHERE type = 'conversion'), 0)
               FROM events WHERE ts >= ? GROUP BY ALL ORDER BY ALL""",
            [since],
        ).fetchall()
    got = sorted(
        (r["variant_id"], r["segment"], r["impressions"], r["clicks"], r["conversions"], r["value"])
        for r in frame.to_dicts()
    )
    assert got == sorted(truth)
    assert sum(row[2] + row[3] + row[4] for row in truth) == sum(
        1 for r in rows if r["ts"] >= since
    )


def test_concurrent_writers_group_commit_exactly_once(store: Store):
    # Eight threads send overlapping batches (each id delivered by two threads).
    def worker(index: int) -> None:
        for k in range(20):
            ids = [f"t{(index // 2)}-{k}-{j}" for j in range(5)]
            store.append_events([event(i) for i in ids])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = stats_by_variant(store.arm_stats("c_1"))
    assert stats["v_a"]["impressions"] == 4 * 20 * 5
    assert store.data_quality("c_1")["duplicate_deliveries"] == 4 * 20 * 5


def test_decisions_log_impressions_and_shares(store: Store):
    decisions = [
        {
            "decision_id": f"d_{i}",
            "campaign_id": "c_1",
            "variant_id": "v_a" if i < 3 else "v_b",
            "segment": "mobile",
            "probability": 0.6 if i < 3 else 0.4,
            "ts": NOW - timedelta(minutes=1),
        }
        for i in range(5)
    ]
    store.log_decisions(decisions, impressions=True)
    store.flush()
    shares = {r["variant_id"]: r for r in store.decision_stats("c_1").to_dicts()}
    assert shares["v_a"]["decisions"] == 3
    assert shares["v_a"]["expected_share_sum"] == pytest.approx(1.8)
    stats = stats_by_variant(store.arm_stats("c_1"))
    assert (stats["v_a"]["impressions"], stats["v_b"]["impressions"]) == (3, 2)
    # The ad server reporting the same impression again is a duplicate, not a second one.
    again = store.append_events([event("d_0", decision_id="d_0")])
    assert again.duplicates == 1
    with pytest.raises(InvalidRecordError):
        store.log_decisions([{**decisions[0], "probability": 1.5}], impressions=False)


def test_retired_variant_events_are_kept_and_reported(store: Store, clock: FakeClock):
    store.set_variant_status("c_1", "v_b", "retired")
    late = store.append_events([event("late", variant="v_b", ts=NOW + timedelta(minutes=1))])
    assert late.accepted == 1
    early = store.append_events([event("early", variant="v_b", ts=NOW - timedelta(hours=2))])
    assert early.accepted == 1
    assert store.data_quality("c_1")["events_for_retired_variants"] == 1
    assert [v["variant_id"] for v in store.variants("c_1", statuses=["active"])] == ["v_a"]
    assert store.variants("c_1", statuses=["retired"])[0]["retired_at"] == NOW


def test_campaigns_and_variants_round_trip(store: Store):
    campaign = store.campaign("c_1")
    assert campaign["brief"] == {"product": "shoes"}
    assert campaign["tenant"] == "acme" and campaign["status"] == "active"
    assert store.campaign("c_missing") is None
    assert [c["campaign_id"] for c in store.campaigns(tenant="acme")] == ["c_1"]
    assert store.campaigns(tenant="other") == []
    store.insert_variants(
        "c_1",
        [
            {
                "variant_id": "v_c",
                "headline": "C",
                "parent_ids": ["v_a", "v_b"],
                "provenance": {"generator": "template"},
            }
        ],
    )
    variant = store.variants("c_1")[-1]
    assert variant["parent_ids"] == ["v_a", "v_b"] and variant["provenance"] == {
        "generator": "template"
    }
    assert variant["text"] == "C"
    with pytest.raises(ConflictError):
        store.insert_variants("c_1", [{"variant_id": "v_c"}])
    with pytest.raises(ConflictError):
        store.insert_campaign({"campaign_id": "c_1"}, [])
    with pytest.raises(NotFoundError):
        store.insert_variants("c_none", [{"variant_id": "v_z"}])
    with pytest.raises(InvalidRecordError, match="objective"):
        store.insert_campaign({"campaign_id": "c_2", "objective": "roas"}, [])
    store.set_campaign_status("c_1", "completed", winner_variant_id="v_a")
    assert store.campaign("c_1")["winner_variant_id"] == "v_a"
    with pytest.raises(NotFoundError):
        store.set_campaign_status("c_1", "completed", winner_variant_id="v_zzz")


def test_model_promotion_and_rollback(store: Store, clock: FakeClock):
    assert store.current_model() is None
    for index, version in enumerate(["m1", "m2", "m3"]):
        store.add_model_version(
            {
                "version": version,
                "path": f"/models/{version}",
                "base": "smollm2",
                "parent": None,
                "data_hash": f"h{index}",
                "metrics": {"loss": 1.0 - index / 10},
            }
        )
    with pytest.raises(ConflictError):
        store.add_model_version({"version": "m1"})
    store.promote_model("m1")
    store.promote_model("m2")
    store.promote_model("m3")
    assert store.current_model()["version"] == "m3"
    assert store.current_model()["metrics"] == {"loss": pytest.approx(0.8)}
    assert store.rollback_model()["version"] == "m2"
    assert store.rollback_model()["version"] == "m1"
    assert store.rollback_model() is None
    assert store.current_model()["version"] == "m1"
    with pytest.raises(NotFoundError):
        store.promote_model("m9")
    assert [m["version"] for m in store.model_versions()] == ["m1", "m2", "m3"]


def test_api_keys_and_job_runs(store: Store):
    store.add_api_key(tenant="acme", key_hash="abc123", admin=True)
    assert store.api_key("abc123") == {
        "tenant": "acme",
        "admin": True,
        "created_at": NOW,
        "expires_at": None,
        "revoked_at": None,
    }
    assert store.api_key("nope") is None
    with pytest.raises(ConflictError):
        store.add_api_key(tenant="other", key_hash="abc123")
    store.record_job_run(
        job="refresh",
        started_at=NOW,
        ended_at=NOW + timedelta(seconds=2),
        outcome="ok",
        detail={"campaigns": 3},
    )
    store.record_job_run(
        job="retrain", started_at=NOW, ended_at=None, outcome="error", error="boom"
    )
    assert [run["job"] for run in store.job_runs()] == ["refresh", "retrain"]
    assert store.job_runs("refresh")[0]["detail"] == {"campaigns": 3}


def test_reopen_keeps_everything_and_closed_store_refuses(db_path: Path, clock: FakeClock):
    with Store(db_path, clock=clock) as first:
        first.insert_campaign({"campaign_id": "c_1"}, [{"variant_id": "v_a"}])
        first.append_events([event("e1")])
    with Store(db_path, clock=clock) as second:
        assert second.append_events([event("e1")]).duplicates == 1
        assert second.arm_stats("c_1")["impressions"].to_list() == [1]
    with pytest.raises(StoreClosedError):
        second.arm_stats("c_1")


def test_bad_arguments_raise_storage_errors_that_stay_builtin_compatible(store: Store):
    with pytest.raises(storage.InvalidArgumentError, match="half_life") as caught:
        store.arm_stats("c_1", half_life=timedelta(0))
    assert isinstance(caught.value, storage.StorageError)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(storage.InvalidBatchError, match="single dict") as caught:
        store.append_events(event("e1"))
    assert isinstance(caught.value, InvalidRecordError)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(storage.InvalidBatchError, match="mappings"):
        store.append_events(["not a row"])


def test_two_stores_in_one_process_share_one_writer(db_path: Path, clock: FakeClock):
    with Store(db_path, clock=clock) as first, Store(db_path, clock=clock) as second:
        first.insert_campaign({"campaign_id": "c_1"}, [{"variant_id": "v_a"}])
        assert first.append_events([event("e1")]).accepted == 1
        assert second.append_events([event("e1")]).duplicates == 1


def test_append_result_shape():
    result = AppendResult(accepted=1, duplicates=2, rejected=1, errors=[RowError(3, "ts", "bad")])
    assert result.to_dict() == {
        "accepted": 1,
        "duplicates": 2,
        "rejected": 1,
        "errors": [{"row": 3, "field": "ts", "reason": "bad"}],
    }


def test_event_keys_are_rebuilt_when_the_hash_function_changes(db_path: Path, clock: FakeClock):
    with Store(db_path, clock=clock) as first:
        first.insert_campaign({"campaign_id": "c_1"}, [{"variant_id": "v_a"}])
        first.append_events([event(f"h{i}") for i in range(10)])
    # Simulate a DuckDB upgrade whose hash() differs: stored keys no longer match.
    with duckdb.connect(str(db_path)) as connection:
        connection.execute("UPDATE events SET event_key = event_key + 1")
        connection.execute(
            "UPDATE store_meta SET value = 'older hash' WHERE key = 'event_key_canary'"
        )
    with Store(db_path, clock=clock) as second:
        replay = second.append_events([event(f"h{i}") for i in range(10)])
        assert (replay.accepted, replay.duplicates) == (0, 10)


def test_bulk_and_small_batches_share_one_dedupe(store: Store):
    # Batches above the small-group size take the set-based path; small ones the key index.
    big = pa.table(
        {
            "event_id": [f"bulk-{i}" for i in range(60_000)],
            "type": ["impression"] * 60_000,
            "campaign_id": ["c_1"] * 60_000,
            "variant_id": ["v_a", "v_b"] * 30_000,
            "ts": [NOW - timedelta(hours=2)] * 60_000,
        }
    )
    assert store.append_events([event("small-0")]).accepted == 1  # builds the key index
    first = store.append_events(big)
    assert (first.accepted, first.duplicates) == (60_000, 0)
    # Small replays of rows that arrived in bulk are caught, new rows are not.
    small = store.append_events(
        [event("bulk-7", variant="v_b"), event("small-1"), event("small-0")]
    )
    assert (small.accepted, small.duplicates) == (1, 2)
    # A bulk batch with repeats inside it and rows already stored.
    mixed = pa.concat_tables([big.slice(0, 30_000), big.slice(0, 30_000)])
    mixed = pa.concat_tables([mixed, big.slice(0, 1).set_column(0, "event_id", pa.array(["new"]))])
    again = store.append_events(mixed)
    assert (again.accepted, again.duplicates) == (1, 60_000)
    stats = stats_by_variant(store.arm_stats("c_1"))
    assert stats["v_a"]["impressions"] + stats["v_b"]["impressions"] == 60_000 + 3


def test_schema_is_versioned_and_newer_files_are_refused(db_path: Path):
    with Store(db_path):
        pass
    with duckdb.connect(str(db_path)) as connection:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(version,) for version, _, _ in storage.schema.MIGRATIONS]
        connection.execute("INSERT INTO schema_version VALUES (99, 'from the future', now())")
    with pytest.raises(storage.SchemaError, match="99"):
        Store(db_path)
    with duckdb.connect(str(db_path)) as connection:  # the refused open released the file
        connection.execute("DELETE FROM schema_version WHERE version = 99")


def test_statistics_survive_aggregate_compaction(store: Store, db_path: Path):
    # 60k events in 60k different hours make 60k aggregate rows per batch: enough for the
    # writer to compact them (replace rows by their sums) after the first and second batch.
    n = 60_000
    hours = [NOW - timedelta(hours=h + 1) for h in range(n)]
    for round_number in range(2):
        batch = pa.table(
            {
                "event_id": [f"agg{round_number}-{i}" for i in range(n)],
                "type": ["impression", "click"] * (n // 2),
                "campaign_id": ["c_1"] * n,
                "variant_id": ["v_a"] * n,
                "ts": hours,
            }
        )
        assert store.append_events(batch).accepted == n
    store.flush()
    stats = stats_by_variant(store.arm_stats("c_1"))["v_a"]
    assert (stats["impressions"], stats["clicks"]) == (n, n)
    recent = stats_by_variant(store.arm_stats("c_1", since=NOW - timedelta(hours=100)))["v_a"]
    assert recent["impressions"] + recent["clicks"] == 2 * 100
    discounted = stats_by_variant(store.arm_stats("c_1", half_life=timedelta(hours=24)))["v_a"]
    exact = 2 * sum(0.5 ** ((h + 1) / 24) for h in range(0, n, 2))
    assert discounted["impressions"] == pytest.approx(exact, rel=1e-9)
    store.close()
    with duckdb.connect(str(db_path), read_only=True) as connection:
        (rows,) = connection.execute("SELECT count(*) FROM event_aggregates").fetchall()[0]
    assert rows == n  # compacted: one row per (variant, type, hour), not one per batch


def test_submitted_batches_sharing_an_event_count_it_once_first_batch_wins(store: Store) -> None:
    first = [event("s-1"), event("s-2", "click")]
    second = [event("s-2", "click"), event("s-3")]  # s-2 repeats the first batch
    futures = [store.submit_events(first), store.submit_events(second), store.submit_events([])]
    results = [future.result(timeout=30) for future in futures]
    assert [(r.accepted, r.duplicates, r.rejected) for r in results] == [
        (2, 0, 0),
        (1, 1, 0),
        (0, 0, 0),
    ]
    stats = store.arm_stats("c_1").filter(pl.col("variant_id") == "v_a")
    assert stats["impressions"].item() == 2 and stats["clicks"].item() == 1
