"""Text-informed priors: calibration of a copy scorer, the policy, and ``ts_text`` in replay."""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adloop.bandits import (
    ArmCounts,
    InvalidConfigError,
    InvalidCountsError,
    TextEvidence,
    TextPriorThompson,
    ThompsonSampling,
    fit_text_calibration,
    text_prior,
)
from adloop.cli import app
from adloop.sim import (
    ReplayError,
    SimError,
    cross_fitted_posterior_scale,
    cross_fitted_prior,
    cross_fitted_text_evidence,
    cross_fitted_word_scores,
    load_tests,
    load_text_scorer,
    replay,
    simulate_batched,
)

BASE_LOGIT = np.log(0.014 / 0.986)


def _planted(rng, n_tests, n_arms=5, *, slope=0.3, residual_sd=0.1, score_sd=1.0, trials=20_000):
    """Tests whose arms' log-odds deviate from the test's by ``slope * score`` + noise."""
    scores = rng.normal(0.0, score_sd, (n_tests, n_arms))
    deviation = slope * scores + rng.normal(0.0, residual_sd, scores.shape)
    logit = rng.normal(BASE_LOGIT, 0.4, (n_tests, 1)) + deviation
    ctr = 1.0 / (1.0 + np.exp(-logit))
    clicks = rng.binomial(trials, ctr).astype(float)
    groups = np.repeat(np.arange(n_tests), n_arms)
    return scores, ctr, clicks, np.full(ctr.shape, float(trials)), groups


def ids(n: int) -> list[str]:
    return [f"v{i}" for i in range(n)]


def test_docstring_examples_run() -> None:
    # the package's ``text_prior`` is the function; the module is in sys.modules
    module = importlib.import_module("adloop.bandits.text_prior")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


# ------------------------------------------------------------------ calibration


def test_calibration_recovers_a_planted_slope_and_the_spread_it_explains() -> None:
    rng = np.random.default_rng(0)
    scores, _, clicks, trials, groups = _planted(rng, 1500, slope=0.3, residual_sd=0.1)
    fit = fit_text_calibration(scores.ravel(), clicks.ravel(), trials.ravel(), groups)
    assert fit.n_tests == 1500 and fit.n_arms == 7500
    assert fit.slope == pytest.approx(0.3, abs=0.01)
    assert fit.slope_z > 20 and fit.informative
    # true spread within a test: 0.3^2 * 1 + 0.1^2 = 0.1; after the scores: 0.01
    assert fit.between_variance == pytest.approx(0.1, rel=0.1)
    assert fit.residual_variance == pytest.approx(0.01, abs=0.004)
    assert fit.r_squared == pytest.approx(0.9, abs=0.05)
    assert fit.precision == pytest.approx(1 / fit.residual_variance - 1 / fit.between_variance)
    # as a measurement, the offset is the score read back on the log-odds scale
    evidence = fit.evidence(np.array([1.0, -1.0]))
    assert evidence.offsets[0] == pytest.approx(0.3 / 0.9, rel=0.1)
    assert evidence.offsets[1] == -evidence.offsets[0]


@pytest.mark.parametrize("seed", range(5))
def test_a_useless_scorer_is_not_trusted(seed: int) -> None:
    rng = np.random.default_rng(seed)
    _, _, clicks, trials, groups = _planted(rng, 600, slope=0.3)
    noise = rng.normal(size=clicks.size)  # scores that know nothing
    fit = fit_text_calibration(noise, clicks.ravel(), trials.ravel(), groups)
    assert not fit.informative and fit.slope_z < 2.0
    assert fit.precision == 0.0 and fit.trusted_slope == 0.0 and fit.r_squared == 0.0
    evidence = fit.evidence(noise.reshape(600, 5))
    assert np.all(evidence.offsets == 0.0) and np.all(evidence.precision == 0.0)
    constant = fit_text_calibration(np.zeros(clicks.size), clicks.ravel(), trials.ravel(), groups)
    assert constant.slope == 0.0 and constant.precision == 0.0


