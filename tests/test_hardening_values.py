"""Hardening against one tenant's data, against a real server on 127.0.0.1.

- Event values have a documented range (``MAX_EVENT_VALUE``); a row outside it is rejected
  on its own, naming the field, and the aggregates stay finite.
- A store that already holds bad rows (written by hand here, as an older version could have)
  still opens: ``adloop campaign list`` and ``adloop serve`` start, the campaign serves and is
  flagged in ``data_quality``.
- One campaign whose snapshot cannot be built never stops the refresh of the others; it keeps
  serving (uniform here) and is reported in ``data_quality`` and ``/metrics``.
- Ownership is deny-by-default: a campaign the serving engine does not serve is never taken
  for the caller's own.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest
from test_service_support import ThreadServer, free_port, start_serve_process

from adloop.optimizer import Engine, EngineConfig
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app
from adloop.storage import MAX_EVENT_VALUE, Store

BRIEF = {"product": "bespoke engagement rings", "brand": "Aurelle", "language": "en"}
TEXTS = ["Aurelle rings made for you", "Aurelle bespoke rings in gold"]


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _event(event_id: str, kind: str, campaign_id: str, variant_id: str, **extra) -> dict:
    """One event as ``POST /v1/events`` takes it, stamped now."""
    return {
        "event_id": event_id,
        "type": kind,
        "campaign_id": campaign_id,
        "variant_id": variant_id,
        "ts": _now(),
        **extra,
    }


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _prepared_store(db: Path, objectives: list[str]) -> tuple[list[dict], dict[str, str]]:
    """Campaigns of tenant ``acme`` (one per objective, oldest first) and API keys, then closed."""
    with Engine(db, config=EngineConfig(background=False), seed=3) as engine:
        views = [
            engine.create_campaign(
                {**BRIEF, "variants": [{"text": t} for t in TEXTS]},
                tenant="acme",
                objective=objective,
            )
            for objective in objectives
        ]
        keys = {
            "acme": create_key(engine.store, tenant="acme"),
            "root": create_key(engine.store, tenant="ops", admin=True),
        }
    return views, keys


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (no timing is asserted: the deadline is generous)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- 1. values: a documented range, checked per row ----------------------------------------


def test_event_values_out_of_range_are_rejected_per_row_and_sums_stay_finite(tmp_path):
    db = tmp_path / "adloop.duckdb"
    (view,), keys = _prepared_store(db, ["value"])
    campaign_id = view["campaign_id"]
    variant_id = view["variants"][0]["variant_id"]

    def conversion(event_id: str, value: float) -> dict:
        return _event(event_id, "conversion", campaign_id, variant_id, value=value)

    engine = Engine(db)
    with (
        ThreadServer(create_app(engine, close_engine=True)) as server,
        _client(server.url, keys["acme"]) as http,
    ):
        # The attack: finite values whose sum overflows float64.
        huge = [conversion("huge-1", 1e308), conversion("huge-2", 1e308)]
        edge = [conversion("at-max", MAX_EVENT_VALUE), conversion("over", 1e300)]
        posted = http.post("/v1/events", json={"events": huge + edge})
        assert posted.status_code == 200, posted.text
        result = posted.json()
        assert result["accepted"] == 1 and result["rejected"] == 3
        assert [e["row"] for e in result["errors"]] == [0, 1, 3]
        for error in result["errors"]:
            assert error["field"] == "value"
            assert "maximum" in error["reason"] and "MAX_EVENT_VALUE" in error["reason"]

        answer = http.get(f"/v1/campaigns/{campaign_id}")
        assert answer.status_code == 200, answer.text
        campaign = answer.json()
        by_id = {v["variant_id"]: v for v in campaign["variants"]}
        assert by_id[variant_id]["value"] == pytest.approx(MAX_EVENT_VALUE)
        assert all(math.isfinite(v["posterior_mean"]) for v in campaign["variants"])
        assert campaign["data_quality"]["values_out_of_range"] == 0
        assert campaign["data_quality"]["refresh_failure"] is None
        chosen = http.post(f"/v1/campaigns/{campaign_id}/choose", json={})
        assert chosen.status_code == 200, chosen.text


# -- 1. a store that already holds bad rows -------------------------------------------------


def _insert_bad_rows(db: Path, campaign_id: str, variant_id: str) -> int:
    """Write conversions with out-of-range values straight into the log and its aggregates."""
    values = ["1e308", "1e308", "'inf'::DOUBLE", "'nan'::DOUBLE", "-5.0"]
    with duckdb.connect(str(db)) as connection:
        for i, value in enumerate(values):
            event_id = f"bad-{i}"
            connection.execute(
                f"""INSERT INTO events (event_key, event_id, type, campaign_id, variant_id,
                                       ts, value, batch_id)
                    VALUES (hash($c, $e), $e, 'conversion', $c, $v,
                            TIMESTAMP '2026-01-01 10:00:00', {value}, 0)""",
                {"c": campaign_id, "e": event_id, "v": variant_id},
            )
            connection.execute(
                f"""INSERT INTO event_aggregates VALUES
                    ($c, $v, NULL, 'conversion', TIMESTAMP '2026-01-01 10:00:00', 1, {value}, 0)""",
                {"c": campaign_id, "v": variant_id},
            )
        # A counter no real traffic reaches, as a corrupt row could hold.
        connection.execute(
            """INSERT INTO event_aggregates VALUES
               ($c, $v, NULL, 'impression', TIMESTAMP '2026-01-01 10:00:00',
                9000000000000000000, 0, 'nan'::DOUBLE)""",
            {"c": campaign_id, "v": variant_id},
        )
        connection.execute(
            """INSERT INTO event_aggregates VALUES
               ($c, $v, NULL, 'impression', TIMESTAMP '2026-01-01 10:00:00',
                9000000000000000000, 0, 0)""",
            {"c": campaign_id, "v": variant_id},
        )
    return len(values)


def test_store_holding_bad_rows_still_opens_lists_and_serves(tmp_path):
    db = tmp_path / "adloop.duckdb"
    (bad, good), keys = _prepared_store(db, ["value", "ctr"])
    n_bad = _insert_bad_rows(db, bad["campaign_id"], bad["variants"][0]["variant_id"])

    listed = subprocess.run(
        [sys.executable, "-m", "adloop.cli", "campaign", "list", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert {row["campaign_id"] for row in json.loads(listed.stdout)["campaigns"]} == {
        bad["campaign_id"],
        good["campaign_id"],
    }

    port = free_port()
    process = start_serve_process(db, port)  # fails the test if it does not come up
    try:
        with _client(f"http://127.0.0.1:{port}", keys["acme"]) as http:
            listing = http.get("/v1/campaigns")
            assert listing.status_code == 200, listing.text
            answer = http.get(f"/v1/campaigns/{bad['campaign_id']}")
            assert answer.status_code == 200, answer.text
            campaign = answer.json()
            assert campaign["data_quality"]["values_out_of_range"] == n_bad
            for variant in campaign["variants"]:
                assert math.isfinite(variant["value"]) and variant["value"] >= 0
                assert math.isfinite(variant["posterior_mean"])
            for view in (bad, good):
                chosen = http.post(f"/v1/campaigns/{view['campaign_id']}/choose", json={})
                assert chosen.status_code == 200, chosen.text
    finally:
        process.terminate()
        process.communicate(timeout=60)


# -- 1./3. refresh: one campaign's failure is isolated --------------------------------------


def test_one_campaigns_failing_refresh_never_stops_the_others(tmp_path):
    db = tmp_path / "adloop.duckdb"
    # ``broken`` is older, so every refresh pass meets it before ``healthy``.
    (broken, healthy), keys = _prepared_store(db, ["ctr", "ctr"])
    broken_id, healthy_id = broken["campaign_id"], healthy["campaign_id"]
    with duckdb.connect(str(db)) as connection:  # a row no policy can build a snapshot from
        connection.execute(
            "UPDATE campaigns SET objective = 'no-such-objective' WHERE campaign_id = ?",
            [broken_id],
        )

    config = EngineConfig(refresh_interval=0.1, flush_interval=0.05)
    engine = Engine(db, config=config)
    with (
        ThreadServer(create_app(engine, close_engine=True)) as server,
        _client(server.url, keys["acme"]) as http,
        _client(server.url, keys["root"]) as ops,
    ):
        before = http.get(f"/v1/campaigns/{healthy_id}").json()["snapshot"]

        # The broken campaign serves a uniform split and says why.
        chosen = http.post(f"/v1/campaigns/{broken_id}/choose", json={})
        assert chosen.status_code == 200, chosen.text
        assert chosen.json()["probability"] == pytest.approx(0.5)
        answer = http.get(f"/v1/campaigns/{broken_id}")
        assert answer.status_code == 200, answer.text
        failure = answer.json()["data_quality"]["refresh_failure"]
        assert failure["serving"] == "uniform"
        assert "no-such-objective" in failure["error"]

        # Traffic on both: the healthy campaign learns that its first variant wins.
        winner = healthy["variants"][0]["variant_id"]
        many = http.post(f"/v1/campaigns/{healthy_id}/choose", json={"n": 400}).json()
        clicks = [
            _event(f"click-{i}", "click", healthy_id, winner, decision_id=decision["decision_id"])
            for i, decision in enumerate(many["decisions"])
            if decision["variant_id"] == winner
        ]
        assert http.post("/v1/events", json={"events": clicks}).status_code == 200

        def both_refreshed() -> bool:
            http.post(f"/v1/campaigns/{broken_id}/choose", json={})  # keeps it due
            broken_view = http.get(f"/v1/campaigns/{broken_id}").json()
            healthy_view = http.get(f"/v1/campaigns/{healthy_id}").json()
            retried = broken_view["data_quality"]["refresh_failure"]["failures"] >= 3
            return retried and healthy_view["snapshot"]["built_at"] != before["built_at"]

        _wait_for(both_refreshed, "the loop to retry the broken campaign and pass it")
        after = http.get(f"/v1/campaigns/{healthy_id}").json()
        assert after["snapshot"]["weights"][winner] > before["weights"][winner]
        assert after["data_quality"]["refresh_failure"] is None

        metrics = ops.get("/metrics")
        assert metrics.status_code == 200
        assert f'adloop_snapshot_refresh_failing{{campaign_id="{broken_id}"}}' in metrics.text
        assert f'campaign_id="{healthy_id}"' not in _failing_lines(metrics.text)


def _failing_lines(text: str) -> str:
    return "\n".join(
        line for line in text.splitlines() if line.startswith("adloop_snapshot_refresh_failing")
    )


# -- 10. ownership is deny-by-default --------------------------------------------------------


def test_a_campaign_unknown_to_the_serving_engine_is_nobodys_own(tmp_path):
    store = Store(tmp_path / "adloop.duckdb")
    keys = {
        "acme": create_key(store, tenant="acme"),
        "globex": create_key(store, tenant="globex"),
    }
    served = Engine(store, config=EngineConfig(refresh_interval=0.1))
    try:
        with ThreadServer(create_app(served, close_engine=True)) as server:
            # Another engine on the same store (a CLI, a job) creates a campaign the serving
            # engine has never loaded: it must not be writable through the service.
            with Engine(store, config=EngineConfig(background=False), seed=5) as other:
                foreign = other.create_campaign(
                    {**BRIEF, "variants": [{"text": t} for t in TEXTS]}, tenant="globex"
                )
            foreign_id = foreign["campaign_id"]
            variant_id = foreign["variants"][0]["variant_id"]

            def click(event_id: str, campaign_id: str) -> dict:
                return _event(event_id, "click", campaign_id, variant_id)

            for tenant in ("acme", "globex"):
                with _client(server.url, keys[tenant]) as http:
                    events = [click(f"{tenant}-1", foreign_id), click(f"{tenant}-2", "c_nope")]
                    posted = http.post("/v1/events", json={"events": events})
                    assert posted.status_code == 200, posted.text
                    result = posted.json()
                    assert result["accepted"] == 0 and result["rejected"] == 2
                    existing, missing = result["errors"]
                    # Same answer as for a campaign that does not exist: nothing leaks.
                    assert existing["field"] == missing["field"] == "campaign_id"
                    assert existing["reason"] == missing["reason"]
                    chosen = http.post(f"/v1/campaigns/{foreign_id}/choose", json={})
                    assert chosen.status_code == 404, chosen.text
            stats = store.arm_stats(foreign_id)
            assert stats["clicks"].sum() == 0
    finally:
        store.close()
