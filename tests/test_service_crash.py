"""``adloop serve`` as a real process: SIGKILL mid-ingest loses no acknowledged event, and
SIGTERM drains in-flight requests and queued decisions before exiting."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from test_service_support import free_port, reap, start_serve_process, terminate

from adloop.optimizer.auth import create_key
from adloop.storage import Store

BATCH = 200
BRIEF = {"product": "bespoke engagement rings", "language": "en"}
VARIANTS = [
    {"text": "Bespoke engagement rings, made to measure"},
    {"text": "Engagement rings designed with you"},
]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")


@pytest.fixture
def deployment(tmp_path: Path):
    db = tmp_path / "adloop.duckdb"
    with Store(db) as store:
        key = create_key(store, tenant="acme")
    return db, key


def _campaign(url: str, key: str) -> tuple[str, list[str]]:
    response = httpx.post(
        f"{url}/v1/campaigns",
        json={"brief": BRIEF, "variants": VARIANTS},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["campaign_id"], [v["variant_id"] for v in body["variants"]]


def _ingest_until_stopped(url, key, campaign_id, variant_ids, worker, acked, stop) -> None:
    """Post click batches until the server goes away; keep the batches that got a 2xx."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        n = 0
        while not stop.is_set():
            ts = datetime.now(UTC).replace(tzinfo=None).isoformat()
            events = [
                {
                    "event_id": f"w{worker}-b{n}-{i}",
                    "type": "click",
                    "campaign_id": campaign_id,
                    "variant_id": variant_ids[i % len(variant_ids)],
                    "ts": ts,
                }
                for i in range(BATCH)
            ]
            n += 1
            try:
                response = http.post("/v1/events", json={"events": events})
            except httpx.TransportError:
                return
            if response.status_code == 200:
                assert response.json()["accepted"] == BATCH
                acked.append(events)


def _run_workers(url, key, campaign_id, variant_ids, n_workers=3):
    acked: list[list[dict]] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_ingest_until_stopped,
            args=(url, key, campaign_id, variant_ids, w, acked, stop),
            daemon=True,
        )
        for w in range(n_workers)
    ]
    for thread in threads:
        thread.start()
    return acked, stop, threads


def _assert_all_present(url: str, key: str, campaign_id: str, acked: list[list[dict]]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        view = http.get(f"/v1/campaigns/{campaign_id}").json()
        clicks = sum(v["clicks"] for v in view["variants"])
        assert clicks >= len(acked) * BATCH
        assert clicks % BATCH == 0  # every batch is in whole or not at all
        # replaying the acknowledged events must find every one of them already stored
        flat = [event for events in acked for event in events]
        for start in range(0, len(flat), 5000):
            chunk = flat[start : start + 5000]
            replay = http.post("/v1/events", json={"events": chunk}).json()
            assert replay == {"accepted": 0, "duplicates": len(chunk), "rejected": 0, "errors": []}


def test_sigkill_mid_ingest_keeps_every_acknowledged_event(deployment) -> None:
    db, key = deployment
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve_process(db, port)
    try:
        campaign_id, variant_ids = _campaign(url, key)
        acked, stop, threads = _run_workers(url, key, campaign_id, variant_ids)
        deadline = time.monotonic() + 30
        while len(acked) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        reap(process)
    assert len(acked) >= 10
    restarted = start_serve_process(db, port)
    try:
        _assert_all_present(url, key, campaign_id, acked)
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
        if restarted.stdout:
            restarted.stdout.close()


def test_sigterm_drains_requests_and_queued_decisions(deployment) -> None:
    db, key = deployment
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve_process(db, port)
    chosen = []
    try:
        campaign_id, variant_ids = _campaign(url, key)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            for _ in range(5):
                response = http.post(f"/v1/campaigns/{campaign_id}/choose", json={"n": 100})
                chosen += response.json()["decisions"]
        acked, stop, threads = _run_workers(url, key, campaign_id, variant_ids)
        deadline = time.monotonic() + 30
        while len(acked) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert terminate(process) == 0
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        reap(process)
    with Store(db) as store:
        stats = store.arm_stats(campaign_id)
        # decisions were queued in memory when SIGTERM came; the drain committed them
        assert int(stats["impressions"].sum()) == len(chosen) == 500
        assert int(stats["clicks"].sum()) >= len(acked) * BATCH
        for events in acked:
            result = store.append_events(events)
            assert result.accepted == 0 and result.duplicates == BATCH
