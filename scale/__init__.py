"""Running on more than one machine: Kafka-protocol ingest, PostgreSQL counts and snapshots.

The one-machine default stays DuckDB (:mod:`adloop.storage`). When ad servers outgrow it:

- :mod:`.producer` publishes events to a topic, batched per campaign, idempotent, ``acks=all``;
- :mod:`.aggregator` (``adloop aggregate``) counts them into PostgreSQL exactly once, committing
  counts and consumed offsets in one transaction, and archives raw events as Parquet;
- :mod:`.snapshots` builds each changed campaign's allocation once and pushes it to every
  chooser, which keeps serving its last snapshot when the store is down;
- :mod:`.pg` holds the tables and the aggregation step, :mod:`.events` the wire format;
- :mod:`.local` starts real PostgreSQL and tansu servers on 127.0.0.1 for tests and benchmarks.

Install with ``pip install 'adloop[scale]'``.
"""
