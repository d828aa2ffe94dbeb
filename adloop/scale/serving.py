"""What an ``adloop serve`` process (or an ad server) needs to serve a scaled-out deployment.

:class:`ScaleOut` bundles the three links of one serving process to the shared services:

- a :class:`~adloop.scale.snapshots.SnapshotCache` it chooses from (``snapshot(campaign)``);
- an :class:`~adloop.scale.producer.EventPublisher` that takes posted events
  (:meth:`ScaleOut.submit`: a future set once the broker acknowledged them) and served
  decisions (:meth:`ScaleOut.log_impression`, not waited for);
- optionally the snapshot refresher, for the one process per deployment that runs it.

:func:`parse_events_to` reads ``kafka://HOST:PORT[,HOST:PORT...][/topic]``.

Example::

    with ScaleOut("postgresql://adloop@db/adloop", "kafka://broker:9092") as link:
        link.snapshot("c_1")                  # the newest snapshot this process holds
        link.submit(events).result(5)         # acknowledged by the broker
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from adloop.scale.pg import connect, decision_id_secret, ensure_schema, register_arms
from adloop.scale.producer import DEFAULT_TOPIC, EventPublisher, ensure_topic
from adloop.scale.snapshots import Snapshot, SnapshotCache, refresh_snapshots

__all__ = ["ScaleOut", "parse_events_to"]

_LOG = logging.getLogger("adloop.scale")


def parse_events_to(url: str) -> tuple[str, str]:
    """``(bootstrap servers, topic)`` of ``kafka://HOST:PORT[,HOST:PORT...][/topic]``.

    >>> parse_events_to("kafka://127.0.0.1:9092/ads.events")
    ('127.0.0.1:9092', 'ads.events')
    """
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise ValueError(
            f"got {url!r}; use kafka://HOST:PORT[/topic], e.g. kafka://127.0.0.1:9092/{DEFAULT_TOPIC}"
        )
    for server in parts.netloc.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"got {url!r}: {server!r} is not HOST:PORT")
    topic = parts.path.strip("/") or DEFAULT_TOPIC
    return parts.netloc, topic


class ScaleOut:
    """One serving process's links to PostgreSQL (snapshots) and Kafka (events, decisions).

    Parameters
    ----------
    snapshots_url:
        PostgreSQL URL of the snapshots (and arms) tables.
    events_to:
        ``kafka://HOST:PORT[/topic]`` of the events topic.
    ack_timeout_s:
        How long a posted batch may wait for the broker's acknowledgement before the caller
        gives up (the HTTP service answers 503 then).
    linger_s:
        How long events wait to share a message with other requests' events.
    poll_s:
        Snapshot poll interval (a fallback: new versions are pushed by ``NOTIFY``).
    refresh_every_s:
        Also run the snapshot refresher every this many seconds (one process per
        deployment); None: another process does.
    """

    def __init__(
        self,
        snapshots_url: str,
        events_to: str,
        *,
        ack_timeout_s: float = 5.0,
        linger_s: float = 0.005,
        poll_s: float = 5.0,
        refresh_every_s: float | None = None,
    ) -> None:
        self.snapshots_url = snapshots_url
        self.events_to = events_to
        self.ack_timeout_s = ack_timeout_s
        self.refresh_every_s = refresh_every_s
        self.bootstrap, self.topic = parse_events_to(events_to)
        self.cache = SnapshotCache(snapshots_url, poll_s=poll_s)
        self.publisher = EventPublisher(self.bootstrap, topic=self.topic, linger_s=linger_s)
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._secret: bytes | None = None
        self.refresh_failures = 0

    # -- serving ------------------------------------------------------------------------
    def snapshot(self, campaign_id: str) -> Snapshot | None:
        """The newest snapshot of the campaign this process holds (None: none yet)."""
        return self.cache.snapshot(campaign_id)

    def submit(self, events: Iterable[Mapping[str, Any]] | Any) -> Future:
        """Publish events; a future of their number, set once the broker acknowledged them."""
        return self.publisher.submit(events)

    def decision_id_secret(self) -> bytes:
        """The deployment's key of idempotent decision ids, read once from PostgreSQL."""
        if self._secret is None:
            with connect(self.snapshots_url, connect_timeout=3) as conn:
                ensure_schema(conn)
                self._secret = decision_id_secret(conn)
        return self._secret

    def log_impression(
        self, campaign_id: str, decision_id: str, variant_id: str, segment: str | None
    ) -> None:
        """Publish a served decision as its impression event (not waited for)."""
        self.publisher.log_impression(campaign_id, decision_id, variant_id, segment)

    def register(self, tenant: str, campaign_id: str, variants: list[Mapping[str, Any]]) -> None:
        """Register the campaign's variants (``variant_id``, ``text``, ``served``) in
        PostgreSQL, so the aggregator counts their events and the refresher builds a
        snapshot of the served ones."""
        with connect(self.snapshots_url, connect_timeout=5) as conn:
            for served in (True, False):
                chosen = [v for v in variants if bool(v["served"]) is served]
                if chosen:
                    register_arms(
                        conn, tenant, campaign_id, [v["variant_id"] for v in chosen],
                        "active" if served else "retired", texts=[v["text"] for v in chosen],
                    )  # fmt: skip

    def metrics(self) -> dict[str, Any]:
        """Snapshot ages and versions per campaign, store reachability, producer queue."""
        report = self.cache.metrics()
        report["events_queued"] = self.publisher.queued_events
        report["impressions_lost"] = self.publisher.lost_impressions
        report["refresh_failures"] = self.refresh_failures
        return report

    # -- life ---------------------------------------------------------------------------
    def start(self) -> ScaleOut:
        """Create the tables and topic when absent, load the snapshots, start the threads.

        An unreachable PostgreSQL is not fatal (the cache keeps trying); an unreachable
        broker is (no event could be acknowledged)."""
        try:
            self.decision_id_secret()
        except Exception as error:  # noqa: BLE001 - serve what arrives once it is back
            _LOG.warning("snapshot store unreachable at start: %s", error)
        ensure_topic(self.bootstrap, self.topic)
        self.cache.start()
        if self.refresh_every_s is not None:
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="snapshot-refresher", daemon=True
            )
            self._refresher.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every_s):
            try:
                refresh_snapshots(self.snapshots_url)
            except Exception as error:  # noqa: BLE001 - the store is down: try again later
                self.refresh_failures += 1
                _LOG.warning("snapshot refresh failed: %s", error)

    def close(self) -> None:
        """Stop the threads; send queued events and wait for their acknowledgement."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=30)
        self.cache.close()
        self.publisher.close()

    def __enter__(self) -> ScaleOut:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
