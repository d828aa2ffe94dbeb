"""The dashboard without a browser: wording, the stopping rule's state, sign-in, tenancy,
actions and CSV exports, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from test_service_support import ThreadServer

from adloop.optimizer import Engine, EngineConfig
from adloop.optimizer.auth import create_key
from adloop.optimizer.dashboard import COOKIE
from adloop.optimizer.dashboard_data import stopping_state
from adloop.optimizer.dashboard_words import (
    duration,
    percent,
    probability,
    quality_findings,
    rate_with_interval,
    variant_label,
)
from adloop.optimizer.service import create_app

BRIEF = {"product": "rings", "language": "en"}


def test_numbers_read_as_percentages_and_probabilities_never_as_zero() -> None:
    assert percent(0.02153) == "2.15 %"
    assert percent(0.5) == "50.0 %"
    assert percent(0.00042) == "0.042 %"
    assert rate_with_interval(0.0215, 0.019, 0.024) == "2.15 % (1.90–2.40 %)"
    assert probability(0.0) == "< 0.1 %" and probability(0.9995) == "> 99.9 %"
    assert probability(0.998) == "99.8 %"
    assert [variant_label(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
    assert duration(2 * 86400 + 100) == "about 2 days" and duration(90) == "about 2 minutes"


def test_data_quality_findings_say_what_is_wrong_and_what_to_do() -> None:
    clean = quality_findings({"srm": {"flagged": False, "p_value": 0.4}, "orphan_clicks": 0})
    assert all(f.level == "ok" for f in clean)
    assert {f.title for f in clean} >= {"No orphan clicks", "No duplicates"}
    bad = quality_findings(
        {
            "srm": {"flagged": True, "p_value": 1e-9},
            "orphan_clicks": 3,
            "duplicate_deliveries": 1,
            "clicks_exceed_impressions": ["v_1"],
        },
        {"v_1": "A"},
    )
    assert bad[0].level == "bad" and "sample ratio mismatch" in bad[0].title
    assert "exactly once" in bad[0].action
    titles = [f.title for f in bad]
    assert "3 orphan clicks or conversions" in titles
    assert "1 duplicate delivery" in titles
    assert "More clicks than impressions: A" in titles
    assert all(f.action for f in bad if f.level in ("bad", "warn"))


def _view(impressions: list[int], clicks: list[int], winner: str | None = None) -> dict:
    from adloop.bandits import ArmCounts, posterior_summary

    ids = [f"v_{i}" for i in range(len(impressions))]
    summary = posterior_summary(ArmCounts(ids, np.array(impressions), np.array(clicks)), "ctr")
    return {
        "campaign_id": "c_1",
        "objective": "ctr",
        "winner": winner,
        "variants": [
            {"variant_id": v, "status": "winner" if v == winner else "active",
             "impressions": n, "clicks": k, "conversions": 0, "value": 0.0,
             "posterior_mean": float(summary["mean"][i]),
             "interval_95": [float(summary["low"][i]), float(summary["high"][i])]}
            for i, (v, n, k) in enumerate(zip(ids, impressions, clicks, strict=True))
        ],
    }  # fmt: skip


def test_the_stopping_rule_is_described_in_words() -> None:
    config = EngineConfig()
    none = stopping_state(_view([0, 0], [0, 0]), config)
    assert none["state"] == "no_traffic" and "No impressions yet" in none["sentence"]
    running = stopping_state(
        _view([4000, 4000], [80, 100]), config, recent_impressions=8000, recent_seconds=86400
    )
    assert running["state"] == "running" and running["leader"] == "v_1"
    assert running["sentence"].startswith("Variant B leads with probability best")
    assert "of its value is still at stake" in running["sentence"]
    assert "to a decision at today's traffic" in running["sentence"]
    assert running["eta_seconds"] > 0
    # the same data gives the same numbers: a polled page does not flicker
    again = stopping_state(
        _view([4000, 4000], [80, 100]), config, recent_impressions=8000, recent_seconds=86400
    )
    assert again["probability_best"] == running["probability_best"]
    ready = stopping_state(_view([20000, 20000], [300, 600]), config)
    assert ready["state"] == "ready" and "declare it the winner now" in ready["sentence"]
    decided = stopping_state(
        _view([20000, 20000], [300, 600], winner="v_1"),
        config,
        decided_at=datetime(2026, 5, 1, 9, 30),
    )
    assert decided["sentence"].startswith("Variant B won on 2026-05-01 09:30")
    alike = stopping_state(_view([5000, 5000], [100, 100]), config, recent_impressions=10)
    assert "no decision in sight" in alike["sentence"]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    from adloop.generators import GeneratorPool

    engine = Engine(
        tmp_path_factory.mktemp("ui") / "a.duckdb", pool=GeneratorPool(["template"]), seed=5
    )
    keys = {"acme": create_key(engine.store, tenant="acme"),
            "globex": create_key(engine.store, tenant="globex")}  # fmt: skip
    view = engine.create_campaign(
        BRIEF,
        tenant="acme",
        name="Rings",
        variants=[{"text": "Rings made for you"}, {"text": "Bespoke rings in gold"}],
    )
    campaign_id = view["campaign_id"]
    pending = engine.add_variants(campaign_id, n=1, tenant="acme")[0]["variant_id"]
    choices = engine.choose_many(campaign_id, 500, segment="mobile")
    engine.flush()
    now = datetime.now(UTC).replace(tzinfo=None)
    engine.record(
        [{"event_id": f"e{i}", "type": "click", "campaign_id": campaign_id,
          "variant_id": c.variant_id, "decision_id": c.decision_id, "ts": now}
         for i, c in enumerate(choices[:40])],
        tenant="acme",
    )  # fmt: skip
    with ThreadServer(create_app(engine, close_engine=True)) as server:
        yield {"url": server.url, "keys": keys, "campaign_id": campaign_id, "pending": pending}


@contextmanager
def _browser(served: dict, tenant: str | None = "acme") -> Iterator[httpx.Client]:
    """A client holding the dashboard's cookie, as a browser would after signing in."""
    with httpx.Client(base_url=served["url"], timeout=30) as client:
        if tenant:
            response = client.post("/ui/login", data={"key": served["keys"][tenant], "next": "/ui"})
            assert response.status_code == 303 and response.headers["location"] == "/ui"
            cookie = response.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        yield client


