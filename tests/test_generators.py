"""Briefs, template and recombination generators, filters and the pool (no language model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adloop import generators
from adloop.generators import (
    DROP_REASONS,
    Brief,
    BriefError,
    Candidate,
    Channel,
    ConfigError,
    FilterSettings,
    GeneratorPool,
    ModelNotFoundError,
    NearDuplicateIndex,
    RecombinationGenerator,
    TemplateGenerator,
    check_candidate,
    load_brief,
)
from adloop.generators.filters import is_repetitive

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BRIEFS = {"en": EXAMPLES / "brief_jewelry_en.yaml", "zh": EXAMPLES / "brief_jewelry_zh.yaml"}


def aurelle_brief(**fields) -> Brief:
    """An English brief for Aurelle rings; ``fields`` add to or replace its settings."""
    return Brief(**{"product": "rings", "brand": "Aurelle", "language": "en", **fields})


@pytest.fixture(autouse=True)
def no_installed_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run without a language model, as on a fresh install."""
    monkeypatch.setenv("ADLOOP_MODEL_DIR", str(tmp_path / "models"))


def test_public_names_exist() -> None:
    for name in generators.__all__:
        assert hasattr(generators, name), name


@pytest.mark.parametrize("language", ["en", "zh"])
def test_example_brief_gives_n_distinct_valid_candidates(language: str) -> None:
    brief = load_brief(BRIEFS[language])
    assert brief.language == language
    result = GeneratorPool().generate(brief, 20, seed=0)
    candidates = result.candidates
    assert len(candidates) == 20
    assert len({c.text for c in candidates}) == 20
    similarity = NearDuplicateIndex(language, max_similarity=FilterSettings().max_similarity)
    for candidate in candidates:
        assert not similarity.is_near_duplicate(candidate.text)
        similarity.add(candidate.text)
        assert brief.channel.length(candidate.headline) <= brief.channel.headline_max
        assert brief.channel.length(candidate.description) <= brief.channel.description_max
        lowered = candidate.text.lower()
        assert not any(term.lower() in lowered for term in brief.banned_terms)
        assert all(term.lower() in lowered for term in brief.required_terms)
        assert candidate.language == language
        assert candidate.prompt_hash == brief.prompt_hash()
        assert candidate.seed is not None
    # No model installed here: the pool says so exactly once and still delivers.
    missing = [note for note in result.notes if "adloop models pull smollm2" in note]
    assert len(missing) == 1
    assert "lm" not in result.requested


def test_chinese_limits_count_double_width_characters() -> None:
    google = Channel(name="google_search", headline_max=30, description_max=90, cjk_width=2)
    assert google.length("定制婚戒") == 8
    assert google.length("18K金") == 5
    assert google.length("奥蕾尔，立即预约") == 16  # full-width comma counts double too
    assert Channel(cjk_width=1).length("定制婚戒") == 4
    brief = load_brief(BRIEFS["zh"])
    for candidate in TemplateGenerator().generate(brief, 30, seed=5):
        assert len(candidate.headline) <= 15  # 30 units = at most 15 Chinese characters


