"""Scale-out benchmark: events through producer -> broker -> aggregators -> PostgreSQL, snapshot
push to choosers, and choosers' decisions/s; beside the embedded DuckDB store on the same events.

``adloop bench scale [--quick]`` starts PostgreSQL 15 (fsync on) and the tansu broker on
127.0.0.1 and measures, in one run on this machine:

- **ingest**: ``N`` events of 16 campaigns plus 5 % duplicate deliveries, published with the
  idempotent producer while 1 or 2 ``adloop aggregate`` worker processes count them; the counts
  are checked exact before a row is written. Figures: producer events/s, end-to-end events/s
  (first publish to exact counts), and aggregation events/s of the workers' busy time (decode,
  check, COPY, dedupe, count, commit; waiting excluded). The peer: the embedded DuckDB store's
  ``append_events`` on the same events in one process.
- **snapshot push**: 30 refreshes, each of one changed campaign; time from the snapshot's
  ``built_at`` (inside the refresher's transaction) to the moment every one of 4 choosers
  (two per process, two processes) has swapped it in; median and 95th percentile.
- **decisions/s**: two chooser processes on one store, each drawing variants from its
  snapshots as fast as it can for 3 s (in-process choice, as an ad server embedding it).
- **decisions/s over HTTP**: ``adloop serve --events-to ... --snapshots ...`` processes
  (uvicorn, 127.0.0.1), one and then two on the same store and broker, loaded with ``POST
  /v1/campaigns/{id}/choose`` by two aiohttp client processes (64 connections in all, split
  evenly over the servers); every decision is published as its impression event. The clients
  share the machine's cores with the servers, PostgreSQL and the broker.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench._common import max_rss_mb, write_results

N_CAMPAIGNS = 16
N_VARIANTS = 4
START = datetime(2026, 12, 1)


def _events(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    kinds = rng.choice(3, size=n, p=[0.94, 0.05, 0.01])
    campaigns = np.char.add("c_scale", (ids % N_CAMPAIGNS).astype(str))
    variants = np.char.add(np.char.add(campaigns, ".v"), rng.integers(0, N_VARIANTS, n).astype(str))
    table = pa.table({
        "event_id": pa.array([f"e{i:010d}" for i in ids.tolist()]),
        "type": pa.array(np.array(["impression", "click", "conversion"])[kinds]),
        "campaign_id": pa.array(campaigns),
        "variant_id": pa.array(variants),
        "segment": pa.array(np.array(["mobile", "desktop"])[rng.integers(0, 2, n)]),
        "ts": pa.array(np.full(n, np.datetime64(START, "us"))),
        "value": pa.array(np.where(kinds == 2, 10.0, 0.0)),
    })  # fmt: skip
    duplicates = table.take(pa.array(rng.choice(n, size=n // 20, replace=False)))
    return pa.concat_tables([table, duplicates])


def _variant_ids(campaign: int) -> list[str]:
    return [f"c_scale{campaign}.v{i}" for i in range(N_VARIANTS)]


def _expected_total(table: pa.Table) -> int:
    return len(set(zip(table["campaign_id"].to_pylist(), table["event_id"].to_pylist(),
                       strict=True)))  # fmt: skip


def _counted(url: str) -> int:
    from adloop.scale.pg import connect

    with connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(impressions + clicks + conversions), 0) FROM adloop_counts"
        ).fetchone()
    return int(row[0])


def _prepare(url: str) -> None:
    from adloop.scale.pg import connect, ensure_schema, register_arms

    with connect(url) as conn:
        ensure_schema(conn)
        conn.execute("TRUNCATE adloop_counts, adloop_seen, adloop_changes, adloop_offsets")
        conn.commit()
        for c in range(N_CAMPAIGNS):
            register_arms(conn, "bench", f"c_scale{c}", _variant_ids(c))


def _ingest_row(url: str, bootstrap: str, table: pa.Table, workers: int, topic: str) -> dict:
    from adloop.scale.producer import EventPublisher, ensure_topic

    _prepare(url)
    ensure_topic(bootstrap, topic, partitions=8)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adloop.cli",
                "aggregate",
                "--pg",
                url,
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--idle-exit",
                "4",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        for _ in range(workers)
    ]
    time.sleep(4.0)  # the group forms (tansu needs a few seconds per join)
    expected = _expected_total(table)
    started = time.perf_counter()
    with EventPublisher(bootstrap, topic=topic, batch_events=500) as publisher:
        for offset in range(0, table.num_rows, 50_000):
            publisher.publish(table.slice(offset, 50_000))
        publisher.flush()
    published = time.perf_counter() - started
    while _counted(url) < expected:
        time.sleep(0.05)
    end_to_end = time.perf_counter() - started
    totals = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    counted = _counted(url)
    assert counted == expected, (counted, expected)
    busy = sum(t["busy_s"] for t in totals) / workers  # workers run side by side
    rows = sum(t["rows"] for t in totals)
    return {
        "measure": f"ingest, {workers} aggregator process{'es' if workers > 1 else ''}",
        "system": "adloop aggregate: tansu -> PostgreSQL 15",
        "events": table.num_rows, "exact": counted == expected,
        "producer_events_per_s": table.num_rows / published,
        "end_to_end_events_per_s": table.num_rows / end_to_end,
        "aggregation_events_per_s_busy": rows / busy if busy else None,
        "seconds": end_to_end,
        "peak_rss_mb_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }  # fmt: skip


def _duckdb_row(table: pa.Table) -> dict:
    from adloop.storage import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "peer.duckdb", clock=lambda: START + timedelta(days=1))
        for c in range(N_CAMPAIGNS):
            store.insert_campaign(
                {"campaign_id": f"c_scale{c}", "name": "bench", "objective": "ctr"},
                [{"variant_id": v, "headline": f"ad {v}"} for v in _variant_ids(c)],
            )
        started = time.perf_counter()
        accepted = 0
        for offset in range(0, table.num_rows, 50_000):
            accepted += store.append_events(table.slice(offset, 50_000)).accepted
        seconds = time.perf_counter() - started
        store.close()
    assert accepted == _expected_total(table)
    return {
        "measure": "ingest, one process", "system": "embedded DuckDB store (append_events)",
        "events": table.num_rows, "exact": True,
        "end_to_end_events_per_s": table.num_rows / seconds,
        "aggregation_events_per_s_busy": table.num_rows / seconds, "seconds": seconds,
        "peak_rss_mb_worker": max_rss_mb(),
    }  # fmt: skip


def _chooser(url: str, seconds: float, results: mp.Queue, swaps: mp.Queue | None) -> None:
    """A chooser process: two snapshot caches; reports swap times, then decisions/s."""
    from adloop.scale.snapshots import SnapshotCache

    caches = [SnapshotCache(url, poll_s=5.0).start() for _ in range(2)]
    if swaps is not None:
        for cache in caches:
            cache.on_swap = lambda snap: swaps.put((snap.campaign_id, snap.version, time.time()))
        results.put("ready")
        time.sleep(seconds)
    else:
        rng = random.Random(0)
        campaigns = [f"c_scale{c}" for c in range(N_CAMPAIGNS)]
        done, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for campaign in campaigns:
                caches[0].choose(campaign, rng)
            done += len(campaigns)
        results.put(done / seconds)
    for cache in caches:
        cache.close()


def _push_rows(url: str, rounds: int) -> list[dict]:
    from adloop.scale.pg import connect
    from adloop.scale.snapshots import refresh_snapshots

    context = mp.get_context("spawn")
    results, swaps = context.Queue(), context.Queue()
    listeners = [context.Process(target=_chooser, args=(url, rounds * 0.3 + 10, results, swaps))
                 for _ in range(2)]  # fmt: skip
    for p in listeners:
        p.start()
    for _ in listeners:
        results.get(timeout=60)
    time.sleep(0.5)
    delays = []
    with connect(url, autocommit=True) as conn:
        for r in range(rounds):
            campaign = f"c_scale{r % N_CAMPAIGNS}"
            conn.execute("UPDATE adloop_changes SET seq = seq + 1 WHERE campaign_id = %s",
                         (campaign,))  # fmt: skip
            built = dict(refresh_snapshots(url))
            built_at = conn.execute(
                "SELECT extract(epoch FROM built_at) FROM adloop_snapshots WHERE campaign_id = %s "
                "AND version = %s", (campaign, built[campaign]),
            ).fetchone()[0]  # fmt: skip
            seen = []
            while len(seen) < 4:
                got = swaps.get(timeout=30)
                if got[:2] == (campaign, built[campaign]):
                    seen.append(got[2])
            delays.append((max(seen) - float(built_at)) * 1000)
            time.sleep(0.2)
    for p in listeners:
        p.join(60)
    chooser = [context.Process(target=_chooser, args=(url, 3.0, results, None)) for _ in range(2)]
    for p in chooser:
        p.start()
    per_process = [results.get(timeout=120) for _ in chooser]
    for p in chooser:
        p.join(60)
    return [
        {"measure": "snapshot build to all 4 choosers (2 processes), median ms",
         "system": "PostgreSQL NOTIFY + SnapshotCache", "value": float(np.median(delays)),
         "p95": float(np.percentile(delays, 95)), "rounds": rounds},
        {"measure": "decisions/s, 2 chooser processes on one store",
         "system": "SnapshotCache.choose (in-process)", "value": float(sum(per_process)),
         "per_process": [round(x) for x in per_process]},
    ]  # fmt: skip


def _http_client(urls: list[str], key: str, seconds: float, results: mp.Queue) -> None:
    """A client process: aiohttp load on ``urls`` (32 connections split over them)."""
    import asyncio

    from bench.service import _load

    async def run() -> list[dict]:
        return await asyncio.gather(*(
            _load(url, method="POST", body=b"{}", seconds=seconds, concurrency=32 // len(urls),
                  headers={"Authorization": f"Bearer {key}",
                           "Content-Type": "application/json"})
            for url in urls
        ))  # fmt: skip

    parts = asyncio.run(run())
    results.put([(p["per_second"], p["errors"], float(np.median(p["latencies"]))) for p in parts])


def _serve_rows(url: str, bootstrap: str, folder: Path, seconds: float) -> list[dict]:
    """Decisions/s over HTTP of one ``adloop serve`` process, then of two on one store."""
    from adloop.scale.local import free_port
    from bench.service import _wait_until_up

    key = "bench-scale-serve-key"
    keys = folder / "keys.txt"
    keys.write_text(f"{key} bench\n")
    ports = [free_port() for _ in range(2)]
    servers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adloop.cli",
                "serve",
                "--db",
                str(folder / f"serve{i}.duckdb"),
                "--port",
                str(port),
                "--api-keys",
                str(keys),
                "--snapshots",
                url,
                "--events-to",
                f"kafka://{bootstrap}/bench.decisions",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for i, port in enumerate(ports)
    ]
    rows = []
    try:
        for port, server in zip(ports, servers, strict=True):
            _wait_until_up(f"http://127.0.0.1:{port}/healthz", server)
        choose = [f"http://127.0.0.1:{port}/v1/campaigns/c_scale0/choose" for port in ports]
        context = mp.get_context("spawn")
        for n_servers in (1, 2):
            targets = choose[:n_servers]
            results = context.Queue()
            # two client processes, each spreading its connections over the servers in use
            clients = [context.Process(target=_http_client, args=(targets, key, seconds, results))
                       for _ in range(2)]  # fmt: skip
            for client in clients:
                client.start()
            parts = [part for _ in clients for part in results.get(timeout=seconds + 120)]
            for client in clients:
                client.join(60)
            rows.append({
                "measure": f"decisions/s over HTTP, {n_servers} adloop serve "
                           f"process{'es' if n_servers > 1 else ''} on one store",
                "system": "adloop serve --events-to kafka --snapshots postgresql (aiohttp)",
                "value": sum(p[0] for p in parts), "errors": sum(p[1] for p in parts),
                "p50_ms": float(np.median([p[2] for p in parts])) * 1000,
                "seconds": seconds,
            })  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        for server in servers:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return rows


def main(out: Path, quick: bool) -> None:
    """Run the scale-out benchmark; write ``scale.json`` / ``scale.md`` into ``out``."""
    from adloop.scale.local import LocalBroker, LocalPostgres

    n = 200_000 if quick else 1_000_000
    table = _events(n, seed=0)
    rows = []
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalPostgres(Path(folder) / "pg", fast=False) as pg,
        LocalBroker() as broker,
    ):
        for workers in (1, 2):
            rows.append(_ingest_row(pg.url, broker.bootstrap, table, workers,
                                    topic=f"bench.events.{workers}"))  # fmt: skip
            print(rows[-1], flush=True)
        rows.extend(_push_rows(pg.url, rounds=10 if quick else 30))
        print(rows[-2:], flush=True)
        rows.extend(_serve_rows(pg.url, broker.bootstrap, Path(folder), 4.0 if quick else 10.0))
    rows.append(_duckdb_row(table))
    write_results("scale", rows, out, notes=(
        f"{n:,} distinct events plus 5 % duplicate deliveries, 16 campaigns, 8 partitions; "
        "PostgreSQL with fsync on; tansu keeps its log in memory. Aggregation events/s counts "
        "the workers' busy time (their mean when two run side by side). In-process "
        "decisions/s are of choosers embedded in a process; over HTTP, of adloop serve "
        "processes choosing from the same snapshots (each decision published to the broker), "
        "loaded by two aiohttp client processes with 64 connections in all: on this 2-core "
        "machine the clients, the servers, PostgreSQL and the broker share the same cores, so "
        "a second serve process adds cores' worth of throughput only where there are cores."
    ))  # fmt: skip
