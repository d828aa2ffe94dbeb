"""The copy scorer: fitted on variants' results, it ranks texts it has never seen."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from adloop.generators.scorer import (
    DEFAULT_GROUP,
    DEFAULT_REDUNDANCY_PENALTY,
    SCORER_FILE,
    CopyScorer,
    fit_scorer,
    load_scorer,
)

FILLER = ["rings", "gold", "atelier", "paris", "bridal", "necklace", "design", "aurelle", "love"]


def _market(rng: np.random.Generator, n: int, effect, *, trials: int = 5000, base: float = 0.02):
    """``n`` random texts from FILLER (+ maybe 'bespoke'); clicks drawn from ``effect(text)``."""
    texts, successes = [], []
    for _ in range(n):
        words = list(rng.choice(FILLER, size=rng.integers(2, 6), replace=False))
        if rng.random() < 0.5:
            words.insert(int(rng.integers(0, len(words) + 1)), "bespoke")
        text = " ".join(words)
        logit = np.log(base / (1 - base)) + effect(text)
        successes.append(int(rng.binomial(trials, 1 / (1 + np.exp(-logit)))))
        texts.append(text)
    return texts, [trials] * n, successes


def _pairwise_accuracy(scorer: CopyScorer, texts: list[str], truth: np.ndarray) -> float:
    scores = scorer.score(texts)
    i, j = np.triu_indices(len(texts), 1)
    differ = truth[i] != truth[j]
    agree = np.sign(scores[i] - scores[j]) == np.sign(truth[i] - truth[j])
    return float(agree[differ].mean())


def test_a_winning_word_is_learnt_and_ranks_unseen_texts() -> None:
    effect = lambda text: 0.4 * ("bespoke" in text.split())  # noqa: E731
    texts, trials, successes = _market(np.random.default_rng(0), 30, effect)
    scorer = fit_scorer(texts, trials, successes)
    assert scorer.metrics["loo_spearman"] > 0.5
    assert scorer.weights["w:bespoke"] > 0.15  # 0.4 in truth, shrunk by the ridge
    new, _, _ = _market(np.random.default_rng(1), 40, effect)
    truth = np.array([effect(t) for t in new])
    assert _pairwise_accuracy(scorer, new, truth) > 0.9


def test_length_is_learnt_as_a_curve() -> None:
    """Texts near 20 characters win; the scorer prefers them to both shorter and longer ones."""
    effect = lambda text: -0.6 * abs(len(text) / 20 - 1)  # noqa: E731
    texts, trials, successes = _market(np.random.default_rng(2), 40, effect)
    scorer = fit_scorer(texts, trials, successes)
    short, right, long = "gold rings", "bespoke gold rings", "gold rings from our paris atelier now"
    scores = scorer.score([short, right, long])
    assert scores[1] > scores[0] and scores[1] > scores[2]


def test_leave_one_out_tells_signal_from_noise() -> None:
    """Over 20 markets each: near zero when no feature explains the rates, high when one does."""
    effect = lambda text: 0.4 * ("bespoke" in text.split())  # noqa: E731
    noise, signal = [], []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        texts, trials, _ = _market(rng, 30, lambda text: 0.0)
        successes = [int(rng.binomial(5000, 0.02)) for _ in texts]
        noise.append(fit_scorer(texts, trials, successes).metrics["loo_spearman"])
        signal.append(fit_scorer(*_market(rng, 30, effect)).metrics["loo_spearman"])
    assert abs(np.mean(noise)) < 0.1
    assert np.mean(signal) > 0.5


def test_campaigns_with_different_base_rates_pool_on_what_they_share() -> None:
    """Campaign B's rates are 3x A's; within each, 'bespoke' wins. Only the word is learnt."""
    effect = lambda text: 0.4 * ("bespoke" in text.split())  # noqa: E731
    a = _market(np.random.default_rng(4), 16, effect, base=0.01)
    b = _market(np.random.default_rng(5), 16, effect, base=0.03)
    groups = ["a"] * 16 + ["b"] * 16
    scorer = fit_scorer(a[0] + b[0], a[1] + b[1], a[2] + b[2], groups)
    assert scorer.weights["w:bespoke"] > 0.2
    assert scorer.metrics["loo_spearman"] > 0.5


def test_chinese_copy_is_scored_by_character_pairs() -> None:
    rng = np.random.default_rng(6)
    stems = ["巴黎工坊", "十八K金", "婚戒系列", "项链臻品", "奥蕾尔"]
    texts, successes = [], []
    for i in range(30):
        text = "".join(rng.choice(stems, size=2, replace=False)) + ("定制" if i % 2 else "")
        texts.append(text)
        successes.append(int(rng.binomial(5000, 0.03 if i % 2 else 0.02)))
    scorer = fit_scorer(texts, [5000] * 30, successes)
    assert scorer.weights.get("c:定制", 0.0) > 0.1
    scores = scorer.score(["婚戒定制", "婚戒系列"])
    assert scores[0] > scores[1]


def test_selection_trades_score_for_variety() -> None:
    """Three near-copies of the best pattern and two different, slightly worse texts: best-of-n
    takes the copies; the selection takes one copy and the different ones."""
    scorer = CopyScorer(
        weights={"w:bespoke": 1.0, "w:gold": 0.6}, length_coef=(0.0, 0.0), length_mean=20.0,
        length_sd=10.0,
    )  # fmt: skip
    texts = [
        "bespoke rings made in paris",
        "bespoke rings made in paris.",
        "bespoke rings made in paris now",
        "gold necklaces for the bride",
        "gold bands crafted by hand",
        "bespoke rings made in paris",  # an exact repeat is never picked twice
    ]
    assert scorer.rank(texts)[:3] == [0, 1, 2]
    picked = scorer.select(texts, 3)
    assert picked[0] == 0 and set(picked[1:]) == {3, 4}
    assert scorer.select(texts, 2, eligible=[False, True, True, True, True, True]) == [1, 3]
    assert len(scorer.select(texts, 10)) == 5
    assert replace(scorer, redundancy_penalty=0.0).select(texts, 3) == [0, 1, 2]
    # With groups of one, no pick is compared with another: best-of-n.
    assert replace(scorer, group=1).select(texts, 3) == [0, 1, 2]


def test_selection_keeps_any_window_of_picks_varied() -> None:
    """Among texts where the best-scoring ones are near-copies, any ``group`` consecutive picks
    hold far more distinct character trigrams than best-of-n's, and the best text comes first."""
    rng = np.random.default_rng(3)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(40)]
    texts = [" ".join(rng.choice(words, 4, replace=False)) for _ in range(60)]
    texts = [t + " bespoke" * (i % 3 == 0) for i, t in enumerate(texts)]
    texts[1:6] = [texts[0] + "!" * k for k in range(1, 6)]  # near-copies of a bespoke text
    scorer = CopyScorer(weights={"w:bespoke": 1.0}, length_coef=(0.0, 0.0), length_mean=30.0,
                        length_sd=10.0)  # fmt: skip

    def worst_window(picked: list[int]) -> float:
        shares = []
        for start in range(len(picked) - DEFAULT_GROUP + 1):
            group = [texts[i] for i in picked[start : start + DEFAULT_GROUP]]
            grams = [t[i : i + 3] for t in group for i in range(len(t) - 2)]
            shares.append(len(set(grams)) / len(grams))
        return min(shares)

    picked = scorer.select(texts, 4 * DEFAULT_GROUP)
    best_of_n = replace(scorer, redundancy_penalty=0.0).select(texts, 4 * DEFAULT_GROUP)
    assert len(picked) == 4 * DEFAULT_GROUP and picked[0] == 0
    assert worst_window(best_of_n) < 0.4 < 0.8 < worst_window(picked)


