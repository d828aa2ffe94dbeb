"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A real uvicorn server serves the API and ``/ui``; a simulated campaign posts decisions and
clicks over HTTP from a thread while the browser signs in, watches the counts change without
a reload, approves a pending variant and sees it served, and exports a table to compare with
the API. Screenshots of the main pages go to ``docs/screenshots/`` (linked from the README).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` package
(the ``dev`` extra); Playwright's own browser download is not used. Skipped, saying which is
missing, when either is absent.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_service_support import ThreadServer

from adloop.optimizer import Engine
from adloop.optimizer.auth import create_key
from adloop.optimizer.service import create_app

CHROMIUM = os.environ.get("ADLOOP_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
BRIEF = {"product": "bespoke engagement rings", "brand": "Aurelle", "language": "en",
         "offer": "free design consultation", "call_to_action": "Book now"}  # fmt: skip
TEXTS = ["Rings made for you", "Bespoke rings in gold, designed with you",
         "Your ring, your story: book a free design consultation",
         "Gold rings in 3 styles, made to measure",
         "Why wait? Book now and meet your ring"]  # fmt: skip
TRUE_CTR = [0.02, 0.045, 0.03, 0.035, 0.025]
TIMEOUT_MS = 30_000

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
if not shutil.which(CHROMIUM):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set ADLOOP_CHROMIUM)",
        allow_module_level=True,
    )
expect = playwright_api.expect


class SimulatedTraffic:
    """An ad server in a thread: choose over HTTP, then report clicks at fixed true CTRs."""

    def __init__(self, url: str, key: str, campaign_id: str, true_ctr: dict[str, float]) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.campaign_id = campaign_id
        self.true_ctr = true_ctr
        self.rng = np.random.default_rng(7)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.n_events = 0

    def _run(self) -> None:
        batch = 0
        while not self.stop.is_set():
            batch += 1
            choices = self.http.post(
                f"/v1/campaigns/{self.campaign_id}/choose", json={"n": 40, "segment": "mobile"}
            ).json()["decisions"]
            now = datetime.now(UTC).replace(tzinfo=None).isoformat()
            clicks = [
                {"event_id": f"sim-{batch}-{i}", "type": "click", "campaign_id": self.campaign_id,
                 "variant_id": c["variant_id"], "decision_id": c["decision_id"],
                 "segment": "mobile", "ts": now}
                for i, c in enumerate(choices)
                if self.rng.random() < self.true_ctr.get(c["variant_id"], 0.05)
            ]  # fmt: skip
            if clicks:
                self.http.post("/v1/events", json={"events": clicks}).raise_for_status()
            self.n_events += len(choices)
            self.stop.wait(0.1)

    def __enter__(self) -> SimulatedTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.http.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    from adloop.generators import GeneratorPool

    db = tmp_path_factory.mktemp("dashboard") / "adloop.duckdb"
    engine = Engine(db, pool=GeneratorPool(["template"]), seed=3)
    keys = {"acme": create_key(engine.store, tenant="acme"),
            "globex": create_key(engine.store, tenant="globex")}  # fmt: skip
    view = engine.create_campaign(
        BRIEF, tenant="acme", name="Aurelle rings, spring",
        variants=[{"text": t} for t in TEXTS],
    )  # fmt: skip
    pending = engine.add_variants(view["campaign_id"], n=1, tenant="acme")
    assert pending and pending[0]["status"] == "pending"
    other = engine.create_campaign(
        BRIEF, tenant="globex", name="Globex", variants=[{"text": "Hello"}, {"text": "Hi"}]
    )
    ids = [v["variant_id"] for v in view["variants"]]
    finished = _finished_campaign(engine)
    app = create_app(engine, close_engine=True)
    with ThreadServer(app) as server:
        yield {
            "url": server.url, "keys": keys, "campaign_id": view["campaign_id"],
            "pending": pending[0]["variant_id"], "other_campaign": other["campaign_id"],
            "true_ctr": dict(zip(ids, TRUE_CTR, strict=True)), "finished": finished,
        }  # fmt: skip


def _finished_campaign(engine: Engine) -> str:
    """A campaign of the same tenant whose winner is declared (run through the engine)."""
    view = engine.create_campaign(
        BRIEF, tenant="acme", name="Aurelle rings, winter",
        variants=[{"text": "Winter rings"}, {"text": "Rings for the cold season, made by hand"}],
    )  # fmt: skip
    campaign_id, better = view["campaign_id"], view["variants"][1]["variant_id"]
    rng = np.random.default_rng(11)
    declared = None
    for batch in range(30):  # until the rule declares (a few thousand impressions suffice)
        choices = engine.choose_many(campaign_id, 1000)
        engine.flush()
        engine.record(
            [{"event_id": f"w-{batch}-{i}", "type": "click", "campaign_id": campaign_id,
              "variant_id": c.variant_id, "decision_id": c.decision_id,
              "ts": datetime.now(UTC).replace(tzinfo=None)}
             for i, c in enumerate(choices)
             if rng.random() < (0.06 if c.variant_id == better else 0.02)],
            tenant="acme",
        )  # fmt: skip
        declared = engine.declare_winner(campaign_id, tenant="acme")
        if declared is not None:
            break
    assert declared is not None and declared["variant_id"] == better
    return campaign_id


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def _sign_in(browser, url: str, key: str):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{url}/ui")
    expect(page).to_have_url(f"{url}/ui/login?next=/ui")
    page.fill("#key", key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Campaigns")
    return context, page


def _count(text: str) -> int:
    return int(text.strip().replace(",", ""))


def test_signing_in_needs_a_valid_key(served, browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{served['url']}/ui/campaigns/{served['campaign_id']}")
    expect(page.locator("h1")).to_have_text("Sign in")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "sign-in.png"))
    page.fill("#key", "adk_not-a-key")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("Unknown, revoked or expired key")
    # the key is kept where scripts cannot read it
    page.fill("#key", served["keys"]["acme"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Aurelle rings, spring")  # back where it was going
    assert page.evaluate("document.cookie") == ""
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    context.close()


def test_another_tenants_campaign_is_not_found(served, browser) -> None:
    context, page = _sign_in(browser, served["url"], served["keys"]["globex"])
    expect(page.locator("#campaigns")).to_contain_text("Globex")
    expect(page.locator("#campaigns")).not_to_contain_text("Aurelle")
    response = page.goto(f"{served['url']}/ui/campaigns/{served['campaign_id']}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("404")
    context.close()


def test_live_campaign_review_and_export(served, browser) -> None:
    url, campaign_id = served["url"], served["campaign_id"]
    context, page = _sign_in(browser, url, served["keys"]["acme"])
    with SimulatedTraffic(url, served["keys"]["acme"], campaign_id, served["true_ctr"]):
        page.click(f"#campaigns a[href='/ui/campaigns/{campaign_id}']")
        expect(page.locator("h1")).to_have_text("Aurelle rings, spring")
        page.evaluate("window.notReloaded = true")
        impressions = page.get_by_test_id("impressions")
        first = _count(impressions.inner_text())
        # the counts grow while the page stays the same document (no reload)
        page.wait_for_function(
            "n => Number(document.querySelector('[data-testid=impressions]')"
            ".innerText.replace(/,/g, '')) > n",
            arg=first + 200,
        )
        assert page.evaluate("window.notReloaded") is True
        expect(page.get_by_test_id("stopping")).to_contain_text("leads with probability best")

        # the pending variant: approve it, then it is served
        pending = served["pending"]
        queue = page.locator(f"#queue li[data-variant='{pending}']")
        expect(queue).to_be_visible()
        # with five variants serving, the creative insights fill in
        expect(page.locator("#insights-table")).to_be_visible()
        expect(page.locator("#insights-table")).to_contain_text("the word “rings”")
        page.screenshot(path=str(SCREENSHOTS / "campaign.png"), full_page=True)
        queue.locator("button", has_text="Approve").click()
        expect(queue).to_have_count(0)  # out of the queue (the swap, or the next poll)
        row = page.locator(f"#variants tr[data-variant='{pending}']")
        expect(row.locator(".status")).to_have_text("active")
        page.wait_for_function(
            "id => Number(document.querySelector(`#variants tr[data-variant='${id}'] "
            "[data-field=impressions]`).innerText.replace(/,/g, '')) > 0",
            arg=pending,
        )
        assert page.evaluate("window.notReloaded") is True
    # traffic stopped: the export must equal the API's counts
    page.reload()
    with page.expect_download() as download_info:
        page.locator("a[href$='/export/variants.csv']").click()
    exported = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    api = httpx.get(
        f"{url}/v1/campaigns/{campaign_id}",
        headers={"Authorization": f"Bearer {served['keys']['acme']}"},
    ).json()
    assert [(r["variant_id"], int(r["impressions"]), int(r["clicks"]), r["status"])
            for r in exported] == [
        (v["variant_id"], v["impressions"], v["clicks"], v["status"]) for v in api["variants"]
    ]  # fmt: skip
    assert sum(int(r["impressions"]) for r in exported) > 200
    page.goto(f"{url}/ui/campaigns/{served['finished']}")
    expect(page.get_by_test_id("stopping")).to_contain_text("Variant B won on")
    page.goto(f"{url}/ui")
    expect(page.locator("#campaigns")).to_contain_text("Aurelle rings, spring")
    expect(page.locator(f"tr[data-campaign='{served['finished']}']")).to_contain_text("B,")
    page.screenshot(path=str(SCREENSHOTS / "campaigns.png"), full_page=True)
    context.close()
