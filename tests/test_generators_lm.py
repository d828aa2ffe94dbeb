"""The language-model generator with a tiny randomly initialised Llama built here, and the real
SmolLM2 model when it is installed (slow)."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from tiny_llama import build_tiny_llama

from adloop.generators import (
    COMPLETION_PREFIX,
    DROP_REASONS,
    GeneratorPool,
    LMGenerator,
    ModelNotFoundError,
    build_model_input,
    format_completion,
    load_brief,
    load_causal_lm,
    model_version,
    parse_completion,
    resolve_model,
)
from adloop.generators.candidate import Candidate
from adloop.generators.filters import FilterSettings, NearDuplicateIndex, check_candidate
from adloop.generators.lm import select_candidates
from adloop.generators.lm_prompt import few_shot_examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Headline: Bespoke Engagement Rings\nDescription: Handcrafted in 18k gold. Book now.",
    "Headline: Aurelle Fine Jewellery\nDescription: Made-to-measure rings for bridal couples.",
    "标题：奥蕾尔定制婚戒\n描述：巴黎工坊手工打造18K金戒指与项链，为您量身设计。立即预约。",
    "Write one search ad in English. Product: made-to-measure fine jewellery. Brand: Aurelle.",
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer (trained here) and a chat template."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = build_tiny_llama(
        CORPUS * 3,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
        vocab_size=400,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


@pytest.fixture
def brief_en():
    return load_brief(EXAMPLES / "brief_jewelry_en.yaml")


@pytest.fixture
def brief_zh():
    return load_brief(EXAMPLES / "brief_jewelry_zh.yaml")


def test_tiny_model_generates_candidates_end_to_end(tiny_model_dir: Path, brief_en) -> None:
    generator = LMGenerator(tiny_model_dir, max_new_tokens=24, batch_size=3)
    candidates = generator.generate(brief_en, 5, seed=7)
    assert len(candidates) == 5
    version = model_version(tiny_model_dir)
    assert version.startswith(tiny_model_dir.name + "@")
    for candidate in candidates:
        assert candidate.generator == "lm"
        assert candidate.language == "en"
        assert candidate.model_version == version == generator.model_version
        assert candidate.prompt_hash == brief_en.prompt_hash()
        assert candidate.seed == 7
        assert "\n" not in candidate.headline and "\n" not in candidate.description


def test_tiny_model_sampling_is_seeded(tiny_model_dir: Path, brief_zh) -> None:
    generator = LMGenerator(tiny_model_dir, max_new_tokens=16, batch_size=4)
    first = generator.sample(brief_zh, 4, seed=3)
    again = generator.sample(brief_zh, 4, seed=3)
    other = generator.sample(brief_zh, 4, seed=4)
    assert first == again
    assert first != other
    assert len(set(first)) > 1  # sequences in one batch differ


def test_pool_with_tiny_lm_still_fills_n_and_records_provenance(
    tiny_model_dir: Path, brief_en
) -> None:
    pool = GeneratorPool(
        ["template", "lm"],
        model_dir=tiny_model_dir,
        lm_options={"max_new_tokens": 16, "batch_size": 8},
    )
    result = pool.generate(brief_en, 10, seed=1)
    assert len(result.candidates) == 10
    assert result.requested["lm"] > 0
    # A random model writes nonsense: it is dropped with reasons, never silently.
    lm_dropped = [reason for c, reason in result.dropped if c.generator == "lm"]
    assert 0 < result.accepted["lm"] + len(lm_dropped) <= result.requested["lm"]
    assert set(lm_dropped) <= set(DROP_REASONS)
    assert sum(result.drop_counts.values()) == len(result.dropped)
    assert pool.model_version == model_version(tiny_model_dir)


def test_a_scorer_in_the_model_directory_reranks_oversampled_candidates(
    tiny_model_dir: Path, brief_en, tmp_path: Path
) -> None:
    """With scorer.json beside the weights the generator samples n x oversample and keeps the
    scorer's selection of n; the same seed and scorer at oversample 1 samples the same
    completions (the scorer steers both alike) and keeps them all, so the choice can be
    checked exactly."""
    from adloop.generators.scorer import CopyScorer

    model_dir = tmp_path / "with-scorer"
    shutil.copytree(tiny_model_dir, model_dir)
    scorer = CopyScorer(
        weights={"w:aurelle": 1.0}, length_coef=(-1.0, 0.0), length_mean=40.0, length_sd=10.0,
        oversample=3, redundancy_penalty=0.0,  # score alone here; variety: tests/test_scorer.py
    )  # fmt: skip
    scorer.save(model_dir)
    plain_dir = tmp_path / "scorer-at-oversample-1"
    shutil.copytree(tiny_model_dir, plain_dir)
    replace(scorer, oversample=1).save(plain_dir)
    options = {"max_new_tokens": 24, "batch_size": 6}
    assert LMGenerator(model_dir, rerank=False).scorer is None
    plain = LMGenerator(plain_dir, best_of=1.0, **options)
    reranked = LMGenerator(model_dir, **options)
    assert reranked.scorer is not None and "reranked=True" in repr(reranked)

    pool = plain.generate(brief_en, 12, seed=5)
    chosen = reranked.generate(brief_en, 4, seed=5)
    assert len(chosen) == 4 and len({c.text for c in chosen}) == 4
    texts = [c.text for c in pool]
    # Eligible: passes the filters and is no near-copy of an example ad shown in the prompt.
    shown = NearDuplicateIndex("en", max_similarity=FilterSettings().max_similarity)
    for headline, description in few_shot_examples(brief_en, (), n_shots=reranked.shots):
        shown.add(Candidate(headline, description, "en", "shot").text)
    valid = [check_candidate(c, brief_en, existing=shown) is None for c in pool]
    expected = scorer.select(texts, 4, eligible=valid)
    assert [c.text for c in chosen] == [texts[i] for i in expected]
    assert scorer.score([c.text for c in chosen]).mean() > scorer.score(texts).mean()


def test_reranking_prefers_copy_the_filters_keep_over_a_better_score(brief_en) -> None:
    """A scorer that likes short copy must not fill the selection with short copy the pool
    then drops (no brand name, an over-long headline): valid candidates are picked first,
    and invalid ones only when too few valid ones remain."""
    from adloop.generators.scorer import CopyScorer

    def ad(headline: str, description: str) -> Candidate:
        return Candidate(headline, description, "en", "lm")

    candidates = [
        ad("Rings", ""),  # no "Aurelle": missing_required_term
        ad("Bespoke rings", ""),  # likewise
        ad("Aurelle bespoke rings in 18k gold, made in Paris", ""),  # headline_too_long
        ad("Aurelle bespoke rings", "Made to measure in Paris."),
        ad("Aurelle 18k gold necklaces", "Designed with you, handcrafted in our atelier."),
    ]
    scorer = CopyScorer(weights={}, length_coef=(-1.0, 0.0), length_mean=40.0, length_sd=10.0)
    assert scorer.rank([c.text for c in candidates])[:2] == [0, 1]  # the scorer wants these
    picked = select_candidates(candidates, 2, brief_en, scorer=scorer)
    assert {c.headline for c in picked} == {"Aurelle bespoke rings", "Aurelle 18k gold necklaces"}
    assert all(check_candidate(c, brief_en) is None for c in picked)
    # With more asked for than pass, the valid ones still come first.
    picked = select_candidates(candidates, 4, brief_en, scorer=scorer)
    assert [check_candidate(c, brief_en) is None for c in picked] == [True, True, False, False]


def test_lora_adapter_loads_on_its_recorded_base(
    tiny_model_dir: Path, tmp_path: Path, brief_en
) -> None:
    from peft import LoraConfig, get_peft_model

    model, _ = load_causal_lm(tiny_model_dir)
    lora = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    with warnings.catch_warnings():
        # peft 0.21 reads a property transformers 5 deprecated; not ours to fix.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        adapter = get_peft_model(model, lora)
    adapter_dir = tmp_path / "v0001"
    adapter.save_pretrained(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    (adapter_dir / "adloop_version.json").write_text(
        json.dumps({"version": "v0001", "base": str(tiny_model_dir)})
    )

    loaded, tokenizer = load_causal_lm(adapter_dir)
    assert type(loaded).__name__ == "PeftModel"
    assert tokenizer.padding_side == "left"
    generator = LMGenerator(adapter_dir, max_new_tokens=8, batch_size=2)
    assert generator.model_version == "v0001"
    candidates = generator.generate(brief_en, 2, seed=0)
    assert [c.model_version for c in candidates] == ["v0001", "v0001"]


def test_not_a_causal_lm_is_a_clear_error(tmp_path: Path) -> None:
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    with pytest.raises(ModelNotFoundError, match="not a causal language model") as info:
        LMGenerator(encoder)
    assert str(encoder) in str(info.value)

    with pytest.raises(ModelNotFoundError, match="adloop models pull smollm2") as info:
        LMGenerator(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        LMGenerator(empty)


def test_corrupt_weights_fail_at_load_with_the_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelNotFoundError, match=str(broken)):
        load_causal_lm(broken)


def test_prompt_and_completion_fit_together(tiny_model_dir: Path, brief_en) -> None:
    _, tokenizer = load_causal_lm(tiny_model_dir)
    model_input = build_model_input(tokenizer, brief_en)
    assert brief_en.prompt() in model_input
    assert model_input.endswith("<|im_start|>assistant\n")
    assert model_input == build_model_input(tokenizer, brief_en)  # deterministic
    completion = format_completion("Bespoke Rings", "Book your consultation.")
    assert completion.startswith(COMPLETION_PREFIX)
    assert parse_completion(completion[len(COMPLETION_PREFIX) :], brief_en) == (
        "Bespoke Rings",
        "Book your consultation.",
    )


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (' "Bespoke Rings"\nDescription: Book a fitting.\n', ("Bespoke Rings", "Book a fitting.")),
        (
            " **Fine Jewellery.**\n\n**Description:** Made for you ✨\nHeadline: second ad",
            ("Fine Jewellery", "Made for you"),
        ),
        (" <headline>\nDescription: <description>", ("", "")),
        (
            " Gold Rings: an elaboration that runs well past any headline limit\nDescription: Ok.",
            ("Gold Rings", "Ok."),
        ),
    ],
)
def test_parse_completion_cleans_model_output(
    completion: str, expected: tuple[str, str], brief_en
) -> None:
    assert parse_completion(completion, brief_en) == expected


def test_parse_completion_keeps_whole_sentences_within_the_limit(brief_zh) -> None:
    long = "奥蕾尔为您量身设计婚戒。" * 3 + "巴黎工坊手工打造戒指项链。"
    headline, description = parse_completion(f" 奥蕾尔定制婚戒\n描述：{long}", brief_zh)
    assert headline == "奥蕾尔定制婚戒"
    assert description == "奥蕾尔为您量身设计婚戒。" * 3
    assert brief_zh.channel.length(description) <= brief_zh.channel.description_max


@pytest.mark.slow
def test_real_smollm2_writes_english_and_chinese_candidates(brief_en, brief_zh) -> None:
    try:
        model_dir = resolve_model("smollm2")
    except ModelNotFoundError as exc:
        pytest.skip(f"SmolLM2 is not installed ({exc})")
    pool = GeneratorPool(["lm", "template"], model_dir=model_dir)
    for brief in (brief_en, brief_zh):
        result = pool.generate(brief, 8, seed=0)
        assert len(result.candidates) == 8
        assert result.requested["lm"] > 0
        lm_seen = [c for c in result.candidates if c.generator == "lm"] + [
            c for c, _ in result.dropped if c.generator == "lm"
        ]
        assert lm_seen and all(c.model_version == pool.model_version for c in lm_seen)
        # The real model writes readable text in the brief's language at least sometimes.
        assert any(c.headline for c in lm_seen)


def test_parsed_copy_drops_labels_the_model_writes_mid_line() -> None:
    from adloop.generators import Brief
    from adloop.generators.lm import parse_completion

    brief = Brief(product="rings", language="en")
    headline, description = parse_completion(
        'Custom design in 18k "gold\nAurelle: Descrip: 18K fine jewelry, bespoke.', brief
    )
    assert (headline, description) == (
        "Custom design in 18k gold",
        "Aurelle: 18K fine jewelry, bespoke.",
    )


def test_chinese_phrase_slots_keep_whole_phrases_with_a_separator_between(
    tiny_model_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    from adloop.generators.lm_constraints import PhraseLexicon, TokenTable, whole_phrase_prefix

    table = TokenTable(AutoTokenizer.from_pretrained(tiny_model_dir))
    phrases = ["匠心打造", "精心设计"]
    joined = PhraseLexicon(table, phrases, max_phrases=2)
    separated = PhraseLexicon(table, phrases, max_phrases=2, require_separator=True)
    after = "匠心打造".encode()
    starts = {table.bytes[i][:1] for i in separated.allowed(after)[0]}
    assert starts == {"，".encode()[:1]}  # only the separator may follow a phrase
    assert "精".encode()[:1] in {table.bytes[i][:1] for i in joined.allowed(after)[0]}
    assert separated.allowed(after)[2] and not separated.allowed("匠心".encode())[2]
    # a line cut inside a phrase keeps the phrases it finished, or nothing
    assert whole_phrase_prefix("匠心打造，精心", phrases, ["，"]) == "匠心打造"
    assert whole_phrase_prefix("匠心", phrases, ["，"]) == ""
    assert separated.whole_prefix("匠心打造，精心设计") == "匠心打造，精心设计"


def test_english_phrases_are_the_briefs_terms_and_stock_phrases_without_banned_terms() -> None:
    from adloop.generators import Brief
    from adloop.generators.skeleton import english_phrases

    brief = Brief(
        product="fine jewellery",
        brand="Aurelle",
        language="en",
        keywords=["bespoke engagement rings", "custom diamond rings", "18k gold necklaces"],
        segments=["bridal couples", "fashion lovers"],
        banned_terms=["necklaces"],
    )
    headline, description = english_phrases(brief)
    assert all(p.startswith(" ") and p.strip() for p in headline + description)
    assert " Bespoke Engagement Rings" in headline and " For Bridal Couples" in headline
    assert " Custom diamond rings for fashion lovers" in description
    assert not any("necklaces" in p.lower() for p in headline + description)


def test_english_skeletons_fill_their_slots_with_whole_phrases_only(
    tiny_model_dir: Path, brief_en
) -> None:
    from adloop.generators.skeleton import english_phrases

    generator = LMGenerator(tiny_model_dir, max_new_tokens=48, modes="skeleton", best_of=1)
    headline_phrases = {p.strip() for p in english_phrases(brief_en)[0]}
    candidates = generator.generate(brief_en, 8, seed=3)
    assert len(candidates) == 8
    filled = [c for c in candidates if c.headline]
    assert filled, "a random model still finishes some phrases"
    for candidate in filled:
        slot = candidate.headline
        for fixed in ("Aurelle | ", "Aurelle: ", " | Aurelle"):
            slot = slot.replace(fixed, "")
        assert slot in headline_phrases


def test_best_of_draws_more_only_while_too_few_are_usable(tiny_model_dir: Path, brief_en) -> None:
    generator = LMGenerator(tiny_model_dir, max_new_tokens=48, best_of=3.0)
    first = generator.generate(brief_en, 6, seed=5)
    again = generator.generate(brief_en, 6, seed=5)
    assert [c.text for c in first] == [c.text for c in again]  # same seed, same ads
    assert len(first) == 6 and all(c.seed == 5 for c in first)


def test_chinese_gift_phrase_only_for_a_brief_that_speaks_of_gifts() -> None:
    from adloop.generators import Brief
    from adloop.generators.skeleton import brief_phrases

    app = Brief(product="英语口语学习App", brand="言趣", language="zh", segments=["职场新人"])
    gifts = Brief(product="精品咖啡订阅", brand="北豆", language="zh", segments=["送礼人群"])
    assert "送礼佳选" not in brief_phrases(app)
    assert "送礼佳选" in brief_phrases(gifts)


def test_a_slot_keeps_one_stock_phrase_at_most() -> None:
    from types import SimpleNamespace

    from adloop.generators.skeleton import _distinct_phrases

    zh = SimpleNamespace(separators=("，",), leading_space=False)
    assert _distinct_phrases("诚意之作，专业团队，美好相伴", zh) == "诚意之作"
    assert _distinct_phrases("18K金项链，让美好发生，专业团队", zh) == "18K金项链，让美好发生"
    assert _distinct_phrases("18K金项链，高级珠宝定制", zh) == "18K金项链，高级珠宝定制"
    en = SimpleNamespace(separators=(".",), leading_space=True)
    kept = _distinct_phrases("Find out more today. See what's new", en)
    assert kept == "Find out more today"
    kept = _distinct_phrases("Made for hikers. Find out more today", en)
    assert kept == "Made for hikers. Find out more today"