def test_save_and_load_round_trip(tmp_path) -> None:
    texts, trials, successes = _market(np.random.default_rng(7), 20, lambda t: 0.3 * len(t) / 30)
    scorer = fit_scorer(texts, trials, successes, oversample=3)
    path = scorer.save(tmp_path)
    assert path.name == SCORER_FILE
    loaded = load_scorer(tmp_path)
    assert loaded is not None and loaded.oversample == 3
    assert (loaded.redundancy_penalty, loaded.group) == (scorer.redundancy_penalty, scorer.group)
    assert np.allclose(loaded.score(texts), scorer.score(texts))
    assert loaded.metrics == scorer.metrics
    assert load_scorer(tmp_path / "nowhere") is None


def test_a_penalty_saved_for_another_redundancy_measure_is_not_reused(tmp_path) -> None:
    """A scorer file from before redundancy was the share of repeated trigrams in a window held
    a penalty on another scale (Jaccard overlap): it loads with the current defaults."""
    texts, trials, successes = _market(np.random.default_rng(7), 20, lambda t: 0.3 * len(t) / 30)
    scorer = replace(fit_scorer(texts, trials, successes), redundancy_penalty=2.5, group=4)
    data = json.loads(scorer.save(tmp_path).read_text())
    loaded = load_scorer(tmp_path)
    assert (loaded.redundancy_penalty, loaded.group) == (2.5, 4)
    del data["redundancy"], data["group"]
    data.update(redundancy_penalty=6.0, overlap="char-trigram-jaccard")
    (tmp_path / SCORER_FILE).write_text(json.dumps(data))
    loaded = load_scorer(tmp_path)
    assert (loaded.redundancy_penalty, loaded.group) == (DEFAULT_REDUNDANCY_PENALTY, DEFAULT_GROUP)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(texts=["a", "b"], trials=[10, 10], successes=[1, 1]), "at least 3 variants"),
        (dict(texts=["a", "b", "c"], trials=[10, 10], successes=[1, 1, 1]), "differ in length"),
        (dict(texts=["a", "b", "c"], trials=[10, 10, 10], successes=[1, 11, 1]), "successes"),
        (dict(texts=["a", "b", "c"], trials=[10, 0, 10], successes=[1, 0, 1]), "trials > 0"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_scorer(**kwargs)


def test_function_words_are_not_features() -> None:
    """'the' in every loser and 'bespoke' in every winner: only the content word is learnt."""
    texts = [f"the {w} rings" for w in FILLER[:5]] + [f"bespoke {w} rings" for w in FILLER[:5]]
    successes = [60] * 5 + [120] * 5
    scorer = fit_scorer(texts, [5000] * 10, successes)
    assert "w:the" not in scorer.weights
    assert scorer.weights["w:bespoke"] > 0
