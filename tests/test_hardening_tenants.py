"""Hardening, class 2: one tenant can neither drop, probe nor pre-claim another tenant's data.

Deduplication is scoped to the campaign (``hash(campaign_id, event_id)`` keys), plain decision
ids come from ``secrets`` and idempotent ones are a MAC under the store's secret. The first
tests run two tenants against a real uvicorn server; the rest pin each mechanism down in the
store and the engine, including the migration of a schema-1 file.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest
from test_service import BRIEF, TEXTS
from test_service_support import ThreadServer

from adloop.optimizer import Engine
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app
from adloop.storage import Store
from adloop.storage.schema import LATEST_VERSION, MIGRATIONS

NOW = datetime(2026, 3, 1, 12, 0)


# -- two tenants against a real server ----------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from adloop.generators import GeneratorPool

    db = tmp_path_factory.mktemp("tenants") / "adloop.duckdb"
    # No seed: exactly how `adloop serve` builds its engine.
    engine = Engine(db, pool=GeneratorPool(["template", "recombine"]))
    keys = {tenant: create_key(engine.store, tenant=tenant) for tenant in ("acme", "globex")}
    app = create_app(engine, close_engine=True)
    with ThreadServer(app) as server:
        yield server.url, keys


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _campaign(http: httpx.Client) -> tuple[str, list[str]]:
    body = {"brief": BRIEF, "variants": [{"text": text} for text in TEXTS]}
    response = http.post("/v1/campaigns", json=body)
    assert response.status_code == 201, response.text
    view = response.json()
    return view["campaign_id"], [v["variant_id"] for v in view["variants"]]


def _clicks(campaign_id: str, variant_id: str, event_ids: list[str]) -> list[dict]:
    return [
        {
            "event_id": event_id,
            "type": "click",
            "campaign_id": campaign_id,
            "variant_id": variant_id,
            "ts": _now(),
        }
        for event_id in event_ids
    ]


def _totals(http: httpx.Client, campaign_id: str) -> dict[str, int]:
    view = http.get(f"/v1/campaigns/{campaign_id}").json()
    return {
        "impressions": sum(v["impressions"] for v in view["variants"]),
        "clicks": sum(v["clicks"] for v in view["variants"]),
        "duplicate_deliveries": view["data_quality"]["duplicate_deliveries"],
    }


def test_a_tenant_cannot_drop_or_probe_another_tenants_event_ids(service) -> None:
    url, keys = service
    with _client(url, keys["acme"]) as acme, _client(url, keys["globex"]) as globex:
        acme_campaign, acme_variants = _campaign(acme)
        globex_campaign, globex_variants = _campaign(globex)
        ids = [f"click-{i}" for i in range(10)]

        # globex posts acme's (future) event ids first, in its own campaign...
        first = globex.post(
            "/v1/events", json={"events": _clicks(globex_campaign, globex_variants[0], ids)}
        )
        assert first.json()["accepted"] == 10
        # ...and naming acme's campaign, which it is told does not exist.
        aimed = globex.post(
            "/v1/events", json={"events": _clicks(acme_campaign, acme_variants[0], ids)}
        )
        assert aimed.json()["accepted"] == 0 and aimed.json()["rejected"] == 10
        assert {e["reason"] for e in aimed.json()["errors"]} == {"unknown campaign"}

        # acme's events are all new to acme: none is dropped as a duplicate.
        mine = acme.post(
            "/v1/events", json={"events": _clicks(acme_campaign, acme_variants[0], ids)}
        )
        assert mine.json() == {"accepted": 10, "duplicates": 0, "rejected": 0, "errors": []}

        # Replays count as duplicates only for the tenant whose campaign holds the ids.
        replay = globex.post(
            "/v1/events", json={"events": _clicks(globex_campaign, globex_variants[0], ids)}
        )
        assert replay.json()["duplicates"] == 10 and replay.json()["accepted"] == 0
        # The duplicates count reveals nothing of acme's ids: ids only acme has used are new
        # to globex, exactly like ids nobody has used.
        acme_only = [f"acme-private-{i}" for i in range(5)]
        acme.post(
            "/v1/events", json={"events": _clicks(acme_campaign, acme_variants[1], acme_only)}
        )
        unused = [f"never-used-{i}" for i in range(5)]
        probe = globex.post(
            "/v1/events",
            json={"events": _clicks(globex_campaign, globex_variants[1], acme_only + unused)},
        )
        assert probe.json() == {"accepted": 10, "duplicates": 0, "rejected": 0, "errors": []}

        assert _totals(acme, acme_campaign) == {
            "impressions": 0,
            "clicks": 15,
            "duplicate_deliveries": 0,
        }
        assert _totals(globex, globex_campaign) == {
            "impressions": 0,
            "clicks": 20,
            "duplicate_deliveries": 10,
        }


def _untemper(y: int) -> int:
    """The Mersenne Twister state word behind one 32-bit output."""
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    x = y
    for _ in range(5):
        x = y ^ ((x << 7) & 0x9D2C5680)
    z = x
    for _ in range(3):
        z = x ^ (z >> 11)
    return z & 0xFFFFFFFF


def _predict_next_id(observed: list[str]) -> str:
    """The next decision id, were ids ``getrandbits(64)`` of a ``random.Random`` (as before)."""
    words: list[int] = []
    for decision_id in observed:
        value = int(decision_id[2:], 16)
        words += [value & 0xFFFFFFFF, value >> 32]  # getrandbits(64): low word drawn first
    state = [_untemper(word) for word in words[-624:]]
    twister = random.Random()
    twister.setstate((3, (*state, 624), None))
    return f"d_{twister.getrandbits(64):016x}"


def test_a_tenant_cannot_predict_or_preclaim_another_tenants_decisions(service) -> None:
    url, keys = service
    with _client(url, keys["acme"]) as acme, _client(url, keys["globex"]) as globex:
        acme_campaign, acme_variants = _campaign(acme)
        globex_campaign, globex_variants = _campaign(globex)

        # Plain choices: globex sees 312 consecutive ids of its own (624 words of 32 bits,
        # enough to clone a Mersenne Twister) and predicts the next one, acme's.
        seen = globex.post(f"/v1/campaigns/{globex_campaign}/choose", json={"n": 312}).json()
        predicted = _predict_next_id([d["decision_id"] for d in seen["decisions"]])

        # Idempotent choices: the id derived, as before, from (campaign_id, request_id) alone.
        digest = hashlib.blake2b(f"{acme_campaign}\x00r-1".encode(), digest_size=16).digest()
        derived = "d_" + digest[8:].hex()

        # globex pre-claims both ids as impression event ids (in its own campaign, the only
        # one it may write to), then reuses acme's request id on its own campaign.
        claims = [
            {
                "event_id": decision_id,
                "type": "impression",
                "campaign_id": globex_campaign,
                "variant_id": globex_variants[0],
                "decision_id": decision_id,
                "ts": _now(),
            }
            for decision_id in (predicted, derived)
        ]
        assert globex.post("/v1/events", json={"events": claims}).json()["accepted"] == 2
        theirs = globex.post(f"/v1/campaigns/{globex_campaign}/choose", json={"request_id": "r-1"})

        plain = acme.post(f"/v1/campaigns/{acme_campaign}/choose", json={}).json()
        keyed = acme.post(f"/v1/campaigns/{acme_campaign}/choose", json={"request_id": "r-1"})
        again = acme.post(f"/v1/campaigns/{acme_campaign}/choose", json={"request_id": "r-1"})
        assert plain["decision_id"] != predicted
        assert keyed.json()["decision_id"] != derived
        assert keyed.json()["decision_id"] != theirs.json()["decision_id"]
        assert again.json() == keyed.json()  # idempotence is kept
        assert plain["variant_id"] in acme_variants

        # Each of acme's decisions logged its impression; nothing of globex's counted there.
        assert _totals(acme, acme_campaign)["impressions"] == 2
        assert _totals(globex, globex_campaign)["impressions"] == 312 + 2 + 1


# -- the store: deduplication per campaign -------------------------------------------------


def _open(path: Path) -> Store:
    store = Store(path, clock=lambda: NOW)
    for campaign_id in ("c_a", "c_b"):
        if store.campaign(campaign_id) is None:
            store.insert_campaign(
                {"campaign_id": campaign_id, "tenant": campaign_id, "objective": "ctr"},
                [{"variant_id": _variant(campaign_id), "headline": "Hi"}],
            )
    return store


def _variant(campaign_id: str) -> str:
    return "v" + campaign_id.removeprefix("c")  # variant ids are unique across campaigns


def _events(campaign_id: str, ids: list[str], *, as_text: bool = False) -> pa.Table:
    """Typed rows (the service's fast path) or text timestamps (the SQL staging path)."""
    n = len(ids)
    ts = [NOW - timedelta(minutes=1)] * n
    return pa.table(
        {
            "event_id": pa.array(ids, pa.string()),
            "type": pa.array(["click"] * n, pa.string()),
            "campaign_id": pa.array([campaign_id] * n, pa.string()),
            "variant_id": pa.array([_variant(campaign_id)] * n, pa.string()),
            "ts": pa.array([t.isoformat() for t in ts]) if as_text else pa.array(ts),
        }
    )


@pytest.mark.parametrize("as_text", [False, True], ids=["typed", "text"])
def test_the_same_event_id_in_two_campaigns_is_two_events(db_path: Path, as_text: bool) -> None:
    with _open(db_path) as store:
        ids = [f"e{i}" for i in range(5)]
        assert store.append_events(_events("c_a", ids, as_text=as_text)).accepted == 5
        assert store.append_events(_events("c_b", ids, as_text=as_text)).accepted == 5
        # one batch naming both campaigns: each repeat is a duplicate of its own campaign only
        both = pa.concat_tables(
            [
                _events("c_a", ["e0", "new"], as_text=as_text),
                _events("c_b", ["new"], as_text=as_text),
            ]
        )
        result = store.append_events(both)
        assert (result.accepted, result.duplicates) == (2, 1)
        clicks = {
            campaign_id: int(store.arm_stats(campaign_id)["clicks"].sum())
            for campaign_id in ("c_a", "c_b")
        }
        assert clicks == {"c_a": 6, "c_b": 6}


def test_bulk_import_deduplicates_per_campaign(db_path: Path) -> None:
    # Over 50,000 rows a group is deduplicated in SQL rather than with the key index.
    ids = [f"bulk-{i}" for i in range(60_000)]
    with _open(db_path) as store:
        assert store.append_events(_events("c_a", ids)).accepted == 60_000
        result = store.append_events(pa.concat_tables([_events("c_b", ids), _events("c_a", ids)]))
        assert (result.accepted, result.duplicates) == (60_000, 60_000)
        # small groups (the key index) agree after the bulk import
        small = store.append_events(
            pa.concat_tables([_events("c_a", ids[:3]), _events("c_b", ["x"])])
        )
        assert (small.accepted, small.duplicates) == (1, 3)


def test_schema_1_file_migrates_to_campaign_scoped_keys(db_path: Path) -> None:
    # A file as adloop with schema 1 wrote it: keys were hash(event_id), across campaigns.
    connection = duckdb.connect(str(db_path))
    connection.execute(
        "CREATE TABLE schema_version "
        "(version INTEGER NOT NULL, description VARCHAR, applied_at TIMESTAMP NOT NULL)"
    )
    version, description, statements = MIGRATIONS[0]
    assert version == 1
    for statement in statements:
        connection.execute(statement)
    connection.execute("INSERT INTO schema_version VALUES (1, ?, ?)", [description, NOW])
    (canary,) = connection.execute("SELECT hash('adloop event key canary')::VARCHAR").fetchone()
    connection.execute("INSERT INTO store_meta VALUES ('event_key_canary', ?)", [canary])
    for campaign_id in ("c_a", "c_b"):
        connection.execute(
            "INSERT INTO campaigns VALUES (?, ?, NULL, NULL, 'ctr', 'active', NULL, NULL, ?, ?)",
            [campaign_id, campaign_id, NOW, NOW],
        )
        connection.execute(
            "INSERT INTO variants VALUES (?, ?, 'Hi', NULL, 'Hi', 'en', 'manual', NULL, "
            "NULL, NULL, 'active', ?, ?, NULL)",
            [_variant(campaign_id), campaign_id, NOW, NOW],
        )
    connection.execute(
        """INSERT INTO events
           SELECT hash(event_id), event_id, 'click', 'c_a', 'v_a', NULL, NULL, ?, 0.0, 1
           FROM (SELECT 'old-' || range::VARCHAR AS event_id FROM range(3))""",
        [NOW - timedelta(hours=1)],
    )
    connection.close()

    with _open(db_path) as store:
        # c_b's events with c_a's ids are new (schema 1 called them duplicates)...
        assert store.append_events(_events("c_b", ["old-0", "old-1"])).accepted == 2
        # ...while c_a's stored events are still found, by the recomputed keys.
        replay = store.append_events(_events("c_a", ["old-0", "old-1", "old-2", "new"]))
        assert (replay.accepted, replay.duplicates) == (1, 3)
    connection = duckdb.connect(str(db_path))
    try:
        ((current, stale),) = connection.execute(
            "SELECT max(version), (SELECT count(*) FROM events "
            "WHERE event_key <> hash(campaign_id, event_id)) FROM schema_version"
        ).fetchall()
    finally:
        connection.close()
    assert current == LATEST_VERSION and stale == 0


# -- decision ids ----------------------------------------------------------------------------


def test_decision_id_secret_is_per_store_and_survives_a_restart(tmp_path: Path) -> None:
    with Store(tmp_path / "a.duckdb") as store:
        secret = store.decision_id_secret()
        assert len(secret) == 32 and store.decision_id_secret() == secret
    with Store(tmp_path / "a.duckdb") as store:
        assert store.decision_id_secret() == secret
    with Store(tmp_path / "b.duckdb") as other:
        assert other.decision_id_secret() != secret


def test_idempotent_choices_survive_a_restart(db_path: Path) -> None:
    brief = {**BRIEF, "variants": [{"text": text} for text in TEXTS]}
    with Engine(db_path, clock=lambda: NOW, seed=1) as engine:
        campaign_id = engine.create_campaign(brief)["campaign_id"]
        first = engine.choose(campaign_id, request_id="r-1")
        other = engine.choose(campaign_id, request_id="r-2")
    with Engine(db_path, clock=lambda: NOW, seed=2) as engine:
        # the same decision id (its variant follows the new process's snapshot weights)
        assert engine.choose(campaign_id, request_id="r-1").decision_id == first.decision_id
        assert other.decision_id != first.decision_id
        # the repeat's impression (event id = decision id) is a duplicate, not a third one
        view = engine.campaign(campaign_id)
        assert sum(variant["impressions"] for variant in view["variants"]) == 2


def test_a_seed_never_fixes_decision_ids(tmp_path: Path) -> None:
    brief = {**BRIEF, "variants": [{"text": text} for text in TEXTS]}
    runs = []
    for name in ("a", "b"):
        with Engine(tmp_path / f"{name}.duckdb", clock=lambda: NOW, seed=11) as engine:
            campaign_id = engine.create_campaign(brief)["campaign_id"]
            runs.append([engine.choose(campaign_id) for _ in range(50)])
    # the same seed repeats the choices (test_engine checks that) but not their ids
    assert not {c.decision_id for c in runs[0]} & {c.decision_id for c in runs[1]}
    assert all(c.decision_id.startswith("d_") and len(c.decision_id) == 18 for c in runs[0])