def test_same_seed_same_template_output() -> None:
    brief = load_brief(BRIEFS["en"])
    first = [c.text for c in TemplateGenerator().generate(brief, 12, seed=42)]
    again = [c.text for c in TemplateGenerator().generate(brief, 12, seed=42)]
    other = [c.text for c in TemplateGenerator().generate(brief, 12, seed=43)]
    assert first == again
    assert first != other
    pool_first = [c.text for c in GeneratorPool().generate(brief, 10, seed=9).candidates]
    pool_again = [c.text for c in GeneratorPool().generate(brief, 10, seed=9).candidates]
    assert pool_first == pool_again


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"product": None}, "product", "field required"),
        ({"language": None}, "language", "field required"),
        ({"language": "fr"}, "language", "unknown language 'fr'"),
        ({"channel": {"headline_max": 3}}, "channel.headline_max", "no ad text can meet"),
        ({"required_terms": ["x" * 120]}, "required_terms", "no ad text can meet"),
        (
            {"required_terms": ["cheap rings"], "banned_terms": ["cheap"]},
            "required_terms",
            "banned",
        ),
        ({"colour": "gold"}, "colour", "unknown field"),
        ({"channel": {"cjk_width": 3}}, "channel.cjk_width", ""),
    ],
)
def test_bad_briefs_name_the_field(change: dict, field: str, message: str) -> None:
    data = {"product": "bespoke rings", "language": "en", "brand": "Aurelle"}
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(BriefError) as info:
        load_brief(data)
    assert info.value.field == field
    assert message in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_brief_files_yaml_json_and_missing(tmp_path: Path) -> None:
    data = {"product": "rings", "language": "zh-CN", "keywords": "定制婚戒"}
    path = tmp_path / "brief.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    brief = load_brief(path)
    assert brief.language == "zh" and brief.keywords == ("定制婚戒",)
    assert load_brief(BRIEFS["en"]).brand == "Aurelle"
    with pytest.raises(BriefError, match="no brief file"):
        load_brief(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("product: [unclosed")
    with pytest.raises(BriefError, match="not valid YAML"):
        load_brief(broken)


def test_prompt_is_deterministic_and_carries_the_brief() -> None:
    brief = load_brief(BRIEFS["zh"])
    assert brief.prompt() == load_brief(BRIEFS["zh"]).prompt()
    prompt = brief.prompt()
    for part in (
        brief.product,
        brief.brand,
        brief.offer,
        "Simplified Chinese",
        "15 Chinese characters",
    ):
        assert part in prompt
    assert brief.prompt_hash() == load_brief(BRIEFS["zh"]).prompt_hash()
    assert brief.prompt_hash() != load_brief(BRIEFS["en"]).prompt_hash()


def test_each_filter_names_its_reason() -> None:
    brief = aurelle_brief(
        banned_terms=["cheap"],
        required_terms=["Aurelle"],
        channel=Channel(headline_max=20, description_max=40),
    )

    def reason(
        headline: str, description: str = "Aurelle rings.", language: str = "en"
    ) -> str | None:
        return check_candidate(Candidate(headline, description, language, "template"), brief)

    assert reason("Aurelle Rings") is None
    assert reason("  ") == "empty"
    assert reason("Aurelle Rings For Everyone Here") == "headline_too_long"
    assert reason("Aurelle Rings", "x" * 41) == "description_too_long"
    assert reason("Cheap Aurelle Rings") == "banned_term"
    assert reason("Gold Rings", "Made for you.") == "missing_required_term"
    assert reason("Aurelle 定制婚戒", "奥蕾尔定制婚戒") == "wrong_language"
    assert reason("Aurelle bespoke", "Bespoke bespoke rings.") == "repetitive"
    assert reason("Rings by Aurelle", "Aurelle rings, made to fit.") is None  # not in a row
    accepted = NearDuplicateIndex("en")
    accepted.add("Aurelle Rings — Aurelle rings.")
    candidate = Candidate("Aurelle Rings!", "Aurelle rings", "en", "template")
    assert check_candidate(candidate, brief, accepted=accepted) == "near_duplicate"
    assert check_candidate(candidate, brief, existing=accepted) == "near_duplicate_existing"
    assert set(DROP_REASONS) >= {"empty", "near_duplicate", "wrong_language"}


@pytest.mark.parametrize(
    ("text", "repetitive"),
    [
        ("The bespoke bespoke — Aurelle: It's bespoke.", True),  # twice in a row
        ("Aurelle: gold in 18k gold, fine gold bands", False),  # three times is still copy
        ("Bespoke — bespoke design, bespoke care, bespoke jewelry", True),  # four times
        ("Rings that fit. Rings that last. Rings by Aurelle.", False),
        ("The Art of Art | Aurelle", False),  # short words between do not make it a repeat
        ("Free Custom Wedding Wedding", True),
        ("定制定制戒指", True),
        ("定制戒指 定制项链 定制手链", False),
        ("定制戒指，定制项链，定制手链，定制耳环", True),
    ],
)
def test_repetitive_copy(text: str, repetitive: bool) -> None:
    assert is_repetitive(text) is repetitive
    zh = "定" in text
    brand = "奥蕾尔" if zh else "Aurelle"
    brief = Brief(product="rings", brand=brand, language="zh" if zh else "en")
    candidate = Candidate(brand, text, brief.language, "lm")
    assert (check_candidate(candidate, brief) == "repetitive") is repetitive


def test_repetition_threshold_is_a_setting() -> None:
    brief = aurelle_brief()
    four = Candidate("Aurelle", "Bespoke look, bespoke care, bespoke fit, bespoke art", "en", "lm")
    assert check_candidate(four, brief) == "repetitive"
    assert check_candidate(four, brief, settings=FilterSettings(max_word_repeats=5)) is None
    with pytest.raises(ConfigError, match="FilterSettings.max_word_repeats"):
        FilterSettings(max_word_repeats=1)
    with pytest.raises(ValueError, match="max_similarity"):  # ConfigError is a ValueError
        FilterSettings(max_similarity=1.5)


def test_chinese_language_and_near_duplicate_checks() -> None:
    brief = Brief(product="高级珠宝", brand="奥蕾尔", language="zh")
    english = Candidate("Bespoke Rings", "Made for you.", "zh", "lm")
    assert check_candidate(english, brief) == "wrong_language"
    index = NearDuplicateIndex("zh")
    index.add("奥蕾尔定制婚戒 — 为新婚伴侣打造的典雅定制婚戒。立即预约。")
    assert index.is_near_duplicate("奥蕾尔定制婚戒 — 为新婚伴侣打造的典雅定制婚戒！立即预约！")
    assert not index.is_near_duplicate("发现奥蕾尔 — 免费私人设计咨询，立即预约。")


def test_pool_avoids_existing_variants() -> None:
    brief = load_brief(BRIEFS["en"])
    first = GeneratorPool(["template"]).generate(brief, 10, seed=0).candidates
    existing = [c.text for c in first]
    second = GeneratorPool(["template"]).generate(brief, 10, seed=0, existing_texts=existing)
    assert len(second.candidates) == 10
    assert second.drop_counts.get("near_duplicate_existing", 0) > 0
    index = NearDuplicateIndex("en")
    for text in existing:
        index.add(text)
    assert not any(index.is_near_duplicate(c.text) for c in second.candidates)


def test_impossible_brief_returns_what_it_has_and_why() -> None:
    # Headline-only channel with 8 units and a required 7-letter term: almost nothing fits.
    brief = aurelle_brief(
        product="made-to-measure fine jewellery",
        keywords=["bespoke engagement rings"],
        required_terms=["Lumière"],
        channel=Channel(headline_max=8, description_max=0),
    )
    result = GeneratorPool(["template"]).generate(brief, 10, seed=0, budget=40)
    assert len(result.candidates) < 10
    assert sum(result.requested.values()) <= 40
    assert sum(result.drop_counts.values()) == len(result.dropped)
    assert any(note.startswith(f"only {len(result.candidates)} of 10") for note in result.notes)


def test_recombination_records_parents() -> None:
    brief = load_brief(BRIEFS["en"])
    winners = [
        {
            "variant_id": "v_a",
            "headline": "Bespoke Engagement Rings",
            "description": "Handcrafted in our Paris atelier. Book your consultation.",
        },
        {
            "variant_id": "v_b",
            "headline": "Aurelle Fine Jewellery",
            "description": "Complimentary private design consultation. Visit us in Paris.",
        },
        {
            "variant_id": "v_c",
            "text": "Meet Aurelle — Rings made for you. Book your consultation today.",
        },
    ]
    candidates = RecombinationGenerator().generate(brief, 12, seed=3, winners=winners)
    assert len(candidates) == 12
    originals = {(w.get("headline"), w.get("description")) for w in winners}
    ids = {"v_a", "v_b", "v_c"}
    for candidate in candidates:
        assert candidate.generator == "recombine"
        assert candidate.parent_ids and set(candidate.parent_ids) <= ids
        assert (candidate.headline, candidate.description) not in originals
    assert any(len(c.parent_ids) == 2 for c in candidates)  # crosses of two winners
    assert RecombinationGenerator().generate(brief, 5, seed=0, winners=[]) == []
    again = RecombinationGenerator().generate(brief, 12, seed=3, winners=winners)
    assert [c.text for c in again] == [c.text for c in candidates]


def test_pool_uses_recombination_when_winners_are_given() -> None:
    brief = load_brief(BRIEFS["zh"])
    first = GeneratorPool(["template"]).generate(brief, 4, seed=0).candidates
    winners = [
        {"variant_id": f"v_{i}", "headline": c.headline, "description": c.description}
        for i, c in enumerate(first)
    ]
    result = GeneratorPool(["template", "recombine"]).generate(
        brief, 12, seed=1, winners=winners, existing_texts=[c.text for c in first]
    )
    assert len(result.candidates) == 12
    recombined = [c for c in result.candidates if c.generator == "recombine"]
    assert recombined and all(c.parent_ids for c in recombined)


def test_explicit_bad_model_dir_is_an_error_but_missing_default_is_a_note(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "nope")):
        GeneratorPool(["template", "lm"], model_dir=tmp_path / "nope")
    pool = GeneratorPool(["template", "lm"])
    assert pool.names == ["template"]
    result = pool.generate(load_brief(BRIEFS["en"]), 3, seed=0)
    assert len(result.candidates) == 3
    assert sum("no language model installed" in note for note in result.notes) == 1


