"""The PostgreSQL backend's tables: the DuckDB schema's tables, columns and order, plus keys.

Same names, same columns in the same order as the DuckDB file at ``schema.LATEST_VERSION``, so
the store's parts run their statements on either. Where PostgreSQL differs (on purpose):

- identifiers are PRIMARY KEYs (campaigns, variants, model versions, API key hashes, settings),
  so two processes racing to create the same record cannot both succeed;
- ``events`` has the PRIMARY KEY ``(campaign_id, event_id)``: deduplication is an
  ``INSERT … ON CONFLICT DO NOTHING``, exact across processes (DuckDB's file has one writer and
  deduplicates by its 64-bit keys instead, so its log carries ``event_key``; this one does not);
- tables that DuckDB orders by ``rowid`` (reviews, promotions, job runs) carry an identity column
  named ``rowid``, last, so ``INSERT … VALUES`` without it keeps working;
- batch ids come from the sequence ``ingest_batch_id``.

The tables live in the connection's current schema (the first of its ``search_path``), so one
database can hold several stores, and beside ``adloop.scale``'s ``adloop_``-prefixed tables.
"""

from __future__ import annotations

from adloop.storage.schema import LATEST_VERSION

#: The DuckDB schema version whose tables these mirror.
PG_SCHEMA_VERSION = LATEST_VERSION

#: Serialises schema creation across processes (any fixed 64-bit number).
SCHEMA_LOCK = 7466831

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL, description TEXT, applied_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT, brief TEXT,
    objective TEXT NOT NULL, status TEXT NOT NULL, settings TEXT, winner_variant_id TEXT,
    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS variants (
    variant_id TEXT PRIMARY KEY, campaign_id TEXT NOT NULL, headline TEXT, description TEXT,
    text TEXT, language TEXT, generator TEXT, model_version TEXT, parent_ids TEXT,
    provenance TEXT, status TEXT NOT NULL, created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL, retired_at TIMESTAMP, segments TEXT);
CREATE INDEX IF NOT EXISTS variants_campaign ON variants (campaign_id);
CREATE TABLE IF NOT EXISTS variant_reviews (
    campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL, action TEXT NOT NULL,
    reviewer TEXT NOT NULL, note TEXT, reviewed_at TIMESTAMP NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('impression', 'click', 'conversion')),
    campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL, decision_id TEXT, segment TEXT,
    ts TIMESTAMP NOT NULL, value DOUBLE PRECISION NOT NULL, batch_id BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, event_id));
CREATE TABLE IF NOT EXISTS event_aggregates (
    campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL, segment TEXT, type TEXT NOT NULL,
    hour TIMESTAMP NOT NULL, n BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL,
    ts_offset_sum DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS event_aggregates_campaign ON event_aggregates (campaign_id, hour);
CREATE TABLE IF NOT EXISTS ingest_log (
    batch_id BIGINT NOT NULL, source TEXT NOT NULL, received_at TIMESTAMP NOT NULL,
    campaign_id TEXT, accepted BIGINT NOT NULL, duplicates BIGINT NOT NULL,
    rejected BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS ingest_log_campaign ON ingest_log (campaign_id);
CREATE SEQUENCE IF NOT EXISTS ingest_batch_id;
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT NOT NULL, campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL,
    segment TEXT, probability DOUBLE PRECISION NOT NULL, ts TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS decision_aggregates (
    campaign_id TEXT NOT NULL, variant_id TEXT NOT NULL, n BIGINT NOT NULL,
    probability_sum DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS decision_aggregates_campaign ON decision_aggregates (campaign_id);
CREATE TABLE IF NOT EXISTS model_versions (
    version TEXT PRIMARY KEY, path TEXT, base TEXT, parent TEXT, data_hash TEXT, metrics TEXT,
    created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS model_promotions (
    version TEXT NOT NULL, action TEXT NOT NULL, promoted_at TIMESTAMP NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, admin BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL, expires_at TIMESTAMP, revoked_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS job_runs (
    job TEXT NOT NULL, started_at TIMESTAMP NOT NULL, ended_at TIMESTAMP,
    outcome TEXT NOT NULL, error TEXT, detail TEXT,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY);
"""
