"""Creative insights: planted effects are found, null campaigns read "unclear", in English and
Chinese, and the dashboard's table and CSV show them."""

from __future__ import annotations

import numpy as np

from adloop.generators.fluency import content_words
from adloop.optimizer.dashboard_export import table_csv
from adloop.optimizer.dashboard_pages import _insights
from adloop.optimizer.insights import creative_insights

BRIEF = {"language": "en", "brand": "Aurelle", "offer": "free engraving",
         "call_to_action": "Book now"}  # fmt: skip
HEADLINES = [
    "Rings made for you", "Bespoke rings in gold", "Gold rings, 3 styles",
    "Free engraving on rings", "Why wait? Book now", "Your ring in 2 weeks", "Rings that last",
    "Book now: free engraving",
]  # fmt: skip


def _campaign(seed: int, lift_of_numbers: float) -> list[dict]:
    rng = np.random.default_rng(seed)
    variants = []
    for text in HEADLINES:
        ctr = 0.02 * (1 + lift_of_numbers * any(ch.isdigit() for ch in text))
        n = int(rng.integers(2_000, 20_000))
        variants.append({"text": text, "impressions": n, "clicks": int(rng.binomial(n, ctr))})
    return variants


def _row(rows: list[dict], kind: str) -> dict:
    return next(r for r in rows if r["kind"] == kind)


def test_a_planted_element_is_found_with_an_interval_around_its_lift() -> None:
    rows = creative_insights(_campaign(0, 0.5), BRIEF)
    number = _row(rows, "number")
    assert rows[0] is number and number["reading"] == "higher"
    assert (number["variants_with"], number["variants_without"]) == (2, 6)
    point, low, high = number["lift"]
    assert low < 0.5 < high and low > 0 and low < point < high
    with_, without = number["with"], number["without"]
    assert with_[1] < with_[0] < with_[2] and without[1] < without[0] < without[2]
    # the offer and the call to action are elements; words that split the variants the same
    # way ("book", "now", "free") are not repeated, and the brand is never a word
    assert {"offer", "call_to_action", "length"} <= {r["kind"] for r in rows}
    elements = [r["element"] for r in rows]
    assert not {"the word “book”", "the word “free”", "the word “aurelle”"} & set(elements)
    # the same counts give the same page
    assert creative_insights(_campaign(0, 0.5), BRIEF) == rows


def test_campaigns_where_nothing_matters_rarely_read_clear() -> None:
    clear = total = 0
    for seed in range(200):
        for row in creative_insights(_campaign(seed, 0.0), BRIEF):
            total += 1
            clear += row["reading"] != "unclear"
    assert total > 1000
    assert clear / total < 0.05  # a 95 % interval; about 0.01 is seen


def test_too_few_variants_with_data_give_no_insight() -> None:
    few = [{"text": t, "impressions": 1000, "clicks": 20} for t in HEADLINES[:3]]
    unseen = [{"text": t, "impressions": 0, "clicks": 0} for t in HEADLINES[3:]]
    assert creative_insights(few + unseen, BRIEF) == []


def test_chinese_copy_is_read_in_words_and_the_offer_is_found() -> None:
    brief = {"language": "zh", "brand": "奥蕾尔", "offer": "免费刻字", "call_to_action": "立即预约"}
    texts = ["奥蕾尔定制婚戒", "限时免费刻字，定制婚戒", "3款经典金戒", "你的专属婚戒？",
             "立即预约，免费刻字", "婚戒定制只需2周", "经典金戒，终身保养"]  # fmt: skip
    assert content_words("限时免费刻字，定制婚戒", "zh") == ["限时", "免费", "刻字", "定制", "婚戒"]
    rng = np.random.default_rng(0)
    variants = [{"text": t, "impressions": 10_000,
                 "clicks": int(rng.binomial(10_000, 0.028 if "免费" in t else 0.02))}
                for t in texts]  # fmt: skip
    rows = creative_insights(variants, brief)
    assert rows[0]["kind"] == "offer" and rows[0]["reading"] == "higher"
    assert "the word “婚戒”" in [r["element"] for r in rows]


def test_the_dashboard_shows_and_exports_the_insights() -> None:
    rows = creative_insights(_campaign(0, 0.5), BRIEF)
    page = {"view": {"campaign_id": "c_1"}, "insights": rows}
    exported = table_csv(page, "insights").splitlines()
    assert exported[0].startswith("element,kind,variants_with,variants_without,ctr_with")
    assert exported[1].startswith("a number,number,2,6,")
    html = _insights(page)
    assert ">higher CTR<" in html and "/ui/campaigns/c_1/export/insights.csv" in html
    point, low, high = rows[0]["lift"]
    assert f"{point * 100:+.0f} % ({low * 100:+.0f} to {high * 100:+.0f} %)" in html