def test_a_weak_scorer_is_shrunk_toward_nothing() -> None:
    rng = np.random.default_rng(3)
    scores, _, clicks, trials, groups = _planted(rng, 800, slope=0.03, residual_sd=0.25)
    fit = fit_text_calibration(scores.ravel(), clicks.ravel(), trials.ravel(), groups)
    assert fit.informative
    assert 0 < fit.trusted_slope < fit.slope
    assert fit.trusted_slope == pytest.approx(fit.slope * (1 - 1 / fit.slope_z**2))
    assert 0 < fit.r_squared < 0.05


def test_calibration_rejects_bad_input_naming_the_problem() -> None:
    with pytest.raises(InvalidCountsError, match="same length"):
        fit_text_calibration(np.zeros(3), np.zeros(2), np.ones(3), np.zeros(3))
    with pytest.raises(InvalidCountsError, match="successes <= trials"):
        fit_text_calibration(np.zeros(2), np.array([5.0, 0]), np.ones(2), np.zeros(2))
    with pytest.raises(InvalidCountsError, match="two tests"):
        fit_text_calibration(np.zeros(2), np.zeros(2), np.full(2, 500.0), np.zeros(2))
    with pytest.raises(InvalidConfigError, match="min_z"):
        fit_text_calibration(np.zeros(4), np.zeros(4), np.ones(4), np.arange(4), min_z=-1)


# ------------------------------------------------------------------ the prior and the policy


def test_text_prior_adds_pseudo_counts_around_the_running_rate() -> None:
    base = (2.0, 98.0)
    evidence = TextEvidence(np.array([[0.4, 0.0, -0.4], [5.0, 0.0, -5.0]]), 10.0)
    impressions = np.array([[0.0] * 3, [10_000.0] * 3])
    clicks = np.array([[0.0] * 3, [300.0] * 3])
    alpha, beta = text_prior(impressions, clicks, evidence, base_prior=base, max_offset=1.0)
    pseudo = alpha - base[0] + beta - base[1]
    # as many impressions as 10 clicks' worth of log-odds precision at the running rate
    assert pseudo[0] == pytest.approx(np.full(3, 10 / (0.02 * 0.98)))
    # the running rate pools the arms: (3 x 300 clicks + 2) / (3 x 10,000 impressions + 100)
    running = 902 / 30_100
    assert pseudo[1] == pytest.approx(np.full(3, 10 / (running * (1 - running))))
    rate = (alpha - base[0]) / pseudo
    assert rate[0, 0] > rate[0, 1] > rate[0, 2]
    assert rate[0, 1] == pytest.approx(0.02)
    # offsets are clipped at max_offset
    logit = np.log(rate[1] / (1 - rate[1]))
    assert logit[0] - logit[1] == pytest.approx(1.0) and logit[1] - logit[2] == pytest.approx(1.0)
    # no precision, no change; a single problem as 1-d arrays
    nothing = text_prior([0, 0], [0, 0], TextEvidence(np.array([1.0, -1.0]), 0.0),
                         base_prior=(np.array([1.0, 2.0]), 3.0))  # fmt: skip
    assert nothing[0].tolist() == [1.0, 2.0] and nothing[1].tolist() == [3.0, 3.0]


def test_offsets_are_centred_over_active_arms_only() -> None:
    evidence = TextEvidence(np.array([0.5, 0.5, 3.0]), 20.0)
    active = np.array([True, True, False])
    alpha, beta = text_prior([0, 0, 0], [0, 0, 0], evidence, base_prior=(1.0, 99.0),
                             active=active)  # fmt: skip
    # the two active arms look alike to the scorer: both sit at the running rate
    assert alpha[0] / (alpha[0] + beta[0]) == pytest.approx(0.01)


