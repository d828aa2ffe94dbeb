"""The store's contract, run against both backends: a DuckDB file and a real PostgreSQL.

Each test gets a fresh store: a DuckDB file in its tmp folder, or a schema of its own in one
PostgreSQL server per module (Debian's ``postgresql-15``, initdb into a temp folder, stopped by
PID). The PostgreSQL cases are skipped when psycopg or the server binaries are missing.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from adloop.optimizer import Engine, EngineConfig
from adloop.storage import (
    AppendResult,
    ConflictError,
    InvalidArgumentError,
    InvalidRecordError,
    NotFoundError,
    PostgresStore,
    StorageError,
    Store,
    StoreBackend,
    StoreClosedError,
    open_store,
)

NOW = datetime(2026, 12, 1, 12, 0)
BACKENDS = ["duckdb", "postgresql"]
_schemas = itertools.count()


def clock() -> datetime:
    return NOW


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory) -> Iterator[str]:
    """The URL of one PostgreSQL server for the whole module."""
    pytest.importorskip("psycopg", reason="the PostgreSQL store needs: pip install 'adloop[scale]'")
    from adloop.scale.local import LocalPostgres, ServiceError

    try:
        server = LocalPostgres(tmp_path_factory.mktemp("pg")).start()
    except ServiceError as error:
        pytest.skip(str(error))
    yield server.url
    server.stop()


def _fresh_schema(server_url: str) -> str:
    """The URL of a new, empty schema on the server (the store creates its tables there)."""
    import psycopg

    name = f"contract_{next(_schemas)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {name}")
    return f"{server_url}?options=-csearch_path%3D{name}"


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path: Path) -> str:
    """A store URL of each backend, naming a store nobody has written to."""
    if request.param == "duckdb":
        return f"duckdb://{tmp_path / 'adloop.duckdb'}"
    return _fresh_schema(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(url: str) -> Iterator[StoreBackend]:
    with open_store(url, clock=clock) as opened:
        yield opened


def _campaign(store: StoreBackend, campaign_id: str = "c_1", n_variants: int = 3) -> None:
    store.insert_campaign(
        {"campaign_id": campaign_id, "tenant": "acme", "brief": {"product": "tea"}},
        [{"variant_id": f"{campaign_id}_v{i}", "headline": f"H{i}"} for i in range(n_variants)],
    )


def _events(campaign_id: str, n: int, prefix: str = "e", kind: str = "impression") -> list[dict]:
    return [
        {
            "event_id": f"{prefix}{i}",
            "type": kind,
            "campaign_id": campaign_id,
            "variant_id": f"{campaign_id}_v{i % 2}",
            "ts": NOW - timedelta(minutes=i),
        }
        for i in range(n)
    ]


def _totals(store: StoreBackend, campaign_id: str) -> dict[str, int]:
    stats = store.arm_stats(campaign_id)
    return {name: int(stats[name].sum()) for name in ("impressions", "clicks", "conversions")}


# -- opening by URL -----------------------------------------------------------------------------


def test_each_url_opens_its_backend(url: str) -> None:
    with open_store(url) as store:
        assert isinstance(store, StoreBackend)
        assert isinstance(store, PostgresStore if url.startswith("postgresql") else Store)


def test_a_plain_path_opens_the_duckdb_file_as_before(tmp_path: Path) -> None:
    for given in (tmp_path / "a.duckdb", str(tmp_path / "b.duckdb")):
        with open_store(given) as store:
            assert isinstance(store, Store)
            assert store.path == Path(given)
        assert Path(given).exists()


def test_a_duckdb_url_names_the_file(tmp_path: Path) -> None:
    with open_store(f"duckdb://{tmp_path}/x.duckdb") as store:
        _campaign(store)
    with Store(tmp_path / "x.duckdb") as again:
        assert again.campaign("c_1") is not None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite:///tmp/x.db", "unknown scheme 'sqlite'"),
        ("mysql://u@h/db", "unknown scheme 'mysql'"),
        ("duckdb://relative/x.duckdb", "three slashes"),
        ("", "non-empty"),
    ],
)
def test_a_url_it_cannot_open_is_refused_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        open_store(url)


def test_a_postgres_url_without_psycopg_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(StorageError, match=r"pip install 'adloop\[scale\]'"):
        open_store("postgresql://adloop@127.0.0.1:1/adloop")


def test_a_password_never_shows_in_errors() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        open_store("mysql://ann:hunter2@db/x")
    assert "hunter2" not in str(caught.value)


# -- campaigns and variants ------------------------------------------------------------------


def test_campaigns_and_variants_round_trip(store: StoreBackend) -> None:
    store.insert_campaign(
        {
            "campaign_id": "c_1",
            "tenant": "acme",
            "name": "Tea",
            "brief": {"product": "tea", "tone": "warm"},
            "objective": "cvr",
            "settings": {"policy": "ts"},
        },
        [
            {"variant_id": "v_a", "headline": "Hot tea", "segments": ["mobile", "mobile"]},
            {"variant_id": "v_b", "headline": "Cold tea", "parent_ids": ["v_a"],
             "provenance": {"by": "lm"}, "status": "pending"},
        ],
    )  # fmt: skip
    store.insert_campaign({"campaign_id": "c_2", "tenant": "other"}, [])
    campaign = store.campaign("c_1")
    assert campaign == {
        "campaign_id": "c_1",
        "tenant": "acme",
        "name": "Tea",
        "brief": {"product": "tea", "tone": "warm"},
        "objective": "cvr",
        "status": "active",
        "settings": {"policy": "ts"},
        "winner_variant_id": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    assert store.campaign("c_missing") is None
    assert [c["campaign_id"] for c in store.campaigns()] == ["c_1", "c_2"]
    assert [c["campaign_id"] for c in store.campaigns("other")] == ["c_2"]
    variants = store.variants("c_1")
    assert [v["variant_id"] for v in variants] == ["v_a", "v_b"]
    assert variants[0]["segments"] == ["mobile"]
    assert variants[0]["text"] == "Hot tea"
    assert variants[1]["parent_ids"] == ["v_a"]
    assert variants[1]["provenance"] == {"by": "lm"}
    assert [v["variant_id"] for v in store.variants("c_1", ["pending"])] == ["v_b"]
    assert store.variants("c_1", []) == []
    store.insert_variants("c_1", [{"variant_id": "v_c", "headline": "Iced tea"}])
    assert [v["variant_id"] for v in store.variants("c_1", ["active"])] == ["v_a", "v_c"]


def test_a_bad_record_writes_nothing(store: StoreBackend) -> None:
    _campaign(store)
    with pytest.raises(ConflictError, match="c_1"):
        _campaign(store)
    # the second variant clashes with a stored one: neither the campaign nor v_new lands
    with pytest.raises(ConflictError, match="c_1_v0"):
        store.insert_campaign(
            {"campaign_id": "c_2"}, [{"variant_id": "v_new"}, {"variant_id": "c_1_v0"}]
        )
    assert store.campaign("c_2") is None
    with pytest.raises(InvalidRecordError, match="objective"):
        store.insert_campaign({"campaign_id": "c_3", "objective": "likes"}, [])
    with pytest.raises(InvalidRecordError, match="variant_id"):
        store.insert_variants("c_1", [{"variant_id": "v_ok"}, {"headline": "no id"}])
    with pytest.raises(ConflictError, match="twice"):
        store.insert_variants("c_1", [{"variant_id": "v_x"}, {"variant_id": "v_x"}])
    with pytest.raises(NotFoundError, match="c_missing"):
        store.insert_variants("c_missing", [{"variant_id": "v_y"}])
    assert [c["campaign_id"] for c in store.campaigns()] == ["c_1"]
    assert [v["variant_id"] for v in store.variants("c_1")] == ["c_1_v0", "c_1_v1", "c_1_v2"]


def test_status_changes(store: StoreBackend) -> None:
    _campaign(store)
    store.set_variant_status("c_1", "c_1_v1", "retired")
    retired = store.variants("c_1", ["retired"])
    assert [(v["variant_id"], v["retired_at"]) for v in retired] == [("c_1_v1", NOW)]
    store.set_variant_status("c_1", "c_1_v1", "active")
    assert store.variants("c_1", ["active"])[1]["retired_at"] is None
    store.set_campaign_status("c_1", "completed", winner_variant_id="c_1_v2")
    assert store.campaign("c_1")["status"] == "completed"
    assert store.campaign("c_1")["winner_variant_id"] == "c_1_v2"
    with pytest.raises(NotFoundError):
        store.set_campaign_status("c_1", "active", winner_variant_id="nope")
    with pytest.raises(NotFoundError):
        store.set_variant_status("c_1", "nope", "retired")
    with pytest.raises(InvalidRecordError, match="status"):
        store.set_campaign_status("c_1", "deleted")
    assert store.campaign("c_1")["status"] == "completed"


def test_reviews_move_a_variant_and_keep_the_record(store: StoreBackend) -> None:
    store.insert_campaign(
        {"campaign_id": "c_1"},
        [{"variant_id": "v_a", "status": "pending"}, {"variant_id": "v_b", "status": "pending"}],
    )
    review = store.review_variant("c_1", "v_a", "approve", reviewer=" ann ", note="fine")
    assert review == {"campaign_id": "c_1", "variant_id": "v_a", "action": "approve",
                      "reviewer": "ann", "note": "fine", "reviewed_at": NOW}  # fmt: skip
    store.review_variant("c_1", "v_b", "reject", reviewer="bob", note=None)
    store.review_variant("c_1", "v_b", "approve", reviewer="ann", note="changed my mind")
    assert [v["status"] for v in store.variants("c_1")] == ["active", "active"]
    with pytest.raises(ConflictError, match="active"):
        store.review_variant("c_1", "v_a", "reject", reviewer="bob", note=None)
    with pytest.raises(InvalidArgumentError, match="reviewer"):
        store.review_variant("c_1", "v_a", "approve", reviewer=" ", note=None)
    with pytest.raises(InvalidRecordError, match="action"):
        store.review_variant("c_1", "v_a", "publish", reviewer="ann", note=None)
    with pytest.raises(NotFoundError):
        store.review_variant("c_1", "v_zz", "approve", reviewer="ann", note=None)
    reviews = store.variant_reviews("c_1")
    assert [(r["variant_id"], r["action"], r["reviewer"]) for r in reviews] == [
        ("v_a", "approve", "ann"),
        ("v_b", "reject", "bob"),
        ("v_b", "approve", "ann"),
    ]


# -- the event log ------------------------------------------------------------------------------


def test_duplicates_count_once_and_bad_rows_are_rejected_by_field(store: StoreBackend) -> None:
    _campaign(store)
    _campaign(store, "c_2")
    good = _events("c_1", 6)
    batch = [
        *good,
        good[0],  # repeated inside the batch
        {**good[1], "campaign_id": "c_2", "variant_id": "c_2_v0"},  # same id, other campaign
        {**good[2], "event_id": "bad_variant", "variant_id": "v_nope"},
        {**good[2], "event_id": "bad_ts", "ts": "yesterday-ish"},
        {**good[2], "event_id": "future", "ts": NOW + timedelta(hours=1)},
        {**good[2], "event_id": "bad_value", "type": "conversion", "value": -3.0},
        {**good[2], "event_id": "", "type": "click"},
        {**good[2], "event_id": "bad_type", "type": "view"},
        {**good[2], "event_id": "bad_campaign", "campaign_id": "c_nope"},
    ]
    result = store.append_events(batch)
    assert isinstance(result, AppendResult)
    assert (result.accepted, result.duplicates, result.rejected) == (7, 1, 7)
    assert [(e.row, e.field) for e in result.errors] == [
        (8, "variant_id"), (9, "ts"), (10, "ts"), (11, "value"), (12, "event_id"),
        (13, "type"), (14, "campaign_id"),
    ]  # fmt: skip
    assert "v_nope" in result.errors[0].reason
    assert "future" in result.errors[2].reason
    again = store.append_events(good + _events("c_1", 2, prefix="new"))
    assert (again.accepted, again.duplicates, again.rejected) == (2, 6, 0)
    assert again.batch_id != result.batch_id
    assert _totals(store, "c_1") == {"impressions": 8, "clicks": 0, "conversions": 0}
    assert _totals(store, "c_2") == {"impressions": 1, "clicks": 0, "conversions": 0}
    quality = store.data_quality("c_1")
    assert quality["duplicate_deliveries"] == 7
    assert quality["rejected_rows"] == 6  # the unknown campaign's row is logged under c_nope
    capped = store.append_events(batch[8:], max_errors=2)
    assert (capped.rejected, len(capped.errors)) == (7, 2)


def test_rows_that_need_parsing_are_stored_as_typed_rows_are(store: StoreBackend) -> None:
    _campaign(store)
    rows = [
        {"event_id": "t1", "type": "conversion", "campaign_id": "c_1", "variant_id": "c_1_v0",
         "ts": "2026-12-01T11:00:00+02:00", "value": "12.5"},
        {"event_id": "t2", "type": "click", "campaign_id": "c_1", "variant_id": "c_1_v0",
         "ts": "2026-12-01 09:30", "segment": "", "decision_id": "d_1"},
    ]  # fmt: skip
    assert store.append_events(rows).accepted == 2
    stats = store.arm_stats("c_1", by_segment=True)
    row = stats.filter(pl.col("variant_id") == "c_1_v0")
    assert sorted(row["segment"].to_list(), key=str) == ["", None]  # '' and null stay apart
    assert float(row["value"].sum()) == 12.5
    # the zoned time is stored as UTC: 09:00, before the 09:30 click
    since = store.arm_stats("c_1", since=datetime(2026, 12, 1, 9, 15))
    assert int(since["conversions"].sum()) == 0
    assert int(since["clicks"].sum()) == 1


def test_submit_events_returns_a_future_and_decisions_log_impressions(
    store: StoreBackend,
) -> None:
    _campaign(store)
    future = store.submit_events(_events("c_1", 3))
    assert isinstance(future, Future)
    assert future.result(timeout=30).accepted == 3
    decisions = [
        {"decision_id": f"d{i}", "campaign_id": "c_1", "variant_id": "c_1_v2",
         "probability": 0.25, "ts": NOW, "segment": "mobile"}
        for i in range(4)
    ]  # fmt: skip
    store.log_decisions(decisions, impressions=True)
    store.flush()
    stats = store.decision_stats("c_1")
    assert stats.schema == {"variant_id": pl.String, "decisions": pl.Int64,
                            "expected_share_sum": pl.Float64}  # fmt: skip
    assert stats.row(2) == ("c_1_v2", 4, 1.0)
    assert _totals(store, "c_1")["impressions"] == 7
    # a later impression report for a decision is a duplicate, not a second impression
    late = store.append_events(
        [{"event_id": "d0", "type": "impression", "campaign_id": "c_1", "variant_id": "c_1_v2",
          "ts": NOW}]
    )  # fmt: skip
    assert (late.accepted, late.duplicates) == (0, 1)
    with pytest.raises(InvalidRecordError, match="probability"):
        store.log_decisions([{**decisions[0], "probability": 1.5}], impressions=False)
    assert store.write_health().fault is None


def _random_events(rng: np.random.Generator, n: int) -> list[dict]:
    kinds = rng.choice(["impression", "click", "conversion"], size=n, p=[0.8, 0.15, 0.05])
    minutes = rng.integers(0, 60 * 48, size=n)
    return [
        {
            "event_id": f"r{int(rng.integers(0, n))}",  # about a third repeat
            "type": str(kind),
            "campaign_id": "c_1",
            "variant_id": f"c_1_v{int(rng.integers(0, 3))}",
            "segment": [None, "mobile", "desktop"][int(rng.integers(0, 3))],
            "ts": NOW - timedelta(minutes=int(minute), seconds=int(rng.integers(0, 60))),
            "value": float(rng.gamma(2.0, 10.0)) if kind == "conversion" else 0.0,
        }
        for kind, minute in zip(kinds, minutes, strict=True)
    ]


def test_arm_stats_are_equal_between_backends(tmp_path: Path, pg_server: str) -> None:
    rng = np.random.default_rng(7)
    batches = [_random_events(rng, 400) for _ in range(3)]
    queries = [
        {},
        {"segment": "mobile"},
        {"by_segment": True},
        {"since": NOW - timedelta(hours=20, minutes=17)},
        {"half_life": timedelta(hours=6)},
        {"half_life": timedelta(hours=6), "since": NOW - timedelta(hours=30, minutes=5),
         "by_segment": True},
    ]  # fmt: skip
    frames: dict[str, list[pl.DataFrame]] = {}
    for url in (f"duckdb://{tmp_path}/a.duckdb", _fresh_schema(pg_server)):
        with open_store(url, clock=clock) as store:
            _campaign(store)
            results = [store.append_events(batch) for batch in batches]
            frames[url] = [store.arm_stats("c_1", **query) for query in queries]
            frames[url].append(
                pl.DataFrame([r.to_dict() for r in results]).drop("errors")  # same counts
            )
    duck, postgres = frames.values()
    assert int(duck[0]["impressions"].sum()) > 100
    for left, right in zip(duck, postgres, strict=True):
        assert_frame_equal(left, right, check_exact=False, rel_tol=1e-9)


# -- models, keys, job runs ---------------------------------------------------------------------


def test_model_versions_promotions_and_rollbacks(store: StoreBackend) -> None:
    assert store.current_model() is None
    assert store.rollback_model() is None
    store.add_model_version({"version": "m1", "path": Path("/models/m1"), "metrics": {"loss": 1}})
    store.add_model_version({"version": "m2", "base": "tiny", "parent": "m1"})
    with pytest.raises(ConflictError, match="m1"):
        store.add_model_version({"version": "m1"})
    with pytest.raises(NotFoundError, match="m9"):
        store.promote_model("m9")
    versions = store.model_versions()
    assert [(m["version"], m["path"], m["metrics"]) for m in versions] == [
        ("m1", "/models/m1", {"loss": 1}),
        ("m2", None, {}),
    ]
    store.promote_model("m1")
    assert store.rollback_model() is None  # nothing before m1
    store.promote_model("m2")
    current = store.current_model()
    assert (current["version"], current["parent"], current["promoted_at"]) == ("m2", "m1", NOW)
    assert store.rollback_model()["version"] == "m1"
    assert store.current_model()["version"] == "m1"


def test_api_keys(store: StoreBackend) -> None:
    first = "a1" * 32
    second = first[:16] + "c" * 48  # the same 16-character key_id as the first
    store.add_api_key(tenant="acme", key_hash=first, expires_at=NOW + timedelta(days=1))
    store.add_api_key(tenant="root", key_hash=second, admin=True)
    with pytest.raises(ConflictError):
        store.add_api_key(tenant="acme", key_hash=first)
    assert store.api_key(first) == {
        "tenant": "acme",
        "admin": False,
        "created_at": NOW,
        "expires_at": NOW + timedelta(days=1),
        "revoked_at": None,
    }
    assert store.api_key("f" * 64) is None
    assert [k["tenant"] for k in store.api_keys()] == ["acme", "root"]
    assert [k["key_id"] for k in store.api_keys("root")] == [second[:16]]
    with pytest.raises(ConflictError, match="several"):
        store.revoke_api_key(first[:16])
    revoked = store.revoke_api_key(first[:20])
    assert (revoked["key_id"], revoked["revoked_at"]) == (first[:16], NOW)
    with pytest.raises(NotFoundError):
        store.revoke_api_key("c" * 16)
    with pytest.raises(InvalidArgumentError, match="key_id"):
        store.revoke_api_key("XYZ")
    assert store.api_key(second)["revoked_at"] is None


def test_job_runs(store: StoreBackend) -> None:
    store.record_job_run(job="refresh", started_at=NOW, ended_at=NOW, outcome="ok",
                         detail={"campaigns": 2})  # fmt: skip
    store.record_job_run(job="retrain", started_at=NOW, ended_at=None, outcome="failed",
                         error="boom")  # fmt: skip
    store.record_job_run(job="refresh", started_at=NOW, ended_at=NOW, outcome="ok")
    runs = store.job_runs()
    assert [(r["job"], r["outcome"]) for r in runs] == [
        ("refresh", "ok"), ("retrain", "failed"), ("refresh", "ok")
    ]  # fmt: skip
    assert runs[0] == {"job": "refresh", "started_at": NOW, "ended_at": NOW, "outcome": "ok",
                       "error": None, "detail": {"campaigns": 2}}  # fmt: skip
    assert [r["error"] for r in store.job_runs("retrain")] == ["boom"]


def test_state_outlives_the_store_object(url: str) -> None:
    with open_store(url, clock=clock) as store:
        _campaign(store)
        secret = store.decision_id_secret()
        store.append_events(_events("c_1", 4))
    assert len(secret) == 32
    with pytest.raises(StoreClosedError):
        store.campaigns()
    with open_store(url, clock=clock) as again:
        assert again.decision_id_secret() == secret
        assert _totals(again, "c_1")["impressions"] == 4
        assert again.append_events(_events("c_1", 4)).duplicates == 4


def test_the_engine_opens_a_store_by_url(url: str) -> None:
    with open_store(url, clock=clock) as store:
        _campaign(store)
    with Engine(url, config=EngineConfig(background=False), clock=clock, seed=1) as engine:
        assert type(engine.store) is (PostgresStore if url.startswith("postgresql") else Store)
        chosen = {engine.choose("c_1").variant_id for _ in range(30)}
        engine.flush()
    assert chosen <= {"c_1_v0", "c_1_v1", "c_1_v2"}
    with open_store(url) as store:  # the engine's decisions were logged with impressions
        assert _totals(store, "c_1")["impressions"] == 30


# -- several processes on one PostgreSQL database ---------------------------------------------


def test_two_stores_on_one_database_see_each_others_writes(pg_server: str) -> None:
    url = _fresh_schema(pg_server)
    with open_store(url, clock=clock) as one, open_store(url, clock=clock) as two:
        _campaign(one)
        assert two.campaign("c_1")["brief"] == {"product": "tea"}
        two.append_events(_events("c_1", 10))
        assert _totals(one, "c_1")["impressions"] == 10
        one.add_model_version({"version": "m1"})
        two.promote_model("m1")
        assert one.current_model()["version"] == "m1"
        assert one.decision_id_secret() == two.decision_id_secret()

        # both deliver the same 200 events at once: each is counted exactly once
        batch = _events("c_1", 200, prefix="shared", kind="click")
        results: list[AppendResult] = []
        start = threading.Barrier(2)

        def deliver(store: StoreBackend) -> None:
            start.wait()
            for chunk in range(0, 200, 20):
                results.append(store.append_events(batch[chunk : chunk + 20]))

        threads = [threading.Thread(target=deliver, args=(s,)) for s in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(r.accepted for r in results) == 200
        assert sum(r.duplicates for r in results) == 200
        assert _totals(two, "c_1") == {"impressions": 10, "clicks": 200, "conversions": 0}

        # both approve the same pending variant at once: one review wins, one conflicts
        one.insert_variants("c_1", [{"variant_id": "v_p", "status": "pending"}])
        outcomes: list[str] = []

        def approve(store: StoreBackend, reviewer: str) -> None:
            start.wait()
            try:
                store.review_variant("c_1", "v_p", "reject", reviewer=reviewer, note=None)
                outcomes.append("ok")
            except ConflictError:
                outcomes.append("conflict")

        threads = [
            threading.Thread(target=approve, args=(s, name))
            for s, name in ((one, "ann"), (two, "bob"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["conflict", "ok"]
        assert len(two.variant_reviews("c_1")) == 1
