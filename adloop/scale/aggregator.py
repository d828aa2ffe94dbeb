"""``adloop aggregate``: consumer-group workers that turn the events topic into exact counts.

Each worker joins the consumer group, and for the partitions it is given starts at the
offsets stored **in PostgreSQL** (not the broker's): counts and offsets are committed in one
transaction (:func:`~adloop.scale.pg.apply_batch`), so a worker killed at any moment is
replaced by one that resumes exactly where the last committed batch ended. Each batch is
checked (:func:`~adloop.scale.events.check_events`), deduplicated by ``(campaign_id,
event_id)`` and added to the counts; rejected rows are kept with their field and reason.

With ``archive``, the raw events of each batch are also written as Parquet, one file per
partition and offset range (``partition=P/FIRST-LAST.parquet``), before the batch commits;
when a worker takes a partition it deletes the files that start at or after the committed
offset (a batch that never committed), so the archive holds each offset once and a replay
writes the same files again. DuckDB and polars read the folder directly.

Example::

    Aggregator(pg_url, bootstrap, archive="archive/").run(stop=threading.Event())
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from adloop.scale.events import EVENT_SCHEMA, check_events, decode
from adloop.scale.pg import OffsetConflict, apply_batch, connect, ensure_schema, stored_offsets
from adloop.scale.producer import DEFAULT_TOPIC

__all__ = ["DEFAULT_GROUP", "Aggregator"]

DEFAULT_GROUP = "adloop-aggregate"
_LOG = logging.getLogger("adloop.aggregate")


class Aggregator:
    """One consumer-group worker; run several (processes or hosts) for more partitions."""

    def __init__(
        self,
        pg_url: str,
        bootstrap: str,
        *,
        topic: str = DEFAULT_TOPIC,
        group: str = DEFAULT_GROUP,
        archive: str | Path | None = None,
        max_messages: int = 2000,
        poll_s: float = 0.2,
        session_timeout_ms: int = 6000,
        on_batch: Callable[[Any], None] | None = None,
    ) -> None:
        self.pg_url, self.bootstrap, self.topic, self.group = pg_url, bootstrap, topic, group
        self.archive = Path(archive) if archive else None
        self.max_messages = max_messages
        self.poll_s = poll_s
        self.session_timeout_ms = session_timeout_ms
        self.on_batch = on_batch
        self.totals = {"rows": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "batches": 0}
        self.busy_s = 0.0  # time spent decoding, checking and committing (not waiting)
        self.assigned = threading.Event()  # set once the group gave this worker partitions

    def _consumer(self, conn: Any) -> Any:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.session_timeout_ms // 6),
            "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 8_388_608,
            "log_level": 4,
        })  # fmt: skip

        def on_assign(cons: Any, partitions: list[Any]) -> None:
            stored = stored_offsets(conn, self.group, self.topic)
            conn.commit()
            starts = []
            for tp in partitions:
                offset = stored.get(tp.partition)
                if self.archive is not None and offset is not None:
                    self._drop_uncommitted(tp.partition, offset)
                start = OFFSET_BEGINNING if offset is None else offset
                starts.append(TopicPartition(tp.topic, tp.partition, start))
            cons.assign(starts)
            self.assigned.set()
            _LOG.info("assigned %s", {t.partition: t.offset for t in starts})

        consumer.subscribe([self.topic], on_assign=on_assign)
        return consumer

    def _folder(self, partition: int) -> Path:
        assert self.archive is not None
        return self.archive / self.topic / f"partition={partition}"

    def _drop_uncommitted(self, partition: int, next_offset: int) -> None:
        for path in self._folder(partition).glob("*.parquet"):
            if int(path.stem.split("-")[0]) >= next_offset:
                path.unlink()

    def _write_archive(self, table: pa.Table, ranges: dict[int, tuple[int, int]]) -> None:
        for partition, (first, last) in ranges.items():
            part = table.filter(pa.compute.equal(table["partition"], partition))
            folder = self._folder(partition)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{first:020d}-{last:020d}.parquet"
            temporary = target.with_suffix(".parquet.tmp")
            pq.write_table(part, temporary)
            temporary.replace(target)

    def _process(self, conn: Any, consumer: Any, messages: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        tables, ranges = [], {}
        for message in messages:
            partition, offset = message.partition(), message.offset()
            first, _ = ranges.get(partition, (offset, offset))
            ranges[partition] = (first, offset)
            try:
                table = decode(message.value())
            except ValueError as error:  # a foreign message: rejected whole, with its offset
                table = pa.table({"event_id": [None], "type": [None], "campaign_id": [None],
                                  "variant_id": [None], "segment": [""], "ts": [None],
                                  "value": [0.0]}, schema=EVENT_SCHEMA)  # fmt: skip
                _LOG.warning("partition %d offset %d: %s", partition, offset, error)
            n = table.num_rows
            table = table.append_column("partition", pa.array([partition] * n, pa.int32()))
            tables.append(table.append_column("message_offset", pa.array([offset] * n, pa.int64())))
        table = pa.concat_tables(tables)
        valid, rejected = check_events(table)
        if self.archive is not None:
            self._write_archive(table, ranges)
        try:
            result = apply_batch(conn, group=self.group, topic=self.topic, events=valid,
                                 rejected=rejected, ranges=ranges)  # fmt: skip
        except OffsetConflict as conflict:
            _LOG.warning("%s; seeking there", conflict)
            for partition, offset in conflict.stored.items():
                consumer.seek(TopicPartition(self.topic, partition, offset))
            return
        for key in ("rows", "accepted", "duplicates", "rejected"):
            self.totals[key] += getattr(result, key)
        self.totals["batches"] += 1
        if self.on_batch is not None:
            self.on_batch(result)

    def run(self, stop: threading.Event | None = None, *, idle_exit_s: float | None = None) -> dict:
        """Consume until ``stop`` is set (or nothing arrived for ``idle_exit_s``); the totals
        (rows, accepted, duplicates, rejected, batches) and ``busy_s``, the seconds spent on
        batches rather than waiting for them."""
        stop = stop or threading.Event()
        with connect(self.pg_url) as conn:
            ensure_schema(conn)
            consumer = self._consumer(conn)
            idle_since = time.monotonic()
            try:
                while not stop.is_set():
                    messages = [m for m in consumer.consume(self.max_messages, self.poll_s)
                                if m.error() is None]  # fmt: skip
                    if not messages:
                        idle = time.monotonic() - idle_since
                        if (
                            idle_exit_s is not None
                            and self.assigned.is_set()
                            and idle > idle_exit_s
                        ):
                            break
                        if not self.assigned.is_set():
                            idle_since = time.monotonic()
                        continue
                    started = time.perf_counter()
                    self._process(conn, consumer, messages)
                    self.busy_s += time.perf_counter() - started
                    idle_since = time.monotonic()
            finally:
                consumer.close()
        return {**self.totals, "busy_s": round(self.busy_s, 3)}