def test_no_key_no_page(served) -> None:
    with _browser(served, None) as client:
        page = client.get(f"/ui/campaigns/{served['campaign_id']}")
        assert page.status_code == 303
        assert page.headers["location"] == f"/ui/login?next=/ui/campaigns/{served['campaign_id']}"
        fragment = client.get("/ui/fragments/campaigns", headers={"HX-Request": "true"})
        assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/ui/login"
        export = client.get(f"/ui/campaigns/{served['campaign_id']}/export/variants.csv")
        assert export.status_code == 303
        wrong = client.post("/ui/login", data={"key": "adk_wrong"})
        assert wrong.status_code == 401 and "Unknown, revoked or expired key" in wrong.text
        client.cookies.set(COOKIE, "adk_forged", path="/ui")
        assert client.get("/ui").status_code == 303
        # sign-in never redirects off the dashboard
        response = client.post(
            "/ui/login", data={"key": served["keys"]["acme"], "next": "https://evil.test/"}
        )
        assert response.headers["location"] == "/ui"


def test_pages_are_scoped_to_the_tenant(served) -> None:
    with _browser(served, "globex") as client:
        listing = client.get("/ui")
        assert listing.status_code == 200 and "Rings" not in listing.text
        assert client.get(f"/ui/campaigns/{served['campaign_id']}").status_code == 404
        csv_export = client.get(f"/ui/campaigns/{served['campaign_id']}/export/variants.csv")
        assert csv_export.status_code == 404
        approve = client.post(
            f"/ui/campaigns/{served['campaign_id']}/variants/{served['pending']}/approve",
            headers={"Origin": served["url"]},
        )
        assert approve.status_code == 404
    with _browser(served, "acme") as client:
        page = client.get(f"/ui/campaigns/{served['campaign_id']}")
        assert page.status_code == 200 and "Rings made for you" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "cdn" not in page.text.lower()