def test_candidate_text_and_dict() -> None:
    candidate = Candidate("Bespoke Rings", "Book now.", "en", "recombine", None, "abc", ("v_1",), 3)
    assert candidate.text == "Bespoke Rings — Book now."
    assert Candidate("Bespoke Rings", "", "en", "template").text == "Bespoke Rings"
    data = candidate.to_dict()
    assert data["text"] == candidate.text
    assert data["provenance"] == {
        "generator": "recombine",
        "model_version": None,
        "prompt_hash": "abc",
        "parent_ids": ["v_1"],
        "seed": 3,
    }


def test_time_budget_stops_topping_up() -> None:
    brief = load_brief(BRIEFS["en"])
    winners = [{"variant_id": "v_1", "headline": "Meet Aurelle", "description": "Book now."}]
    result = GeneratorPool(["template", "recombine"]).generate(
        brief, 30, seed=0, winners=winners, time_budget_s=0.0
    )
    assert result.requested["recombine"] == 0  # only the first call ran
    assert 0 < len(result.candidates) < 30
    assert any("time budget" in note for note in result.notes)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_pool_gives_each_generator_its_share(language: str) -> None:
    brief = load_brief(BRIEFS[language])
    first = GeneratorPool(["template"]).generate(brief, 3, seed=5).candidates
    winners = [
        {"variant_id": f"v_{i}", "headline": c.headline, "description": c.description}
        for i, c in enumerate(first)
    ]
    even = GeneratorPool(["template", "recombine"]).generate(brief, 10, seed=0, winners=winners)
    assert even.accepted == {"template": 5, "recombine": 5}
    skewed = GeneratorPool(["template", "recombine"], shares={"template": 3, "recombine": 1})
    result = skewed.generate(brief, 20, seed=0, winners=winners)
    assert len(result.candidates) == 20
    assert result.accepted["template"] >= 3 * result.accepted["recombine"] - 1
    assert result.accepted["recombine"] >= 3