def test_text_evidence_and_policy_reject_bad_settings() -> None:
    with pytest.raises(InvalidConfigError, match="offsets"):
        TextEvidence(np.array([np.nan, 0.0]), 1.0)
    with pytest.raises(InvalidConfigError, match="precision"):
        TextEvidence(np.zeros(2), -1.0)
    with pytest.raises(InvalidConfigError, match="strength_scale"):
        TextPriorThompson(strength_scale=-1.0)
    policy = TextPriorThompson(n_draws=50)
    with pytest.raises(InvalidConfigError, match="must match"):
        policy.batch_weights(
            np.ones((2, 3)), np.zeros((2, 3)), text=TextEvidence(np.ones((2, 2)), 1.0)
        )
    counts = ArmCounts(ids(2), impressions=[10, 10], clicks=[1, 1])
    with pytest.raises(InvalidConfigError, match="one value per arm"):
        policy.weights(counts, text=TextEvidence(np.ones(3), 1.0))


@pytest.mark.parametrize(
    "policy",
    [
        TextPriorThompson(n_draws=400),
        TextPriorThompson(n_draws=300, strength_scale=3.0, max_offset=0.5, floor=0.02),
        TextPriorThompson(n_draws=300, empirical_bayes=False, loss_threshold=0.0),
        TextPriorThompson(n_draws=300, posterior_scale=3.0),
    ],
    ids=repr,
)
def test_batch_row_is_the_single_problem_weights_from_the_same_draws(policy) -> None:
    rng = np.random.default_rng(8)
    for n_arms in (1, 3, 8):
        impressions = rng.integers(0, 5_000, (6, n_arms)).astype(float)
        clicks = rng.binomial(impressions.astype(int), 0.02).astype(float)
        offsets = rng.normal(0, 0.5, (6, n_arms))
        for i in range(6):
            seed = int(rng.integers(1 << 30))
            text = TextEvidence(offsets[i], 30.0)
            single = policy.weights(ArmCounts(ids(n_arms), impressions[i], clicks[i]), rng=seed,
                                    text=text)  # fmt: skip
            row = slice(i, i + 1)
            batch = policy.batch_weights(
                impressions[row], clicks[row], text=TextEvidence(offsets[row], 30.0), rng=seed
            )
            assert np.array_equal(batch[0], single)
            snapshot = policy.snapshot(ArmCounts(ids(n_arms), impressions[i], clicks[i]),
                                       rng=seed, text=text)  # fmt: skip
            np.testing.assert_allclose(snapshot.weights, single, rtol=0, atol=1e-12)


def test_without_text_evidence_the_policy_is_thompson_sampling() -> None:
    rng = np.random.default_rng(2)
    impressions = rng.integers(0, 5_000, (20, 4)).astype(float)
    clicks = rng.binomial(impressions.astype(int), 0.02).astype(float)
    prior = (np.full(20, 3.0), np.full(20, 200.0))
    plain = ThompsonSampling(n_draws=200).batch_weights(impressions, clicks, prior=prior, rng=5)
    zero = TextEvidence(rng.normal(size=(20, 4)), 0.0)
    policy = TextPriorThompson(n_draws=200)
    assert np.array_equal(policy.batch_weights(impressions, clicks, prior=prior, rng=5), plain)
    assert np.array_equal(
        policy.batch_weights(impressions, clicks, prior=prior, text=zero, rng=5), plain
    )
    counts = ArmCounts(ids(4), impressions[0], clicks[0])
    assert np.array_equal(
        policy.weights(counts, rng=4, text=TextEvidence(np.ones(4), 0.0)),
        ThompsonSampling(n_draws=200).weights(counts, rng=4),
    )


def test_a_strong_looking_newcomer_gets_traffic_sooner_and_a_weak_one_less() -> None:
    # two established arms at 2 %, and a new one the scorer likes (or dislikes)
    counts = ArmCounts(ids(3), impressions=[20_000, 20_000, 0], clicks=[400, 400, 0])
    policy = TextPriorThompson(n_draws=4000)
    plain = policy.weights(counts, rng=0)[2]
    liked = policy.weights(counts, rng=0, text=TextEvidence(np.array([0.0, 0.0, 0.5]), 20.0))[2]
    disliked = policy.weights(counts, rng=0, text=TextEvidence(np.array([0.0, 0.0, -0.5]), 20.0))
    assert liked > plain + 0.1 and disliked[2] < plain - 0.1


# ------------------------------------------------------------------ regret in simulation