def test_csv_export_equals_the_api(served) -> None:
    with _browser(served) as client:
        exported = client.get(f"/ui/campaigns/{served['campaign_id']}/export/variants.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        api = httpx.get(
            f"{served['url']}/v1/campaigns/{served['campaign_id']}",
            headers={"Authorization": f"Bearer {served['keys']['acme']}"},
        ).json()
        assert [(r["variant_id"], int(r["impressions"]), int(r["clicks"])) for r in rows] == [
            (v["variant_id"], v["impressions"], v["clicks"]) for v in api["variants"]
        ]
        for table in ("traffic", "queue", "quality", "segments", "insights", "models"):
            response = client.get(f"/ui/campaigns/{served['campaign_id']}/export/{table}.csv")
            assert response.status_code == 200 and response.text.count("\n") >= 1, table
        traffic = list(csv.DictReader(io.StringIO(
            client.get(f"/ui/campaigns/{served['campaign_id']}/export/traffic.csv").text
        )))  # fmt: skip
        assert sum(int(r["impressions"]) for r in traffic) == sum(
            v["impressions"] for v in api["variants"]
        )
        listing = list(csv.DictReader(io.StringIO(client.get("/ui/export/campaigns.csv").text)))
        assert [r["campaign_id"] for r in listing] == [served["campaign_id"]]
        assert client.get(f"/ui/campaigns/{served['campaign_id']}/export/nope.csv").status_code == (
            404
        )


def test_actions_work_as_plain_forms_and_refuse_other_sites(served) -> None:
    campaign_id, pending = served["campaign_id"], served["pending"]
    base = f"/ui/campaigns/{campaign_id}"
    with _browser(served) as client:
        foreign = client.post(
            f"{base}/variants/{pending}/approve", headers={"Origin": "https://evil.test"}
        )
        assert foreign.status_code == 403
        origin = {"Origin": served["url"]}
        approved = client.post(f"{base}/variants/{pending}/approve", headers=origin)
        assert approved.status_code == 303 and "Approved" in approved.headers["location"]
        again = client.post(f"{base}/variants/{pending}/approve", headers=origin)
        assert again.status_code == 303 and "Not%20done" in again.headers["location"]
        added = client.post(
            f"{base}/variants",
            data={"texts": "Handmade rings for every story\nGold rings designed with you\n"},
            headers=origin,
        )
        assert added.status_code == 303 and "Added%202%20variants" in added.headers["location"]
        fragment = client.get(f"{base}/live")
        assert (
            "Handmade rings for every story" in fragment.text
            and 'hx-trigger="every 2s"' in fragment.text
        )
        view = httpx.get(
            f"{served['url']}/v1/campaigns/{campaign_id}",
            headers={"Authorization": f"Bearer {served['keys']['acme']}"},
        ).json()
        by_text = {v["text"]: v for v in view["variants"]}
        assert {v["variant_id"]: v["status"] for v in view["variants"]}[pending] == "active"
        retired_id = by_text["Gold rings designed with you"]["variant_id"]
        retired = client.post(
            f"{base}/variants/{retired_id}/retire", headers={**origin, "HX-Request": "true"}
        )
        assert retired.status_code == 200 and retired.text.startswith('<div id="live"')
        assert f"Retired {retired_id}" in retired.text
        review = [r for r in httpx.get(
            f"{served['url']}/v1/campaigns/{campaign_id}",
            headers={"Authorization": f"Bearer {served['keys']['acme']}"},
        ).json()["reviews"] if r["variant_id"] == pending]  # fmt: skip
        assert review[0]["by"].startswith("acme (key ") and "dashboard" in review[0]["by"]


def test_static_files_are_served_by_the_service(served) -> None:
    with httpx.Client(base_url=served["url"]) as client:
        script = client.get("/ui/static/htmx.min.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith(
            "text/javascript"
        )
        assert "htmx" in script.text[:200]
        assert client.get("/ui/static/dashboard.css").status_code == 200
        assert client.get("/ui/static/..%2Fdashboard.py").status_code == 404
        assert "/ui" not in str(client.get("/openapi.json").json()["paths"])
