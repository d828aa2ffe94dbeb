"""Service benchmark: the variant chooser in-process and over HTTP, and event ingestion.

``python -m bench service [--quick]`` (or ``adloop bench service``):

1. in-process ``Engine.choose`` latency (p50/p99 of single calls, 10 variants, background
   refresh and decision logging running as in production);
2. a real ``uvicorn`` server in a child process on 127.0.0.1 (the app ``create_app`` builds for
   ``adloop serve``) loaded by an aiohttp client with 50 concurrent connections, against a
   second uvicorn process on the same settings that holds the ceilings: a raw ASGI endpoint
   (uvicorn alone) and a FastAPI route with a fixed answer (uvicorn plus FastAPI routing),
   then ``POST /v1/campaigns/{id}/choose``, the phases alternating;
3. ``POST /v1/events`` in batches of 100 from 50 concurrent clients, then a check that every
   acknowledged event is in the database (zero loss).

Each load phase runs for a fixed time (``--quick``: shorter), so the benchmark is bounded.
``ADLOOP_BENCH_ENGINE='{"flush_interval": 0.5}'`` passes EngineConfig fields to the server.
Client and server share the machine's cores, as they would on a single box.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request, Response  # module level: FastAPI resolves the annotations

from bench._common import max_rss_mb, write_results

CONCURRENCY = 50
EVENT_CLIENTS = 50
EVENT_BATCH = 100
N_VARIANTS = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _setup(db: Path) -> tuple[str, str]:
    """A campaign with 10 variants and an API key in a fresh database."""
    from adloop.optimizer import Engine, EngineConfig
    from adloop.optimizer.auth import create_key

    with Engine(db, config=EngineConfig(background=False)) as engine:
        brief = {
            "product": "bespoke rings",
            "language": "en",
            "variants": [{"text": f"Bespoke rings, design {i}"} for i in range(N_VARIANTS)],
        }
        campaign_id = engine.create_campaign(brief, tenant="bench")["campaign_id"]
        key = create_key(engine.store, tenant="bench")
    return campaign_id, key


def in_process(quick: bool) -> list[dict[str, Any]]:
    """Single-call ``choose`` latency with the engine's background work running."""
    from adloop.optimizer import Engine

    n = 20_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "inproc.duckdb"
        campaign_id, _ = _setup(db)
        with Engine(db, seed=1) as engine:
            choose = engine.choose
            for _ in range(2000):  # warm up
                choose(campaign_id)
            timings = np.empty(n)
            clock = time.perf_counter_ns
            for i in range(n):
                start = clock()
                choose(campaign_id)
                timings[i] = clock() - start
            segment_timings = np.empty(n // 4)
            for i in range(n // 4):
                start = clock()
                choose(campaign_id, segment="mobile")
                segment_timings[i] = clock() - start
    rows = []
    for name, values in (
        ("in-process choose", timings),
        ("in-process choose (segment)", segment_timings),
    ):
        rows.append(
            {
                "name": name,
                "system": "adloop",
                "requests": len(values),
                "per_second": float(1e9 / values.mean()),
                "p50_ms": float(np.percentile(values, 50) / 1e6),
                "p99_ms": float(np.percentile(values, 99) / 1e6),
                "p99_us": float(np.percentile(values, 99) / 1e3),
                "target": "p99 < 10 us",
            }
        )
    return rows


#: What ``adloop serve`` gives uvicorn (its defaults), for the service and the ceilings alike.
_UVICORN = {
    "host": "127.0.0.1",
    "log_level": "warning",
    "access_log": False,
    "timeout_graceful_shutdown": 30,
    "limit_concurrency": 1000,
}
_CEILING_BODY = (
    b'{"decision_id":"d_0123456789abcdef0123","variant_id":"v_0123456789ab",'
    b'"text":"Bespoke rings, design 0","probability":0.1}'
)


def serve(db: str, port: int) -> None:
    """Child-process entry: the service app, as ``adloop serve`` runs it, under uvicorn."""
    import uvicorn

    from adloop.optimizer import Engine, EngineConfig
    from adloop.optimizer.service import create_app

    overrides = json.loads(os.environ.get("ADLOOP_BENCH_ENGINE", "{}"))
    engine = Engine(Path(db), config=EngineConfig(**overrides))
    app = create_app(engine, close_engine=True)
    uvicorn.Server(uvicorn.Config(app, port=port, **_UVICORN)).run()


def serve_ceiling(port: int) -> None:
    """Child-process entry: the stack's ceilings on the same uvicorn settings.

    ``/raw`` is a bare ASGI endpoint (read the body, answer a fixed choose-sized JSON): what
    uvicorn itself costs. ``/fastapi`` is the same answer from a FastAPI route: what routing
    through FastAPI costs on top.
    """
    import uvicorn
    from fastapi import FastAPI

    routed = FastAPI()

    @routed.post("/fastapi")
    async def fastapi_endpoint(request: Request) -> Response:
        await request.body()
        return Response(_CEILING_BODY, media_type="application/json")

    async def app(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/raw":
            await routed(scope, receive, send)
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(_CEILING_BODY)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _CEILING_BODY})

    uvicorn.Server(uvicorn.Config(app, port=port, **_UVICORN)).run()


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    """Poll ``url`` until the server in ``process`` answers anything (60 s at most)."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.post(url, timeout=1)
            return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the benchmark server for {url} did not start")
        time.sleep(0.1)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(p["requests"] for p in parts)
    cpu = [p.pop("server_cpu_s", None) for p in parts]
    seconds = sum(p["requests"] / p["per_second"] for p in parts)
    latencies = [x for p in parts for x in p.pop("latencies")]
    p50, p99 = _percentiles(latencies)
    merged = {
        "requests": requests,
        "per_second": requests / seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": sum(p["errors"] for p in parts),
    }
    if all(c is not None for c in cpu):
        merged["server_cpu_us_per_request"] = sum(cpu) / requests * 1e6
    return merged


async def _load(
    url: str,
    *,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                async with session.request(method, url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed,
        "latencies": latencies,
        "errors": errors,
    }


async def _ingest(
    url: str, campaign_id: str, variant_ids: list[str], key: str, seconds: float
) -> tuple[dict[str, Any], int]:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ts = datetime.now(UTC).replace(tzinfo=None).isoformat()
    template = (
        '{"event_id":"b%d-%d-%d","type":"click","campaign_id":"'
        + campaign_id
        + '","variant_id":"%s","ts":"'
        + ts
        + '"}'
    )
    latencies: list[float] = []
    acknowledged = 0
    errors = 0
    stop_at = time.perf_counter() + seconds

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=EVENT_CLIENTS)
    ) as session:

        async def worker(worker_id: int) -> None:
            nonlocal acknowledged, errors
            batch = 0
            # One body per worker with a batch placeholder in every event_id: each request
            # then costs the client one bytes.replace, not 100 string formats, so the
            # client (on the same cores) takes less of the machine from the server.
            pattern = (
                (
                    '{"events":['
                    + ",".join(
                        template % (worker_id, 0, i, variant_ids[i % len(variant_ids)])
                        for i in range(EVENT_BATCH)
                    )
                    + "]}"
                )
                .encode()
                .replace(b'"b%d-0-' % worker_id, b'"b%d-@-' % worker_id)
            )
            while time.perf_counter() < stop_at:
                body = pattern.replace(b"-@-", b"-%d-" % batch)
                batch += 1
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status == 200:
                        acknowledged += json.loads(payload)["accepted"]
                    else:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(EVENT_CLIENTS)))
        elapsed = time.perf_counter() - started
    p50, p99 = _percentiles(latencies)
    return (
        {
            "requests": len(latencies),
            "per_second": acknowledged / elapsed,
            "p50_ms": p50,
            "p99_ms": p99,
            "errors": errors,
        },
        acknowledged,
    )


def over_http(quick: bool) -> tuple[list[dict[str, Any]], str]:
    import httpx

    seconds = 3.0 if quick else 10.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "http.duckdb"
        campaign_id, key = _setup(db)
        port, ceiling_port = _free_port(), _free_port()
        base, ceiling_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ceiling_port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen(
            [sys.executable, "-c", f"from bench.service import serve; serve({str(db)!r}, {port})"],
            env=env,
        )
        ceiling = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from bench.service import serve_ceiling; serve_ceiling({ceiling_port})",
            ],
            env=env,
        )
        try:
            _wait_until_up(f"{base}/healthz", process)
            _wait_until_up(f"{ceiling_base}/raw", ceiling)
            auth = {"Authorization": f"Bearer {key}"}
            view = httpx.get(f"{base}/v1/campaigns/{campaign_id}", headers=auth).json()
            variant_ids = [v["variant_id"] for v in view["variants"]]

            # Same request shape for all (POST, auth header, JSON body), alternated in halves
            # so that load from other processes on the machine hits each alike.
            headers = {**auth, "Content-Type": "application/json"}
            phases = {
                "raw": (f"{ceiling_base}/raw", ceiling),
                "fastapi": (f"{ceiling_base}/fastapi", ceiling),
                "choose": (f"{base}/v1/campaigns/{campaign_id}/choose", process),
            }
            halves: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
            for _ in range(2):
                for name, (url, server) in phases.items():
                    before = _cpu_seconds(server.pid)
                    part = asyncio.run(
                        _load(
                            url,
                            method="POST",
                            body=b"{}",
                            headers=headers,
                            seconds=seconds / 2,
                            concurrency=CONCURRENCY,
                        )
                    )
                    after = _cpu_seconds(server.pid)
                    part["server_cpu_s"] = None if before is None else after - before
                    halves[name].append(part)
            raw, routed, choose = (_merge(halves[name]) for name in phases)
            rows.append(
                {
                    "name": "HTTP raw ASGI endpoint (ceiling)",
                    "system": "uvicorn",
                    **raw,
                    "target": "ceiling",
                }
            )
            routed["of_ceiling"] = routed["per_second"] / raw["per_second"]
            rows.append(
                {
                    "name": "HTTP FastAPI route, fixed answer",
                    "system": "FastAPI+uvicorn",
                    **routed,
                    "target": "",
                }
            )
            choose["of_ceiling"] = choose["per_second"] / raw["per_second"]
            rows.append(
                {
                    "name": "HTTP POST /v1/campaigns/{id}/choose",
                    "system": "adloop",
                    **choose,
                    "target": ">= 80 % of ceiling",
                }
            )
            before = _cpu_seconds(process.pid)
            ingest, acknowledged = asyncio.run(
                _ingest(f"{base}/v1/events", campaign_id, variant_ids, key, seconds)
            )
            after = _cpu_seconds(process.pid)
            if before is not None and acknowledged:
                ingest["server_cpu_us_per_event"] = (after - before) / acknowledged * 1e6
            stored = sum(
                v["clicks"]
                for v in httpx.get(
                    f"{base}/v1/campaigns/{campaign_id}", headers=auth, timeout=60
                ).json()["variants"]
            )
            ingest["lost"] = acknowledged - stored
            rows.append(
                {
                    "name": f"HTTP events (batches of {EVENT_BATCH}, events/s)",
                    "system": "adloop",
                    **ingest,
                    "target": ">= 50k events/s, 0 lost",
                }
            )
        finally:
            for server in (process, ceiling):
                server.terminate()
                server.wait(timeout=60)
    notes = (
        f"{CONCURRENCY} concurrent connections for the request phases, {EVENT_CLIENTS} for "
        f"events; {seconds:g} s per phase; client (aiohttp, one process) and server "
        f"(uvicorn, one worker, {_stack()}) on the same {os.cpu_count()}-core machine. "
        f"'lost' = acknowledged events missing from the store afterwards. "
        f"server_cpu_us_* = the server process's CPU time per request (or event), which is "
        f"robust to other load on the machine, unlike req/s. "
        f"Bench process peak RSS {max_rss_mb():.0f} MiB."
    )
    return rows, notes


def _stack() -> str:
    """The HTTP parser and event loop uvicorn picks here ("auto" prefers the C ones)."""
    import importlib.util

    def have(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    parser = "httptools" if have("httptools") else "h11"
    loop = "uvloop" if have("uvloop") else "asyncio"
    return f"{parser} parser, {loop} loop"


def main(out: Path, quick: bool) -> None:
    """Run the service benchmark and write ``service.json`` / ``service.md``."""
    rows = in_process(quick)
    http_rows, notes = over_http(quick)
    write_results("service", rows + http_rows, out, notes)


if __name__ == "__main__":
    main(Path("bench/results"), quick="--quick" in sys.argv)
