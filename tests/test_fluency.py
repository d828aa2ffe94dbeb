"""The fluency judge (no generating model involved), its filter gate and its labelled set."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from adloop.generators import (
    DEFAULT_MIN_FLUENCY,
    DROP_REASONS,
    Candidate,
    ConfigError,
    FilterSettings,
    TemplateGenerator,
    brief_terms,
    check_candidate,
    is_fluent,
    judge_fluency,
    load_brief,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
BRIEFS = {"en": EXAMPLES / "brief_jewelry_en.yaml", "zh": EXAMPLES / "brief_jewelry_zh.yaml"}


def load_copy_judge() -> ModuleType:
    """``bench/copy_judge.py`` (bench is not an installed package)."""
    spec = importlib.util.spec_from_file_location(
        "copy_judge", REPO_ROOT / "bench" / "copy_judge.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def copy_judge() -> ModuleType:
    return load_copy_judge()


@pytest.fixture(scope="module")
def terms() -> dict[str, tuple[str, ...]]:
    return {language: brief_terms(load_brief(path)) for language, path in BRIEFS.items()}


ISSUE_GIBBERISH = [
    ("Gold Mining, Wholesale — Aurelle: Forwad Gold Mining, Wholesale", "en"),
    ("Headlines: — Aurelle: Fashion, Luxury, Designing, Please Visit", "en"),
    ("BYour Dream | Aurelle", "en"),
    ("Dear Fiona, — Aurelle: Me too", "en"),
    ("具有更多设计方面的艺朽 — 奥蕾尔：适合携帯的人", "zh"),
    ("玩饱、疯毁 — 奥蕾尔：厘利戒快行自言肉", "zh"),
    ("定制婚戒 — 奥蕾尔：Bid: 2279000386", "zh"),
]


@pytest.mark.parametrize(("text", "language"), ISSUE_GIBBERISH)
def test_the_issue_gibberish_is_not_fluent(
    text: str, language: str, terms: dict[str, tuple[str, ...]]
) -> None:
    judged = judge_fluency(text, language, known_terms=terms[language])
    assert judged.score < DEFAULT_MIN_FLUENCY
    assert judged.why  # says what is wrong
    assert not is_fluent(text, language, known_terms=terms[language])


@pytest.mark.parametrize(
    ("text", "language", "why"),
    [
        ("Gold Mining — Aurelle: Forwad Gold Mining", "en", "non-word 'Forwad'"),
        ("Headlines: Bespoke Rings — Aurelle", "en", "echoed label"),
        ("Aurelle Rings — Book now, reference 2279000386.", "en", "digit string"),
        ("Bespoke Rings — Book your consultation with the", "en", "ends mid-phrase"),
        ("Aurelle Rings — The jewel for of your wedding.", "en", "broken grammar"),
        ("Luxury Rings — Book your consultation.Never use: f", "en", "echoed label 'Never use'"),
        ("Gold Rings — Book your consultation.Rings for you.", "en", "without a space"),
        ("适合携帯的人", "zh", "rare character '帯'"),
        ("奥蕾尔の定制婚戒", "zh", "Japanese kana"),
        ("奥蕾尔：厘利戒快行自言肉", "zh", "no word joins"),
        ("奥蕾尔：婚戒，项链，珠宝，定制", "zh", "bare list"),
    ],
)
def test_the_reason_names_the_defect(text: str, language: str, why: str) -> None:
    judged = judge_fluency(text, language, known_terms=["Aurelle", "奥蕾尔"])
    assert why in judged.why
    assert judged.score < DEFAULT_MIN_FLUENCY


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Handmade Leather Wallets — Full-grain leather, stitched by hand. Free shipping.", "en"),
        ("Gifts She'll Treasure — 18k gold necklaces, wrapped and delivered in time.", "en"),
        ("Learn Spanish in 10 Minutes a Day — Short lessons that fit your commute.", "en"),
        ("Limited offer: 20% off all rings — Ends Sunday. Shop now.", "en"),
        ("新鲜烘焙咖啡豆 — 每两周送货上门，新客首单八折，立即订阅。", "zh"),
        ("在线问诊，足不出户 — 三甲医院医生在线解答，24小时服务。", "zh"),
        ("真肉配方狗粮 — 营养均衡，无添加剂，狗狗爱吃，主人放心。", "zh"),
    ],
)
def test_good_handwritten_copy_is_fluent(text: str, language: str) -> None:
    judged = judge_fluency(text, language)
    assert judged.score >= DEFAULT_MIN_FLUENCY, judged
    assert judged.why == ""
    assert 0.0 <= judged.score <= 1.0 and judged.real_word_share == 1.0


@pytest.mark.parametrize("language", ["en", "zh"])
def test_template_copy_for_the_example_briefs_passes_the_gate(language: str) -> None:
    brief = load_brief(BRIEFS[language])
    candidates = TemplateGenerator().generate(brief, 40, seed=0)
    assert len(candidates) == 40
    reasons = [check_candidate(c, brief) for c in candidates]
    assert "not_fluent" not in reasons
    assert all(is_fluent(c.text, language, known_terms=brief_terms(brief)) for c in candidates)


@pytest.mark.parametrize(
    ("text", "language", "term"),
    [
        ("Roastwell Coffee — Fresh beans, roasted every week.", "en", "Roastwell"),
        ("岫澜茶叶礼盒 — 高山好茶，送礼体面。", "zh", "岫澜"),
    ],
)
def test_known_terms_rescue_a_brand_name(text: str, language: str, term: str) -> None:
    assert not is_fluent(text, language)
    assert term in judge_fluency(text, language).why
    assert is_fluent(text, language, known_terms=[term])
    assert is_fluent(text, language, known_terms=[term.upper()])  # matched case-insensitively


def test_the_filter_drops_gibberish_as_not_fluent_and_passes_good_copy() -> None:
    brief = load_brief(BRIEFS["en"])
    assert DROP_REASONS.index("not_fluent") > DROP_REASONS.index("wrong_language")
    gibberish = Candidate(
        "Gold Mining, Wholesale", "Aurelle: Forwad Gold Mining, Wholesale", "en", "lm"
    )
    assert check_candidate(gibberish, brief) == "not_fluent"
    good = Candidate(
        "Bespoke Rings by Aurelle", "Designed with you in our Paris atelier.", "en", "lm"
    )
    assert check_candidate(good, brief) is None
    # Off: the same gibberish passes every other check.
    assert check_candidate(gibberish, brief, settings=FilterSettings(min_fluency=None)) is None
    # A threshold of 0 lets every score through.
    assert check_candidate(gibberish, brief, settings=FilterSettings(min_fluency=0.0)) is None
    zh_brief = load_brief(BRIEFS["zh"])
    zh_gibberish = Candidate("玩饱、疯毁", "奥蕾尔：厘利戒快行自言肉", "zh", "lm")
    assert check_candidate(zh_gibberish, zh_brief) == "not_fluent"


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "high", True])
def test_min_fluency_is_validated_with_a_clear_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"FilterSettings\.min_fluency .*\[0, 1\].*None"):
        FilterSettings(min_fluency=value)  # type: ignore[arg-type]


def test_the_score_is_frozen_and_the_language_checked() -> None:
    judged = judge_fluency("Bespoke Rings", "en")
    with pytest.raises(dataclasses.FrozenInstanceError):
        judged.score = 0.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="language"):
        judge_fluency("Bespoke Rings", "fr")
    assert judge_fluency("", "en").score == 0.0
    assert judge_fluency("  —  ", "zh").why == "no words"


def test_the_labelled_set_covers_both_languages_and_labels(copy_judge: ModuleType) -> None:
    rows = copy_judge.load_labels()
    assert len(rows) >= 140
    for language in ("en", "zh"):
        subset = [r for r in rows if r["language"] == language]
        assert len(subset) >= 70
        assert sum(r["fluent"] for r in subset) >= 25
        assert sum(not r["fluent"] for r in subset) >= 25
    assert len({r["text"] for r in rows}) == len(rows)
    choose, held_out = copy_judge.split_labels(rows)
    assert len(choose) + len(held_out) == len(rows)
    assert copy_judge.split_labels(rows) == (choose, held_out)  # same seed, same split


def test_the_judge_error_on_the_held_out_half_is_within_the_documented_bound(
    copy_judge: ModuleType,
) -> None:
    report = copy_judge.evaluate_judge()
    # The filter's default is what the choosing half picks.
    assert report["chosen_threshold"] == report["default_threshold"] == DEFAULT_MIN_FLUENCY
    for language, bound in copy_judge.FALSE_ACCEPT_BOUND.items():
        figures = report["held_out"][language]
        assert figures["false_accept"]["rate"] <= bound, figures
        assert figures["false_reject"]["rate"] <= copy_judge.FALSE_REJECT_BOUND[language]
        low, high = figures["false_accept"]["ci95"]
        assert low <= figures["false_accept"]["rate"] <= high
    assert report["whole_set"]["all"]["n"] == report["n_rows"]
