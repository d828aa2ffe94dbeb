"""The database schema as a list of forward migrations.

Each migration is applied once, in order, inside one transaction, and recorded in the
``schema_version`` table. Never edit a released migration: append a new one.

Design notes (why the tables look like this):

- ``events`` is an append-only log. It has no PRIMARY KEY: an index on a random string key
  makes bulk ingest about 15x slower and the file about 5x bigger. Instead each row carries
  ``event_key = hash(campaign_id, event_id)`` (64 bits; 30x cheaper than MD5), and
  deduplication semi-joins a batch's keys against the log's key column, then compares the full
  ``(campaign_id, event_id)`` of the few matches, so a 64-bit collision can never drop an event.
  Deduplication is scoped to the campaign, and so to its tenant: the same event_id in two
  campaigns is two events, and one tenant can neither drop nor probe another's ids. (Schema 1
  keyed on ``hash(event_id)`` alone, deduplicating across tenants; migration 3 recomputes the
  keys.) DuckDB does not promise ``hash()`` is stable across versions, so ``store_meta`` keeps
  the key of a fixed canary pair; when it changes on open, every key is recomputed before any
  write (see ``_migrations.check_event_keys``).
- ``store_meta`` holds ``(key, value)`` settings of this file: ``event_key_canary`` (above) and
  ``decision_id_secret``, 32 random bytes (hex) created on first use, which keys the decision
  ids of idempotent choices (see ``Store.decision_id_secret``).
- ``event_aggregates`` holds per-(campaign, variant, segment, type, hour) counts, appended in the
  same transaction as the events they summarise. Arm statistics sum these few rows instead of
  scanning millions of events. Counters are never updated in place; the writer occasionally
  compacts the aggregate rows (delete + insert of their sums in one transaction), which leaves
  every total unchanged. ``ts_offset_sum`` (seconds after the hour, summed) lets time-discounted
  statistics use each bucket's mean event time.
- ``variant_reviews`` is append-only too: one row per approval or rejection of a variant (who,
  when, the action, an optional note). The variant's ``status`` is what serving reads; the
  reviews are the record of who put it there (schema 4 adds ``pending`` and ``rejected``
  statuses, which need no DDL: statuses are validated by the store).
- ``variants.segments`` (schema 5) is the variant's targeting: a JSON list of the audience
  segments it is served to; NULL or ``[]`` means every segment (see ``optimizer.serving``).
- ``ingest_log`` records one row per (batch, campaign) with accepted/duplicate/rejected counts,
  so duplicate deliveries stay countable although duplicates themselves are never stored.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "initial schema",
        [
            "CREATE TABLE store_meta (key VARCHAR NOT NULL, value VARCHAR)",
            """CREATE TABLE campaigns (
                campaign_id VARCHAR NOT NULL,
                tenant VARCHAR NOT NULL,
                name VARCHAR,
                brief VARCHAR,
                objective VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                settings VARCHAR,
                winner_variant_id VARCHAR,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE variants (
                variant_id VARCHAR NOT NULL,
                campaign_id VARCHAR NOT NULL,
                headline VARCHAR,
                description VARCHAR,
                text VARCHAR,
                language VARCHAR,
                generator VARCHAR,
                model_version VARCHAR,
                parent_ids VARCHAR,
                provenance VARCHAR,
                status VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL,
                retired_at TIMESTAMP
            )""",
            "CREATE TYPE event_type AS ENUM ('impression', 'click', 'conversion')",
            """CREATE TABLE events (
                event_key UBIGINT NOT NULL,
                event_id VARCHAR NOT NULL,
                type event_type NOT NULL,
                campaign_id VARCHAR NOT NULL,
                variant_id VARCHAR NOT NULL,
                decision_id VARCHAR,
                segment VARCHAR,
                ts TIMESTAMP NOT NULL,
                value DOUBLE NOT NULL,
                batch_id BIGINT NOT NULL
            )""",
            """CREATE TABLE event_aggregates (
                campaign_id VARCHAR NOT NULL,
                variant_id VARCHAR NOT NULL,
                segment VARCHAR,
                type event_type NOT NULL,
                hour TIMESTAMP NOT NULL,
                n BIGINT NOT NULL,
                value DOUBLE NOT NULL,
                ts_offset_sum DOUBLE NOT NULL
            )""",
            """CREATE TABLE ingest_log (
                batch_id BIGINT NOT NULL,
                source VARCHAR NOT NULL,
                received_at TIMESTAMP NOT NULL,
                campaign_id VARCHAR,
                accepted BIGINT NOT NULL,
                duplicates BIGINT NOT NULL,
                rejected BIGINT NOT NULL
            )""",
            """CREATE TABLE decisions (
                decision_id VARCHAR NOT NULL,
                campaign_id VARCHAR NOT NULL,
                variant_id VARCHAR NOT NULL,
                segment VARCHAR,
                probability DOUBLE NOT NULL,
                ts TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE decision_aggregates (
                campaign_id VARCHAR NOT NULL,
                variant_id VARCHAR NOT NULL,
                n BIGINT NOT NULL,
                probability_sum DOUBLE NOT NULL
            )""",
            """CREATE TABLE model_versions (
                version VARCHAR NOT NULL,
                path VARCHAR,
                base VARCHAR,
                parent VARCHAR,
                data_hash VARCHAR,
                metrics VARCHAR,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE model_promotions (
                version VARCHAR NOT NULL,
                action VARCHAR NOT NULL,
                promoted_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE api_keys (
                key_hash VARCHAR NOT NULL,
                tenant VARCHAR NOT NULL,
                admin BOOLEAN NOT NULL,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE job_runs (
                job VARCHAR NOT NULL,
                started_at TIMESTAMP NOT NULL,
                ended_at TIMESTAMP,
                outcome VARCHAR NOT NULL,
                error VARCHAR,
                detail VARCHAR
            )""",
        ],
    ),
    (
        2,
        "API keys: expiry and revocation",
        [
            "ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMP",
            "ALTER TABLE api_keys ADD COLUMN revoked_at TIMESTAMP",
        ],
    ),
    (
        3,
        "deduplicate events per campaign: event_key = hash(campaign_id, event_id)",
        [
            # Keys are derived data (the log itself is untouched); the canary is dropped so
            # the open that runs this migration records the new key function's canary.
            "UPDATE events SET event_key = hash(campaign_id, event_id)",
            "DELETE FROM store_meta WHERE key = 'event_key_canary'",
        ],
    ),
    (
        4,
        "variant reviews: who approved or rejected a variant, and when",
        [
            """CREATE TABLE variant_reviews (
                campaign_id VARCHAR NOT NULL,
                variant_id VARCHAR NOT NULL,
                action VARCHAR NOT NULL,
                reviewer VARCHAR NOT NULL,
                note VARCHAR,
                reviewed_at TIMESTAMP NOT NULL
            )""",
        ],
    ),
    (
        5,
        "variant targeting: the audience segments a variant is served to",
        [
            # A JSON list of segment names, like parent_ids; NULL (every older row) and an
            # empty list both mean "every segment", so stored variants keep serving everyone.
            "ALTER TABLE variants ADD COLUMN segments VARCHAR",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
