"""Publishing events to a Kafka-protocol topic: batched per campaign, idempotent, acknowledged.

:class:`EventPublisher` groups events by campaign (the message key, so a campaign keeps one
partition and its order) into messages of ``batch_events`` events (Arrow IPC; see
:mod:`.events`), or fewer once ``linger_s`` has passed. The producer is idempotent with
``acks=all``: the broker writes a retried message once. While the broker is down, librdkafka
keeps messages in memory and resends them for ``delivery_timeout_s``; :meth:`publish` with
``wait=True`` returns only when the broker has acknowledged every event, so an ad server (or
``POST /v1/events`` in this mode) acknowledges exactly what is safely in the log.

Concurrent callers (the HTTP service's requests) use :meth:`~EventPublisher.submit` instead:
each gets a future that resolves once the broker acknowledged *its* events, while a sender
thread packs what all of them queued within ``linger_s`` into shared messages.
:meth:`~EventPublisher.log_impression` queues one served decision as an ``impression`` event
(its id the decision id) without anyone waiting for it.

Example::

    with EventPublisher(bootstrap) as publisher:
        publisher.publish(events, wait=True)   # broker-acknowledged when it returns
        publisher.submit(events).result(5)     # the same, from any thread
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adloop.scale.events import EVENT_SCHEMA, encode, events_table

__all__ = ["DEFAULT_TOPIC", "DeliveryError", "EventPublisher", "ensure_topic"]

DEFAULT_TOPIC = "adloop.events"

#: Served decisions kept for the sender at most (about 100 MB); beyond it, while the broker
#: is away for long, further ones are counted in ``lost_impressions`` instead.
MAX_QUEUED_IMPRESSIONS = 1_000_000


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


def _as_events(events: Any) -> pa.Table:
    """Events as a table of :data:`EVENT_SCHEMA`; any other shape (dicts, a table of other
    columns, with nulls) is read as the store reads it (:func:`~.events.events_table`)."""
    if isinstance(events, pa.Table) and events.schema.equals(EVENT_SCHEMA):
        return events
    return events_table(events)


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


@dataclass(eq=False)
class _Ticket:
    """One :meth:`EventPublisher.submit` call: its future and the messages it still awaits."""

    future: Future
    rows: int
    outstanding: int = 0
    error: str | None = None


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
        # submit() and log_impression(): queued under their own lock, sent by a thread
        self._queue_lock = threading.Lock()
        self._queued: list[tuple[pa.Table, _Ticket]] = []
        self._queued_rows = 0
        self._impressions: deque[tuple[str, str, str, str, float]] = deque()
        self._sender: threading.Thread | None = None
        self._closing = threading.Event()
        self.lost_impressions = 0
        """Logged decisions the broker refused (after librdkafka's own retries), or dropped
        beyond :data:`MAX_QUEUED_IMPRESSIONS`."""

    def _delivered(self, error: Any, rows: int, tickets: list[_Ticket] | None) -> None:
        with self._lock:
            self._unacknowledged -= rows
            if error is not None and tickets is None:  # submit()'s callers hear it themselves
                self._failed.append(str(error))
            elif error is None:
                self.acknowledged_events += rows
        if tickets is not None:
            self._settle(tickets, error)

    def _send(
        self, campaign_id: str, table: pa.Table, tickets: list[_Ticket] | None = None
    ) -> None:
        rows = table.num_rows
        with self._lock:
            self._unacknowledged += rows

        def delivered(error: Any, _message: Any) -> None:
            self._delivered(error, rows, tickets)

        while True:
            try:
                self._producer.produce(
                    self.topic, key=campaign_id.encode(), value=encode(table),
                    on_delivery=delivered,
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
        table = _as_events(events)
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

    # -- many callers: submit() and log_impression() -----------------------------------------
    @property
    def queued_events(self) -> int:
        """Events queued here or sent and not yet acknowledged by the broker."""
        return self._queued_rows + len(self._impressions) + max(self._unacknowledged, 0)

    def submit(self, events: Iterable[Mapping[str, Any]] | pa.Table) -> Future:
        """Queue events; a future of their number, set once the broker acknowledged them all.

        The future fails with :class:`DeliveryError` if the broker refused a message of
        them. It is never set early: an event whose future is done is in the log. Safe to
        call from many threads at once.
        """
        table = _as_events(events)
        ticket = _Ticket(Future(), table.num_rows)
        if not table.num_rows:
            ticket.future.set_result(0)
            return ticket.future
        self._start_sender()
        with self._queue_lock:
            self._queued.append((table, ticket))
            self._queued_rows += table.num_rows
        return ticket.future

    def log_impression(
        self, campaign_id: str, decision_id: str, variant_id: str, segment: str | None
    ) -> None:
        """Queue a served decision as an ``impression`` event (no one waits for it; about a
        microsecond: the sender thread builds the message)."""
        self._start_sender()
        if len(self._impressions) >= MAX_QUEUED_IMPRESSIONS:  # a long outage: bounded memory
            self.lost_impressions += 1
            return
        self._impressions.append((decision_id, campaign_id, variant_id, segment or "",
                                  time.time()))  # fmt: skip

    def _start_sender(self) -> None:
        if self._sender is None:
            with self._queue_lock:
                if self._sender is None:
                    self._sender = threading.Thread(
                        target=self._send_loop, name="event-publisher", daemon=True
                    )
                    self._sender.start()

    def _send_loop(self) -> None:
        while True:
            closing = self._closing.is_set()
            self._send_queued()
            self._producer.poll(self.linger_s)  # serves acknowledgements; paces the loop
            if closing:
                return

    def _impression_table(self) -> pa.Table | None:
        # popleft, not a swap of lists: an append racing a swap could land in the list taken
        logged = [self._impressions.popleft() for _ in range(len(self._impressions))]
        if not logged:
            return None
        event_id, campaign_id, variant_id, segment, stamp = zip(*logged, strict=True)
        micros = (np.asarray(stamp) * 1e6).astype(np.int64)
        return pa.table({
            "event_id": event_id, "type": pa.array(["impression"] * len(logged)),
            "campaign_id": campaign_id, "variant_id": variant_id, "segment": segment,
            "ts": pa.array(micros, pa.timestamp("us")),
            "value": pa.array(np.zeros(len(logged))),
        }, schema=EVENT_SCHEMA)  # fmt: skip

    def _send_queued(self) -> None:
        with self._queue_lock:
            queued, self._queued = self._queued, []
            self._queued_rows = 0
        impressions = self._impression_table()
        if impressions is not None:
            ticket = _Ticket(Future(), impressions.num_rows)
            ticket.future.add_done_callback(lambda done, n=ticket.rows: self._count_lost(done, n))
            queued.append((impressions, ticket))
        if not queued:
            return
        # Every message is counted on its tickets before any is sent, so no ticket can see
        # its count reach zero while messages of it are still to come.
        messages: list[tuple[str, pa.Table, list[_Ticket]]] = []
        by_campaign: dict[str, list[tuple[pa.Table, _Ticket]]] = {}
        for table, ticket in queued:
            for campaign_id, part in _by_campaign(table):
                by_campaign.setdefault(campaign_id, []).append((part, ticket))
        for campaign_id, parts in by_campaign.items():
            bounds = np.cumsum([0] + [part.num_rows for part, _ in parts])
            table = pa.concat_tables([part for part, _ in parts])
            for start in range(0, table.num_rows, self.batch_events):
                end = min(start + self.batch_events, table.num_rows)
                covered = [t for (_, t), a, b in zip(parts, bounds[:-1], bounds[1:], strict=True)
                           if a < end and b > start]  # fmt: skip
                for ticket in covered:
                    ticket.outstanding += 1
                messages.append((campaign_id, table.slice(start, end - start), covered))
        for campaign_id, table, covered in messages:
            self._send(campaign_id, table, covered)

    def _settle(self, tickets: list[_Ticket], error: Any) -> None:
        for ticket in tickets:
            ticket.outstanding -= 1
            if error is not None and ticket.error is None:
                ticket.error = str(error)
            if ticket.outstanding == 0 and ticket.future.set_running_or_notify_cancel():
                if ticket.error is None:
                    ticket.future.set_result(ticket.rows)
                else:
                    ticket.future.set_exception(
                        DeliveryError(f"the broker did not take the events: {ticket.error}")
                    )

    def _count_lost(self, future: Future, rows: int) -> None:
        if future.exception() is not None:
            self.lost_impressions += rows

    def close(self) -> None:
        """Send everything queued and wait for the broker's acknowledgements."""
        if self._sender is not None:
            self._closing.set()
            self._sender.join()
        self.flush()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