def _regret_pair(rng, scorer_noise_sd: float | None, n_tests: int = 500):
    """Total regret of ts_eb and ts_text on tests like Upworthy's, scores of given quality."""

    def draw(n):
        deviation = rng.normal(0, 0.25, (n, 5))
        logit = rng.normal(BASE_LOGIT, 0.5, (n, 1)) + deviation
        noise = rng.normal(0, 1, (n, 5))
        scores = noise if scorer_noise_sd is None else deviation + scorer_noise_sd * noise
        return 1 / (1 + np.exp(-logit)), scores

    train_ctr, train_scores = draw(1500)
    trials = np.full(train_ctr.shape, 3_400.0)
    clicks = rng.binomial(3_400, train_ctr).astype(float)
    fit = fit_text_calibration(train_scores.ravel(), clicks.ravel(), trials.ravel(),
                               np.repeat(np.arange(1500), 5))  # fmt: skip
    alpha, beta = 4.0, 280.0  # about the archive's cross-test prior
    ctr, scores = draw(n_tests)
    horizons = np.full(n_tests, 17_000)
    settings = dict(n_updates=100, prior_alpha=alpha, prior_beta=beta)
    eb = simulate_batched(ctr, horizons, policy=ThompsonSampling(n_draws=64), rng=11, **settings)
    text = simulate_batched(ctr, horizons, policy=TextPriorThompson(n_draws=64), rng=11,
                            text=fit.evidence(scores), **settings)  # fmt: skip
    return float(eb.regret.sum()), float(text.regret.sum()), fit


@pytest.mark.parametrize("seed", [0, 1])
def test_an_informative_scorer_lowers_regret(seed: int) -> None:
    # scores correlated 0.7 with the arms' true deviations (r2 about 0.5)
    eb, text, fit = _regret_pair(np.random.default_rng(seed), scorer_noise_sd=0.25)
    assert 0.4 < fit.r_squared < 0.6
    assert text < 0.85 * eb


def test_a_useless_scorer_leaves_regret_as_ts_eb() -> None:
    eb, text, fit = _regret_pair(np.random.default_rng(4), scorer_noise_sd=None)
    assert not fit.informative
    assert text == eb  # the same draws: nothing was added to any prior


def test_simulate_batched_takes_text_evidence_only_for_the_text_policy() -> None:
    ctr = np.array([[0.02, 0.03]])
    with pytest.raises(SimError, match="TextPriorThompson"):
        simulate_batched(ctr, [1000], policy="ts", text=TextEvidence(np.zeros((1, 2)), 1.0))
    with pytest.raises(SimError, match="shape"):
        simulate_batched(ctr, [1000], policy=TextPriorThompson(),
                         text=TextEvidence(np.zeros((1, 3)), 1.0))  # fmt: skip


# ------------------------------------------------------------------ replay


def _archive(path: Path, rng, n_tests: int = 160) -> None:
    """Tests whose arms' headlines say how good they are: 'great' wins, 'dull' loses."""
    rows = []
    words = ["great", "fine", "dull"]
    lift = {"great": 0.3, "fine": 0.0, "dull": -0.3}
    for test in range(n_tests):
        base = rng.normal(BASE_LOGIT, 0.3)
        for arm in range(4):
            word = words[rng.integers(3)]
            logit = base + lift[word] + rng.normal(0, 0.1)
            impressions = int(rng.integers(2_000, 6_000))
            clicks = int(rng.binomial(impressions, 1 / (1 + np.exp(-logit))))
            headline = f"{word} story number {arm} about topic {test % 17}"
            rows.append((f"t{test}", headline, impressions, clicks))
    frame = pl.DataFrame(
        rows, schema=["test_id", "headline", "impressions", "clicks"], orient="row"
    )
    frame.write_parquet(path)


