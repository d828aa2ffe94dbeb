"""The outcome scorer: learnt from arms' results, it ranks texts it has never seen.

Synthetic markets where one feature (a question mark, or addressing the reader) moves the CTR,
the tiny Llama from tests/tiny_llama.py for the language-model block, and, when present, the
real Upworthy archive (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_llama import build_tiny_llama

from adloop.generators import (
    ConfigError,
    OutcomeScorer,
    OutcomeScorerConfig,
    ScorerError,
    cross_fitted_predictions,
)
from adloop.generators.embeddings import CausalLMEmbedder

WORDS = ["rings", "gold", "atelier", "paris", "bridal", "necklace", "design", "love", "silver"]
FEATURES_ONLY = OutcomeScorerConfig(blocks=("features",))


def _effect(text: str) -> float:
    """True log-odds lift: a question wins, addressing the reader wins a little."""
    return 0.4 * text.endswith("?") + 0.2 * text.startswith("your ")


def _text(rng: np.random.Generator) -> str:
    words = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 5)), replace=False))
    if rng.random() < 0.5:
        words = "your " + words
    return words + ("?" if rng.random() < 0.5 else "")


def _market(seed: int, n_groups: int = 60, arms: int = 4, impressions: int = 20000):
    """Tests of ``arms`` texts each; every test has its own base rate."""
    rng = np.random.default_rng(seed)
    texts, groups, shown, clicks = [], [], [], []
    for g in range(n_groups):
        base = rng.uniform(-4.5, -3.5)
        for _ in range(arms):
            text = _text(rng)
            rate = 1 / (1 + np.exp(-(base + _effect(text))))
            texts.append(text)
            groups.append(f"test-{g}")
            shown.append(impressions)
            clicks.append(int(rng.binomial(impressions, rate)))
    return texts, groups, shown, clicks


def _pairwise_accuracy(scores: np.ndarray, truth: np.ndarray) -> float:
    i, j = np.triu_indices(len(truth), 1)
    differ = truth[i] != truth[j]
    return float((np.sign(scores[i] - scores[j]) == np.sign(truth[i] - truth[j]))[differ].mean())


def test_a_winning_feature_is_learnt_and_ranks_unseen_texts() -> None:
    scorer = OutcomeScorer(FEATURES_ONLY).fit(*_market(0))
    rng = np.random.default_rng(1)
    new = list(dict.fromkeys(_text(rng) for _ in range(60)))
    truth = np.array([_effect(t) for t in new])
    assert _pairwise_accuracy(scorer.predict(new), truth) > 0.9
    coefficients = scorer.feature_coefficients()
    assert next(iter(coefficients)) == "question"
    assert 0.25 < coefficients["question"] < 0.55  # 0.4 in truth
    assert coefficients["addresses the reader (you)"] > 0.08  # 0.2 in truth
    # Calibrated: the predicted gap between a question and the same text without is ~0.4.
    gap = scorer.predict(["gold rings?"])[0] - scorer.predict(["gold rings"])[0]
    assert 0.25 < gap < 0.55
    [explained] = scorer.explain(["your gold rings?"], top=2)
    assert [e["feature"] for e in explained] == ["question", "addresses the reader (you)"]
    assert explained[0]["effect"] > 0 and explained[0]["value"] == 1.0
    record = scorer.record
    assert record["validation"]["cv_pair_accuracy"] > 0.8
    assert record["arms"] == 240 and record["groups"] == 60


def test_nothing_to_learn_predicts_almost_nothing() -> None:
    """Texts that do not matter: the stacked weight shrinks predictions toward zero."""
    rng = np.random.default_rng(3)
    texts, groups, shown, clicks = [], [], [], []
    for g in range(60):
        for _ in range(4):
            texts.append(_text(rng))
            groups.append(g)
            shown.append(20000)
            clicks.append(int(rng.binomial(20000, 0.02)))
    scorer = OutcomeScorer(FEATURES_ONLY).fit(texts, groups, shown, clicks)
    assert np.abs(scorer.predict(texts)).max() < 0.05


def test_save_and_load_give_identical_predictions(tmp_path: Path) -> None:
    scorer = OutcomeScorer(FEATURES_ONLY).fit(*_market(0))
    scorer.save(tmp_path)
    meta = json.loads((tmp_path / "outcome_scorer.json").read_text())
    assert meta["format_version"] == 1 and len(meta["data_fingerprint"]) == 16
    assert meta["validation"]["cv_pair_accuracy"] > 0.8
    loaded = OutcomeScorer.load(tmp_path)
    texts = ["gold rings?", "your silver design", "paris love"]
    assert np.array_equal(loaded.predict(texts), scorer.predict(texts))
    assert loaded.explain(texts) == scorer.explain(texts)
    assert loaded.config == scorer.config


def test_cross_fitted_predictions_never_use_their_own_group() -> None:
    """Rewriting one test's clicks moves every other test's predictions but not its own."""
    texts, groups, shown, clicks = _market(0)
    before = cross_fitted_predictions(texts, groups, shown, clicks, config=FEATURES_ONLY)
    planted = list(clicks)
    own = np.array([g == "test-7" for g in groups])
    for i in np.flatnonzero(own):
        # A strong signal of the opposite sign: here questions lose badly.
        planted[i] = 100 if texts[i].endswith("?") else 2000
    after = cross_fitted_predictions(texts, groups, shown, planted, config=FEATURES_ONLY)
    assert np.array_equal(before[own], after[own])
    assert np.abs(before[~own] - after[~own]).max() > 1e-3
    truth = np.array([_effect(t) for t in texts])
    assert _pairwise_accuracy(before, truth) > 0.9
    again = cross_fitted_predictions(texts, groups, shown, clicks, config=FEATURES_ONLY)
    assert np.array_equal(before, again)


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    texts, groups, shown, clicks = _market(0, n_groups=3)
    with pytest.raises(ConfigError, match="differ in length"):
        OutcomeScorer(FEATURES_ONLY).fit(texts, groups[:-1], shown, clicks)
    with pytest.raises(ConfigError, match="clicks"):
        OutcomeScorer(FEATURES_ONLY).fit(texts, groups, shown, [s + 1 for s in shown])
    with pytest.raises(ConfigError, match="group"):
        OutcomeScorer(FEATURES_ONLY).fit(texts, list(range(len(texts))), shown, clicks)
    with pytest.raises(ConfigError, match="blocks"):
        OutcomeScorerConfig(blocks=("words",))
    with pytest.raises(ScorerError, match="not fitted"):
        OutcomeScorer(FEATURES_ONLY).predict(["gold"])
    with pytest.raises(ScorerError, match="no saved outcome scorer"):
        OutcomeScorer.load(tmp_path)
    with pytest.raises(ConfigError, match="folds"):
        cross_fitted_predictions(texts, groups, shown, clicks, folds=5, config=FEATURES_ONLY)


CORPUS = ["your gold rings?", "paris atelier design", "bridal silver necklace love"] * 4


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = build_tiny_llama(
        CORPUS,
        special_tokens=["<pad>", "<s>", "</s>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        vocab_size=300,
        num_hidden_layers=4,
    )
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def test_lm_embeddings_are_deterministic_and_cached(tiny_lm_dir: Path, tmp_path: Path) -> None:
    texts = ["your gold rings?", "paris atelier design", "love", "your gold rings?"]
    plain = CausalLMEmbedder(tiny_lm_dir, layers=(0.5, 0.75)).embed(texts)
    assert plain.shape == (4, 32) and plain.dtype == np.float32
    assert np.array_equal(plain[0], plain[3])
    assert np.array_equal(plain, CausalLMEmbedder(tiny_lm_dir, layers=(0.5, 0.75)).embed(texts))
    # One text alone (no padding) gives the vector it had in a batch.
    alone = CausalLMEmbedder(tiny_lm_dir, layers=(0.5, 0.75)).embed(["paris atelier design"])
    np.testing.assert_allclose(alone[0], plain[1], atol=1e-5)

    cache = tmp_path / "cache"
    first = CausalLMEmbedder(tiny_lm_dir, layers=(0.5, 0.75), cache_dir=cache).embed(texts)
    chunks = sorted(cache.rglob("chunk-*.npz"))
    assert len(chunks) == 1
    second = CausalLMEmbedder(tiny_lm_dir, layers=(0.5, 0.75), cache_dir=cache).embed(texts[:2])
    assert np.array_equal(first[:2], second)
    assert sorted(cache.rglob("chunk-*.npz")) == chunks  # read back, nothing recomputed
    CausalLMEmbedder(tiny_lm_dir, layers=(0.5, 0.75), cache_dir=cache).embed(["new text"])
    assert len(sorted(cache.rglob("chunk-*.npz"))) == 2
    # Other layers are other vectors, cached apart.
    other = CausalLMEmbedder(tiny_lm_dir, layers=(0.25,), cache_dir=cache).embed(texts[:1])
    assert not np.allclose(other[0], first[0])
    assert len({p.parent for p in cache.rglob("chunk-*.npz")}) == 2


def test_scorer_with_a_language_model_block_round_trips(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = OutcomeScorerConfig(blocks=("features", "lm"), lm_dir=str(tiny_lm_dir))
    scorer = OutcomeScorer(config, cache_dir=tmp_path / "cache").fit(*_market(0, n_groups=30))
    assert set(scorer.record["block_weights"]) == {"features", "lm"}
    assert scorer.record["embedders"]["lm"]["key"].startswith("lm:")
    scorer.save(tmp_path / "saved")
    loaded = OutcomeScorer.load(tmp_path / "saved")
    texts = ["gold rings?", "your silver design"]
    assert np.array_equal(loaded.predict(texts), scorer.predict(texts))

    meta_path = tmp_path / "saved" / "outcome_scorer.json"
    meta = json.loads(meta_path.read_text())
    meta["embedders"]["lm"]["key"] = "lm:another-model@00000000:mean-l0.5:skip1:t64"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ScorerError, match="refit"):
        OutcomeScorer.load(tmp_path / "saved")


@pytest.mark.slow
def test_features_rank_real_winners_above_chance(upworthy_path: Path) -> None:
    """On the Upworthy archive the interpretable features alone beat a coin (~0.6)."""
    import polars as pl

    frame = pl.read_parquet(upworthy_path)
    scorer = OutcomeScorer(FEATURES_ONLY).fit(
        frame["headline"].str.strip_chars().to_list(),
        frame["test_id"].to_list(),
        frame["impressions"].to_list(),
        frame["clicks"].to_list(),
    )
    validation = scorer.record["validation"]
    assert validation["cv_pairs"] > 1500
    assert validation["cv_pair_accuracy"] > 0.55
