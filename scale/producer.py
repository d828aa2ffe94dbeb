"""Publishing events to a Kafka-protocol topic: batched per campaign, idempotent, acknowledged.

:class:`EventPublisher` groups events by campaign (the message key, so a campaign keeps one
partition and its order) into messages of ``batch_events`` events (Arrow IPC; see
:mod:`.events`), or fewer once ``linger_s`` has passed. The producer is idempotent with
``acks=all``: the broker writes a retried message once. While the broker is down, librdkafka
keeps messages in memory and resends them for ``delivery_timeout_s``; :meth:`publish` with
``wait=True`` returns only when the broker has acknowledged every event, so an ad server (or
``POST /v1/events`` in this mode) acknowledges exactly what is safely in the log.

Example::

    with EventPublisher(bootstrap) as publisher:
        publisher.publish(events, wait=True)   # broker-acknowledged when it returns
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adloop.scale.events import encode, events_table

__all__ = ["DEFAULT_TOPIC", "DeliveryError", "EventPublisher", "ensure_topic"]

DEFAULT_TOPIC = "adloop.events"


class DeliveryError(RuntimeError):
    """The broker did not acknowledge some events in time; they were not acknowledged upstream."""


def ensure_topic(bootstrap: str, topic: str = DEFAULT_TOPIC, partitions: int = 4) -> None:
    """Create ``topic`` with ``partitions`` partitions unless it exists."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])  # fmt: skip
    for future in futures.values():
        try:
            future.result(15)
        except Exception as error:  # noqa: BLE001 - a racing creator already made it
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise


def _by_campaign(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """The table cut into one part per campaign, each in its original order (one sort, not a
    filter per campaign)."""
    if not table.num_rows:
        return []
    codes = pc.dictionary_encode(table["campaign_id"]).combine_chunks()
    order = np.argsort(codes.indices.to_numpy(zero_copy_only=False), kind="stable")
    ordered = table.take(pa.array(order))
    sorted_codes = codes.indices.to_numpy(zero_copy_only=False)[order]
    starts = np.flatnonzero(np.diff(sorted_codes, prepend=-1))
    ends = np.append(starts[1:], len(order))
    names = codes.dictionary.to_pylist()
    return [
        (names[sorted_codes[a]], ordered.slice(a, b - a)) for a, b in zip(starts, ends, strict=True)
    ]


class EventPublisher:
    """An idempotent producer of event messages; see the module docstring."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = DEFAULT_TOPIC,
        batch_events: int = 500,
        linger_s: float = 0.05,
        delivery_timeout_s: float = 120.0,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.batch_events = batch_events
        self.linger_s = linger_s
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "compression.type": "none",
            "delivery.timeout.ms": int(delivery_timeout_s * 1000),
            "message.max.bytes": 8_000_000, "log_level": 4, **(settings or {}),
        })  # fmt: skip
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._unacknowledged = 0
        self._failed: list[str] = []
        self.acknowledged_events = 0
        self.messages = 0

    def _delivered(self, error: Any, message: Any, rows: int) -> None:
        with self._lock:
            self._unacknowledged -= rows
            if error is not None:
                self._failed.append(str(error))
            else:
                self.acknowledged_events += rows

    def _send(self, campaign_id: str, table: pa.Table) -> None:
        rows = table.num_rows
        with self._lock:
            self._unacknowledged += rows
        while True:
            try:
                self._producer.produce(
                    self.topic, key=campaign_id.encode(), value=encode(table),
                    on_delivery=lambda err, msg, rows=rows: self._delivered(err, msg, rows),
                )  # fmt: skip
                break
            except BufferError:  # the local queue is full (broker slow or down): wait for room
                self._producer.poll(0.1)
        self.messages += 1
        self._producer.poll(0)

    def publish(
        self, events: Iterable[Mapping[str, Any]] | pa.Table, *, wait: bool = False
    ) -> None:
        """Queue events (dicts as the HTTP API takes them, or an events table).

        With ``wait``, send everything queued and return once the broker acknowledged it; raises
        :class:`DeliveryError` if it did not within the delivery timeout.
        """
        table = events if isinstance(events, pa.Table) else events_table(events)
        for campaign_id, part in _by_campaign(table):
            self._pending.setdefault(campaign_id, []).append(part)
            rows = self._pending_rows.get(campaign_id, 0) + part.num_rows
            self._pending_rows[campaign_id] = rows
            if rows >= self.batch_events:
                self._flush_campaign(campaign_id)
        if wait or time.monotonic() - self._since >= self.linger_s:
            for campaign_id in list(self._pending):
                self._flush_campaign(campaign_id)
            self._since = time.monotonic()
        if wait:
            self.flush()

    def _flush_campaign(self, campaign_id: str) -> None:
        parts = self._pending.pop(campaign_id, [])
        self._pending_rows.pop(campaign_id, None)
        if parts:
            table = pa.concat_tables(parts)
            for start in range(0, table.num_rows, self.batch_events):  # bounded messages
                self._send(campaign_id, table.slice(start, self.batch_events))

    def flush(self, timeout_s: float | None = None) -> None:
        """Send what is queued and wait for every acknowledgement (or raise DeliveryError)."""
        for campaign_id in list(self._pending):
            self._flush_campaign(campaign_id)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._producer.flush(1.0)
            with self._lock:
                if self._failed:
                    failed, self._failed = self._failed, []
                    raise DeliveryError(
                        f"the broker did not take {len(failed)} messages: {failed[0]}"
                    )
                if self._unacknowledged <= 0:
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise DeliveryError(f"{self._unacknowledged} events not acknowledged in time")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