def test_word_scorer_is_cross_fitted_and_finds_a_planted_word(tmp_path: Path) -> None:
    _archive(tmp_path / "a.parquet", np.random.default_rng(0))
    frame = pl.read_parquet(tmp_path / "a.parquet")
    args = (frame["headline"].to_list(), frame["test_id"].to_list(),
            frame["impressions"].to_numpy(), frame["clicks"].to_numpy())  # fmt: skip
    scores = cross_fitted_word_scores(*args, folds=5, seed=0)
    great = frame["headline"].str.starts_with("great").to_numpy()
    dull = frame["headline"].str.starts_with("dull").to_numpy()
    assert scores[great].mean() > 0.1 > -0.1 > scores[dull].mean()
    # a test's own clicks never reach its own predictions
    clicks = args[3].copy()
    own = (frame["test_id"] == "t7").to_numpy()
    clicks[own] = args[2][own] // 2
    changed = cross_fitted_word_scores(*args[:3], clicks, folds=5, seed=0)
    assert np.array_equal(changed[own], scores[own])
    assert not np.allclose(changed[~own], scores[~own])


def test_text_evidence_is_calibrated_on_the_other_tests(tmp_path: Path) -> None:
    _archive(tmp_path / "a.parquet", np.random.default_rng(1))
    problems = load_tests(tmp_path / "a.parquet")
    scores = np.where(np.isnan(problems.ctr), 0.0, np.log(np.nan_to_num(problems.ctr) + 1e-3))
    evidence, fits = cross_fitted_text_evidence(problems, scores, seed=3)
    assert len(fits) == 2 and all(fit.informative for fit in fits)
    changed = problems.ctr.copy()
    changed[7, :2] = changed[7, :2] * 3  # test 7's own outcomes
    other = type(problems)(problems.test_ids, changed, problems.horizons, problems.n_arms,
                           problems.arm_impressions, problems.texts)  # fmt: skip
    evidence_changed, _ = cross_fitted_text_evidence(other, scores, seed=3)
    assert evidence_changed.precision[7] == evidence.precision[7]
    assert np.array_equal(evidence_changed.offsets[7], evidence.offsets[7])
    assert not np.array_equal(evidence_changed.precision, evidence.precision)


def test_replay_runs_ts_text_and_a_scorer_that_knows_nothing_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.parquet"
    _archive(path, np.random.default_rng(2))

    def knows_nothing(texts, groups, impressions, clicks, *, folds, seed):
        return np.zeros(len(texts))

    result = replay(path, policies=["ts_eb", "ts_text"], n_updates=30, n_draws=64,
                    text_scorer=knows_nothing, scale_grid=[1.0])  # fmt: skip
    policies = result.summary["policies"]
    assert policies["ts_text"]["regret"] == policies["ts_eb"]["regret"]
    assert result.summary["text"]["scorer"] == "knows_nothing"
    assert [fold["precision"] for fold in result.summary["text"]["calibration_by_fold"]] == [0, 0]
    words = replay(path, policies=["ts_eb", "ts_text"], n_updates=30, n_draws=64,
                   text_scorer=cross_fitted_word_scores, scale_grid=[1.0])  # fmt: skip
    assert all(fold["precision"] > 0 for fold in words.summary["text"]["calibration_by_fold"])
    assert words.summary["policies"]["ts_eb"]["regret"] == policies["ts_eb"]["regret"]
    assert words.summary["policies"]["ts_text"]["regret"] != policies["ts_eb"]["regret"]


