"""Hardening benchmark: the service under a wrong-key flood and a hostile tenant's cardinality.

``python -m bench.hardening [--quick]`` writes ``bench/results/hardening.json`` and ``.md``:

1. valid ``choose`` throughput (50 concurrent aiohttp connections) without, then with, a
   concurrent flood of 1,000 wrong-key requests a second (each with a fresh random key, the
   case a negative cache alone cannot absorb; a lean raw-socket client in its own process),
   in one run, side by side; target: the flood
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
    """``per_second`` wrong-key ``choose`` requests a second for ``seconds``; status counts.

    A lean client, so that the flood's own CPU on the shared cores is small beside the
    server's: requests are built before the clock starts (a fresh random key each) and sent
    over 20 keep-alive connections, each paced to its share of the rate.
    """
    host, port, path = _split(url)
    n_connections = 20
    per_connection = int(seconds * per_second) // n_connections
    statuses: dict[int, int] = {}

    def request(key: str) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        ).encode()

    prepared = [
        [request(f"adk_{secrets.token_urlsafe(32)}") for _ in range(per_connection)]
        for _ in range(n_connections)
    ]

    async def connection(requests: list[bytes], offset: float) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        interval = n_connections / per_second
        start = time.perf_counter() + offset
        for i, raw in enumerate(requests):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(
        *(connection(requests, i / per_second) for i, requests in enumerate(prepared))
    )
    sent = sum(statuses.values())
    return {
        "sent": sent,
        "per_second": sent / (time.perf_counter() - started),
        "statuses": statuses,
    }


def _split(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    authority, _, path = rest.partition("/")
    host, _, port = authority.partition(":")
    return host, int(port), "/" + path


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
    """Child-process entry: wait for a line on stdin, run the flood, print its counts as JSON
    (its own process and event loop, so the flood does not slow the valid client's loop)."""
    sys.stdin.readline()
    print(json.dumps(asyncio.run(_flood(url, seconds, per_second))))


async def _with_flood(choose_url: str, headers: dict[str, str], seconds: float) -> tuple:
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"from bench.hardening import flood_process; "
        f"flood_process({choose_url!r}, {seconds}, {FLOOD_PER_SECOND})",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(2.0)  # the child imports and builds its requests before the clock starts
    flood.stdin.write(b"go\n")
    await flood.stdin.drain()
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
