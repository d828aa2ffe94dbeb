"""``adloop serve`` scaled out: two real serve processes on one PostgreSQL and one tansu broker.

Each process is ``adloop serve --events-to kafka://... --snapshots postgresql://...`` under
uvicorn on 127.0.0.1, started and stopped by PID; the aggregator is the real consumer-group
worker. Checked: events posted to both processes are counted exactly once (duplicates
included), both serve the same snapshot version and follow its allocation, a frozen broker
neither stops choices nor loses an acknowledged event, and a stale snapshot shows in /metrics.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("confluent_kafka", reason="scale-out needs: pip install 'adloop[scale]'")
pytest.importorskip("psycopg", reason="scale-out needs: pip install 'adloop[scale]'")

from test_service_support import free_port, reap, start_serve_process, terminate  # noqa: E402

from adloop.scale.aggregator import Aggregator  # noqa: E402
from adloop.scale.local import LocalBroker, LocalPostgres, ServiceError  # noqa: E402
from adloop.scale.pg import campaign_counts, connect, event_keys  # noqa: E402
from adloop.scale.producer import ensure_topic  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

KEY = "sk_scale_serve_test_key_0001"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TOPIC = "serve.events"
TS = "2026-12-01T12:00:00"
BRIEF = {"product": "bespoke engagement rings", "language": "en"}
VARIANTS = [{"text": "Bespoke engagement rings, made to measure"},
            {"text": "Engagement rings designed with you"}]  # fmt: skip


class Deployment:
    """PostgreSQL, tansu, an aggregator thread and two ``adloop serve`` processes."""

    def __init__(self, folder: Path) -> None:
        self.pg = LocalPostgres(folder / "pg").start()
        self.broker = LocalBroker().start()
        ensure_topic(self.broker.bootstrap, TOPIC, partitions=2)
        self.stop = threading.Event()
        self.aggregator = Aggregator(self.pg.url, self.broker.bootstrap, topic=TOPIC)
        self.worker = threading.Thread(target=self.aggregator.run, args=(self.stop,), daemon=True)
        self.worker.start()
        keys = folder / "keys.txt"
        keys.write_text(f"{KEY} acme admin\n")
        scale = ["--api-keys", str(keys), "--events-to",
                 f"kafka://{self.broker.bootstrap}/{TOPIC}", "--snapshots", self.pg.url,
                 "--ack-timeout", "2"]  # fmt: skip
        self.ports = [free_port(), free_port()]
        self.processes = []
        # the first runs the snapshot refresher (--scheduler): one per deployment
        for index, port in enumerate(self.ports):
            extra = [*scale, "--scheduler"] if index == 0 else scale
            db = folder / f"serve{index}.duckdb"
            self.processes.append(start_serve_process(db, port, *extra))
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]

    def close(self) -> list[int]:
        """Stop everything; the serve processes' exit codes (SIGTERM drains them: 0)."""
        codes = []
        for process in self.processes:
            try:
                codes.append(terminate(process))
            finally:
                reap(process)
        self.stop.set()
        self.worker.join(30)
        self.broker.process.send_signal(signal.SIGCONT)  # in case a test left it frozen
        self.broker.stop()
        self.pg.stop()
        return codes


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    try:
        running = Deployment(tmp_path_factory.mktemp("scale-serve"))
    except ServiceError as error:
        pytest.skip(str(error))
    yield running
    # each process sent what it had queued to the broker before exiting
    assert running.close() == [0, 0]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _metric(url: str, name: str, campaign_id: str | None = None) -> float | None:
    text = httpx.get(f"{url}/metrics", headers=HEADERS, timeout=10).text
    label = f'{{campaign_id="{campaign_id}"}}' if campaign_id else ""
    found = re.search(rf"^{name}{re.escape(label)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def _latest_version(deployment: Deployment, campaign_id: str) -> int:
    with connect(deployment.pg.url) as conn:
        row = conn.execute(
            "SELECT max(version) FROM adloop_snapshots WHERE campaign_id = %s", (campaign_id,)
        ).fetchone()
    return int(row[0] or 0)


def _weights(deployment: Deployment, campaign_id: str, version: int) -> dict[str, float]:
    with connect(deployment.pg.url) as conn:
        variants, weights = conn.execute(
            "SELECT variants, weights FROM adloop_snapshots WHERE campaign_id = %s AND "
            "version = %s", (campaign_id, version),
        ).fetchone()  # fmt: skip
    return dict(zip(variants, weights, strict=True))


def _serving(deployment: Deployment, campaign_id: str, version: int) -> bool:
    return all(
        (_metric(url, "adloop_scale_snapshot_version", campaign_id) or 0) >= version
        for url in deployment.urls
    )


def _events(campaign_id: str, variants: list[str], prefix: str, n: int) -> list[dict]:
    """Impressions on both variants; clicks on the second only (so it wins clearly)."""
    return [
        {"event_id": f"{prefix}{i}", "campaign_id": campaign_id, "ts": TS,
         "type": "click" if i % 4 == 3 else "impression",
         "variant_id": variants[1] if i % 4 == 3 else variants[i % 2]}
        for i in range(n)
    ]  # fmt: skip


def _post(url: str, events: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/v1/events", json={"events": events}, headers=HEADERS, timeout=30)


def _counted(deployment: Deployment, campaign_id: str) -> int:
    with connect(deployment.pg.url) as conn:
        counts = campaign_counts(conn, campaign_id)
    return sum(c["impressions"] + c["clicks"] for c in counts.values())


@pytest.fixture(scope="module")
def campaign(deployment: Deployment) -> tuple[str, list[str]]:
    """A campaign created on the first process; served by both once its snapshot exists."""
    response = httpx.post(f"{deployment.urls[0]}/v1/campaigns", headers=HEADERS, timeout=60,
                          json={"brief": BRIEF, "variants": VARIANTS})  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    campaign_id = body["campaign_id"]
    _wait(lambda: _latest_version(deployment, campaign_id) >= 1, 20, "the first snapshot")
    _wait(lambda: _serving(deployment, campaign_id, 1), 20, "both processes to serve it")
    return campaign_id, [v["variant_id"] for v in body["variants"]]


def test_two_serve_processes_count_events_once_and_serve_the_same_snapshot(
    deployment: Deployment, campaign: tuple[str, list[str]]
) -> None:
    campaign_id, variants = campaign
    first, second = deployment.urls
    events = _events(campaign_id, variants, "e", 2_000)
    # half to each process, and a tenth of them to both (a client retrying elsewhere)
    to_first, to_second = events[:1_000] + events[1_800:], events[1_000:]
    for url, batch in ((first, to_first), (second, to_second)):
        for start in range(0, len(batch), 500):
            response = _post(url, batch[start : start + 500])
            assert response.status_code == 202, response.text
            part = len(batch[start : start + 500])
            assert response.json() == {"published": part, "rejected": 0, "errors": [],
                                       "counts": "asynchronous"}  # fmt: skip
    # an unknown campaign is refused at once, naming the field, like the one-machine store
    unknown = _post(first, [{**events[0], "campaign_id": "nope"}]).json()
    assert unknown["published"] == 0 and unknown["rejected"] == 1
    assert unknown["errors"] == [{"row": 0, "field": "campaign_id", "reason": "unknown campaign"}]
    # a malformed batch gets the same 422 naming the field as without scaling out
    bad = _post(first, [{**events[0], "type": "hover"}])
    assert bad.status_code == 422 and bad.json()["field"] == "events.0.type"
    _wait(lambda: _counted(deployment, campaign_id) == 2_000, 60, "the aggregator")
    # the refresher (in the first process) builds a version from the counts; both take it
    version = _latest_version(deployment, campaign_id)
    _wait(lambda: _latest_version(deployment, campaign_id) > 1, 20, "a refreshed snapshot")
    version = _latest_version(deployment, campaign_id)
    _wait(lambda: _serving(deployment, campaign_id, version), 20, "both to swap it in")
    weights = _weights(deployment, campaign_id, version)
    assert weights[variants[1]] > 0.9  # all the clicks went to the second variant
    shares = []
    for url in deployment.urls:
        answer = httpx.post(f"{url}/v1/campaigns/{campaign_id}/choose", json={"n": 1000},
                            headers=HEADERS, timeout=30).json()  # fmt: skip
        picked = Counter(d["variant_id"] for d in answer["decisions"])
        shares.append(picked[variants[1]] / 1000)
        assert abs(shares[-1] - weights[variants[1]]) < 0.05
    # a retried request gets the same decision from either process
    same = [
        httpx.post(f"{url}/v1/campaigns/{campaign_id}/choose", json={"request_id": "r-1"},
                   headers=HEADERS, timeout=10).json()
        for url in deployment.urls
    ]  # fmt: skip
    assert same[0] == same[1] and same[0]["variant_id"] in variants
    # every decision was published as its impression, counted once (the retry's included)
    _wait(lambda: _counted(deployment, campaign_id) == 2_000 + 2_000 + 1, 60, "impressions")


def test_a_frozen_broker_keeps_choices_answering_and_loses_nothing_acknowledged(
    deployment: Deployment, campaign: tuple[str, list[str]]
) -> None:
    campaign_id, variants = campaign
    before = _counted(deployment, campaign_id)
    batches = [_events(campaign_id, variants, f"outage{b}-", 200) for b in range(6)]
    acknowledged, refused = [], []
    deployment.broker.process.send_signal(signal.SIGSTOP)  # the broker stops answering
    try:
        for index, batch in enumerate(batches[:4]):
            url = deployment.urls[index % 2]
            response = _post(url, batch)
            assert response.status_code in (202, 503), response.text
            if response.status_code == 503:
                assert response.headers["retry-after"] == "5"
                assert response.json()["error"] == "broker_unavailable"
                refused.append(batch)
            else:
                acknowledged.append(batch)
            for url in deployment.urls:  # choosers keep serving from their snapshot
                choice = httpx.post(f"{url}/v1/campaigns/{campaign_id}/choose",
                                    headers=HEADERS, timeout=5)  # fmt: skip
                assert choice.status_code == 200 and choice.json()["variant_id"] in variants
        assert refused, "a frozen broker cannot acknowledge anything"
        queued = _metric(deployment.urls[0], "adloop_scale_events_queued")
        assert queued is not None and queued > 0  # the producer buffers meanwhile
    finally:
        deployment.broker.process.send_signal(signal.SIGCONT)
    for index, batch in enumerate(refused + batches[4:]):  # the client resends what failed
        response = _post(deployment.urls[index % 2], batch)
        assert response.status_code == 202, response.text
        acknowledged.append(batch)
    flat = [event for batch in acknowledged for event in batch]
    keys = event_keys([e["campaign_id"] for e in flat], [e["event_id"] for e in flat])
    # 8 choices during the outage, each an impression; every event counted once
    expected = before + len(flat) + 8
    _wait(lambda: _counted(deployment, campaign_id) == expected, 60, "the outage's events")
    with connect(deployment.pg.url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM adloop_seen WHERE key = ANY(%s::uuid[])", (keys,)
        ).fetchone()[0]
    assert stored == len(set(keys))


def test_a_stale_snapshot_shows_in_the_metrics_and_is_still_served(
    deployment: Deployment, campaign: tuple[str, list[str]]
) -> None:
    campaign_id, variants = campaign
    url = deployment.urls[1]
    assert _metric(url, "adloop_scale_snapshot_store_reachable") == 1.0
    deployment.stop.set()  # the aggregator stops first (it would fail loudly without a store)
    deployment.worker.join(30)
    deployment.pg.stop()  # the shared store goes away: no refresh, no new snapshot
    _wait(lambda: _metric(url, "adloop_scale_snapshot_store_reachable") == 0.0, 30, "unreachable")
    version = _metric(url, "adloop_scale_snapshot_version", campaign_id)  # the last one it got
    age = _metric(url, "adloop_scale_snapshot_age_seconds", campaign_id)
    _wait(lambda: _metric(url, "adloop_scale_snapshot_age_seconds", campaign_id) > age + 1, 10,
          "the age to grow")  # fmt: skip
    assert _metric(url, "adloop_scale_snapshot_age_max_seconds") > age + 1
    assert _metric(url, "adloop_scale_snapshot_version", campaign_id) == version
    choice = httpx.post(f"{url}/v1/campaigns/{campaign_id}/choose", headers=HEADERS, timeout=5)
    assert choice.status_code == 200 and choice.json()["variant_id"] in variants
    # without a key, the campaign's series are not shown (only the identifier-free ones)
    anonymous = httpx.get(f"{url}/metrics", timeout=5).text
    assert campaign_id not in anonymous and "adloop_scale_snapshot_age_max_seconds" in anonymous


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--events-to", "kafka://broker", "--snapshots", "postgresql://a@127.0.0.1:1/b"],
         "--events-to: got 'kafka://broker': 'broker' is not HOST:PORT"),
        (["--events-to", "kafka://127.0.0.1:1"], "--snapshots: scaling out needs both"),
        (["--events-to", "kafka://127.0.0.1:1", "--snapshots", "mysql://x"],
         "--snapshots: got 'mysql://x'; use a PostgreSQL URL"),
    ],
)  # fmt: skip
def test_bad_scale_out_flags_are_refused_naming_the_flag_and_the_fix(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adloop.cli", "serve", "--db", str(tmp_path / "a.duckdb"), *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert says in done.stderr