def test_ts_text_without_text_is_ts_scaled_and_ts_scaled_at_scale_one_is_ts_eb(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.parquet"
    _archive(path, np.random.default_rng(4), n_tests=120)

    def knows_nothing(texts, groups, impressions, clicks, *, folds, seed):
        return np.zeros(len(texts))

    both = replay(path, policies=["ts_scaled", "ts_text"], n_updates=30, n_draws=64,
                  text_scorer=knows_nothing, scale_grid=[1.0, 3.0])  # fmt: skip
    policies = both.summary["policies"]
    assert policies["ts_text"]["regret"] == policies["ts_scaled"]["regret"]
    chosen = both.summary["posterior_scale_by_fold"]
    assert chosen["ts_text"] == chosen["ts_scaled"] and len(chosen["ts_scaled"]) == 2
    for fold in chosen["ts_scaled"]:  # each fold takes the scale that lost least elsewhere
        lost = fold["regret_on_other_tests"]
        assert set(lost) == {"1.0", "3.0"} and lost[str(fold["scale"])] == min(lost.values())
    plain = replay(path, policies=["ts_eb", "ts_scaled"], n_updates=30, n_draws=64,
                   scale_grid=[1.0])  # fmt: skip
    assert plain.summary["policies"]["ts_scaled"]["regret"] == plain.summary["policies"][
        "ts_eb"]["regret"]  # fmt: skip
    with pytest.raises(ReplayError, match="grid"):
        replay(path, policies=["ts_scaled"], scale_grid=[0.0])


def test_a_tests_posterior_scale_is_chosen_on_the_other_tests(tmp_path: Path) -> None:
    _archive(tmp_path / "a.parquet", np.random.default_rng(5), n_tests=120)
    problems = load_tests(tmp_path / "a.parquet")
    prior = cross_fitted_prior(problems, seed=1)
    scales, table = cross_fitted_posterior_scale(problems, prior, grid=[1.0, 4.0], n_updates=20,
                                                 n_draws=32, seed=1)  # fmt: skip
    folds = np.random.default_rng(1).permutation(problems.n_tests) % 2
    for fold in (0, 1):
        assert np.all(scales[folds == fold] == table[fold]["scale"])
    # rewriting fold 0's own outcomes changes what fold 1 is scored on, never fold 0's choice
    changed = problems.ctr.copy()
    changed[folds == 0] = changed[folds == 0][:, ::-1]
    other = type(problems)(problems.test_ids, changed, problems.horizons, problems.n_arms,
                           problems.arm_impressions, problems.texts)  # fmt: skip
    _, table_changed = cross_fitted_posterior_scale(other, prior, grid=[1.0, 4.0], n_updates=20,
                                                    n_draws=32, seed=1)  # fmt: skip
    assert table_changed[0] == table[0]
    assert table_changed[1]["regret_on_other_tests"] != table[1]["regret_on_other_tests"]


def test_a_narrowed_posterior_backs_the_leader_sooner() -> None:
    counts = ArmCounts(ids(3), impressions=[2_000, 2_000, 2_000], clicks=[40, 48, 36])
    shares = [TextPriorThompson(n_draws=4000, posterior_scale=scale).weights(counts, rng=0)[1]
              for scale in (1.0, 4.0, 16.0)]  # fmt: skip
    assert shares[0] + 0.05 < shares[1] <= shares[2]
    with pytest.raises(InvalidConfigError, match="posterior_scale"):
        TextPriorThompson(posterior_scale=0.0)
    with pytest.raises(InvalidConfigError, match="posterior_scale"):
        TextPriorThompson("value", posterior_scale=2.0)


def test_replay_needs_a_text_scorer_for_ts_text_and_says_so(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.parquet"
    _archive(path, np.random.default_rng(3), n_tests=40)
    with pytest.raises(ReplayError, match="text scorer"):
        replay(path, policies=["ts_text"])

    def broken(texts, groups, impressions, clicks, *, folds, seed):
        return np.zeros(3)

    with pytest.raises(ReplayError, match="one finite score per arm"):
        replay(path, policies=["ts_text"], text_scorer=broken)
    with pytest.raises(ReplayError, match="unknown text scorer"):
        load_text_scorer("gpt")
    runner = CliRunner()
    result = runner.invoke(app, ["sim", "replay", str(path), "--policies", "ts_text",
                                 "--text-scorer", "gpt"])  # fmt: skip
    assert result.exit_code == 2 and "unknown text scorer" in result.output
    # the outcome scorer missing: a clear error naming the stand-in, and auto falls back to it
    monkeypatch.setitem(sys.modules, "adloop.generators.outcome_scorer", None)
    result = runner.invoke(app, ["sim", "replay", str(path), "--policies", "ts_text",
                                 "--text-scorer", "outcome"])  # fmt: skip
    assert result.exit_code == 2 and "--text-scorer words" in result.output
    assert load_text_scorer("auto")[0] == "words"
    result = runner.invoke(app, ["sim", "replay", str(path), "--policies", "ts_eb,ts_text",
                                 "--updates", "20", "--draws", "32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "text scorer words" in result.output
