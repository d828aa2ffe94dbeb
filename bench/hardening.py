"""Hardening benchmark: the service under a wrong-key flood and a hostile tenant's cardinality.

``python -m bench.hardening [--quick]`` writes ``bench/results/hardening.json`` and ``.md``:

1. valid ``choose`` throughput (50 concurrent aiohttp connections) without, then with, a
   concurrent flood of 1,000 wrong-key requests a second (each with a fresh random key, the
   case a negative cache alone cannot absorb), in one run, side by side; target: the flood
   costs valid traffic at most 20 % (ratio >= 0.8);
2. another tenant's ``POST /v1/campaigns`` and ``choose`` latency without, then with, 20,000
   distinct segment values posted by a hostile tenant; target: within 2x.

The server is the app ``adloop serve`` runs, in a child process on 127.0.0.1 (see
``bench.service``); client and server share the machine's cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import write_results
from bench.service import CONCURRENCY, _free_port, _load, _setup, _wait_until_up

FLOOD_PER_SECOND = 1000
HOSTILE_SEGMENTS = 20_000
_BRIEF = {"product": "bespoke rings", "language": "en"}


async def _flood(url: str, seconds: float, per_second: int) -> dict[str, Any]:
    """``per_second`` wrong-key ``choose`` requests a second for ``seconds``; status counts."""
    import aiohttp

    statuses: dict[int, int] = {}
    in_flight = asyncio.Semaphore(256)  # a client that cannot keep up sends less, never more

    async def one(session: aiohttp.ClientSession) -> None:
        async with in_flight:
            headers = {"Authorization": f"Bearer adk_{secrets.token_urlsafe(32)}"}
            try:
                async with session.post(url, data=b"{}", headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1

    tick = 0.01
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        tasks: list[asyncio.Task] = []
        started = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * per_second) - sent
            tasks.extend(asyncio.create_task(one(session)) for _ in range(due))
            sent += due
            await asyncio.sleep(tick)
        await asyncio.gather(*tasks)
    return {"sent": sent, "per_second": sent / seconds, "statuses": statuses}


async def _valid(choose_url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    """Valid ``choose`` requests from :data:`CONCURRENCY` connections for ``seconds``."""
    return await _load(
        choose_url,
        method="POST",
        body=b"{}",
        headers=headers,
        seconds=seconds,
        concurrency=CONCURRENCY,
    )


def flood_process(url: str, seconds: float, per_second: int) -> None:
    """Child-process entry: run the flood and print its counts as JSON (its own CPU and
    event loop, so the flood client does not slow the valid client down)."""
    print(json.dumps(asyncio.run(_flood(url, seconds, per_second))))


async def _with_flood(choose_url: str, headers: dict[str, str], seconds: float) -> tuple:
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"from bench.hardening import flood_process; "
        f"flood_process({choose_url!r}, {seconds}, {FLOOD_PER_SECOND})",
        stdout=asyncio.subprocess.PIPE,
    )
    valid = await _valid(choose_url, headers, seconds)
    output, _ = await flood.communicate()
    counts = json.loads(output)
    counts["statuses"] = {int(k): v for k, v in counts["statuses"].items()}
    return valid, counts


def wrong_key_flood(base: str, campaign_id: str, key: str, seconds: float) -> list[dict]:
    """Valid choose throughput alone and beside the flood, alternated twice."""
    choose_url = f"{base}/v1/campaigns/{campaign_id}/choose"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    alone, flooded, floods = [], [], []
    for _ in range(2):
        alone.append(asyncio.run(_valid(choose_url, headers, seconds)))
        valid, flood = asyncio.run(_with_flood(choose_url, headers, seconds))
        flooded.append(valid)
        floods.append(flood)
    rates = [sum(p["requests"] for p in parts) / (seconds * 2) for parts in (alone, flooded)]
    statuses: dict[int, int] = {}
    for flood in floods:
        for status, n in flood["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    ratio = rates[1] / rates[0]
    return [
        {
            "name": "valid choose, no flood",
            "per_second": rates[0],
            "p50_ms": float(np.median([x for p in alone for x in p["latencies"]]) * 1e3),
            "errors": sum(p["errors"] for p in alone),
        },
        {
            "name": f"valid choose, {FLOOD_PER_SECOND} wrong-key req/s beside",
            "per_second": rates[1],
            "p50_ms": float(np.median([x for p in flooded for x in p["latencies"]]) * 1e3),
            "errors": sum(p["errors"] for p in flooded),
            "ratio": ratio,
            "target": "ratio >= 0.8",
            "met": ratio >= 0.8,
            "flood_sent_per_second": sum(f["per_second"] for f in floods) / len(floods),
            "flood_statuses": statuses,
        },
    ]


def _timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn``."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def _other_tenant(http: Any, base: str, key: str, quick: bool) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {key}"}
    body = {"brief": _BRIEF, "variants": [{"text": f"Rings, design {i}"} for i in range(5)]}

    def create() -> None:
        response = http.post(f"{base}/v1/campaigns", json=body, headers=auth, timeout=120)
        assert response.status_code == 201, response.text

    create_s = _timed(create, 3 if quick else 10)
    campaign_id = http.get(f"{base}/v1/campaigns", headers=auth).json()["campaigns"][-1][
        "campaign_id"
    ]
    url = f"{base}/v1/campaigns/{campaign_id}/choose"
    choose_s = _timed(lambda: http.post(url, json={}, headers=auth), 200 if quick else 2000)
    return {"create_ms": create_s * 1e3, "choose_ms": choose_s * 1e3}


def hostile_cardinality(base: str, hostile_key: str, victim_key: str, quick: bool) -> list[dict]:
    """The victim tenant's latencies before and after the hostile tenant's segment flood."""
    import httpx

    with httpx.Client(timeout=120) as http:
        before = _other_tenant(http, base, victim_key, quick)
        auth = {"Authorization": f"Bearer {hostile_key}"}
        made = http.post(
            f"{base}/v1/campaigns",
            json={"brief": _BRIEF, "variants": [{"text": "Cheap"}, {"text": "Cheaper"}]},
            headers=auth,
        ).json()
        campaign_id, variant_id = made["campaign_id"], made["variants"][0]["variant_id"]
        statuses: dict[int, int] = {}
        for start in range(0, HOSTILE_SEGMENTS, 10_000):
            events = [
                {
                    "event_id": f"h-{i}",
                    "type": "impression",
                    "campaign_id": campaign_id,
                    "variant_id": variant_id,
                    "segment": f"segment-{i}",
                }
                for i in range(start, min(start + 10_000, HOSTILE_SEGMENTS))
            ]
            status = http.post(f"{base}/v1/events", json={"events": events}, headers=auth)
            statuses[status.status_code] = statuses.get(status.status_code, 0) + 1
        # the hostile campaign's segments reach a choose and a refresh before measuring
        for i in range(0, HOSTILE_SEGMENTS, max(1, HOSTILE_SEGMENTS // 200)):
            http.post(
                f"{base}/v1/campaigns/{campaign_id}/choose",
                json={"segment": f"segment-{i}"},
                headers=auth,
            )
        time.sleep(1.0)
        after = _other_tenant(http, base, victim_key, quick)
    rows = []
    for what in ("create_ms", "choose_ms"):
        ratio = after[what] / before[what]
        rows.append(
            {
                "name": f"other tenant's {what[:-3]} (median ms), {HOSTILE_SEGMENTS} segments",
                "before_ms": before[what],
                "after_ms": after[what],
                "ratio": ratio,
                "target": "ratio <= 2",
                "met": ratio <= 2.0,
                "hostile_event_statuses": statuses,
            }
        )
    return rows


def main(out: Path, quick: bool) -> None:
    """Run both parts against one server and write ``hardening.json`` / ``hardening.md``."""
    import httpx

    from adloop.optimizer.auth import create_key
    from adloop.storage import Store

    seconds = 2.0 if quick else 8.0
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "hardening.duckdb"
        campaign_id, key = _setup(db)
        with Store(db) as store:
            hostile_key = create_key(store, tenant="hostile")
            victim_key = create_key(store, tenant="victim")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-c", f"from bench.service import serve; serve({str(db)!r}, {port})"],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            _wait_until_up(f"{base}/healthz", process)
            for in_use in (hostile_key, victim_key):  # keys in use are never rate-limited
                httpx.get(f"{base}/v1/campaigns", headers={"Authorization": f"Bearer {in_use}"})
            rows = wrong_key_flood(base, campaign_id, key, seconds)
            rows += hostile_cardinality(base, hostile_key, victim_key, quick)
        finally:
            process.terminate()
            process.wait(timeout=60)
    notes = (
        f"{'Quick run: ' if quick else ''}{seconds:g} s load phases, alternated twice; the "
        "flood uses a fresh random key per request from the same client address as the "
        "valid traffic. Client and server share the machine's cores."
    )
    write_results("hardening", rows, out, notes)


if __name__ == "__main__":
    main(Path("bench/results"), quick="--quick" in sys.argv)
