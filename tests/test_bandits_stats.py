"""Statistical tests of the bandits package: stopping rules, retirement and regret.

Fixed seeds and many trials so none is flaky; the long regret runs are marked ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

from adloop.bandits import (
    UCB1,
    ArmCounts,
    EpsilonGreedy,
    ThompsonSampling,
    Uniform,
    batch_thompson_weights,
    bernoulli_regret,
    decide_winner,
    lai_robbins_bound,
    retire_candidates,
)


def ids(n: int) -> tuple[str, ...]:
    return tuple(f"v{i}" for i in range(n))


# --------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("means", [[0.02, 0.03], [0.05] + [0.04] * 9])
def test_stopping_rule_declares_the_true_best_on_easy_problems(means):
    means = np.array(means)
    declared = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        policy = ThompsonSampling(n_draws=1000)
        impressions, clicks = np.zeros(len(means)), np.zeros(len(means))
        decision = None
        for step in range(1, 1001):
            counts = ArmCounts(ids(len(means)), impressions, clicks)
            shown = rng.multinomial(1000, policy.weights(counts, rng))
            impressions += shown
            clicks += rng.binomial(shown, means)
            if step % 5 == 0:
                decision = decide_winner(
                    ArmCounts(ids(len(means)), impressions, clicks), n_draws=4000, rng=rng
                )
                if decision.winner is not None:
                    break
        declared.append(decision.winner)
        assert decision.value_remaining < 0.01
        assert decision.expected_loss[0 if decision.winner else 1] >= 0
    assert declared == [int(np.argmax(means))] * 10


@pytest.mark.parametrize("n_arms", [2, 4])
def test_stopping_rule_on_aa_tests_declares_at_no_more_than_its_nominal_rate(n_arms):
    """A/A, one look: some arm is declared with frequency <= 1 - threshold (the rule's nominal
    rate, split over the arms).  2,000 seeded trials per case."""
    rng = np.random.default_rng(1234 + n_arms)
    trials, threshold = 2000, 0.95
    per_arm = np.zeros(n_arms)
    for _ in range(trials):
        clicks = rng.binomial(20_000, 0.03, size=n_arms)
        decision = decide_winner(
            ArmCounts(ids(n_arms), [20_000] * n_arms, clicks),
            threshold=threshold,
            n_draws=2000,
            rng=rng,
        )
        if decision.winner is not None:
            per_arm[decision.winner] += 1
    nominal = 1 - threshold
    tolerance = 3 * np.sqrt(nominal * (1 - nominal) / trials)  # three standard errors
    assert per_arm.sum() / trials <= nominal + tolerance


def test_decision_reports_probability_best_expected_loss_and_reason():
    counts = ArmCounts(
        ids(3),
        impressions=[10_000] * 3,
        clicks=[300, 310, 100],
        active=np.array([True, True, False]),
    )
    decision = decide_winner(counts, rng=0)
    assert decision.winner is None and "probability best" in decision.reason
    assert decision.probability_best[2] == 0 and np.isnan(decision.expected_loss[2])
    assert abs(decision.probability_best.sum() - 1) < 1e-9
    assert decision.best in (0, 1)
    assert decision.expected_loss[decision.best] < decision.expected_loss[1 - decision.best]
    thin = decide_winner(
        ArmCounts(ids(2), [10_000, 10_000], [100, 300]), min_impressions=50_000, rng=0
    )
    assert thin.winner is None and "fewer than" in thin.reason


def test_value_remaining_can_stop_a_practically_tied_test_with_a_lax_threshold():
    # two arms within 0.1 % of each other and tight posteriors: probability best ~ 0.6
    counts = ArmCounts(ids(2), [5e7, 5e7], [1_500_000, 1_500_500])
    strict = decide_winner(counts, rng=0)
    lax = decide_winner(counts, threshold=0.5, familywise=False, rng=0)
    assert strict.winner is None
    assert lax.value_remaining < 0.01 and lax.winner == lax.best


def test_retire_candidates_picks_clear_losers_only_after_enough_evidence():
    counts = ArmCounts(ids(4), impressions=[20_000] * 4, clicks=[600, 620, 300, 610])
    assert retire_candidates(counts, rng=0) == [2]
    early = ArmCounts(ids(4), impressions=[500] * 4, clicks=[15, 16, 2, 15])
    assert retire_candidates(early, rng=0) == []
    assert retire_candidates(early, min_impressions=100, floor=0.05, rng=0) == [2]


# --------------------------------------------------------------------------- batch helper


def test_batch_weights_agree_with_thompson_sampling():
    impressions = np.array([2000.0, 2500.0, 20.0, 3000.0])
    clicks = np.array([60.0, 90.0, 1.0, 95.0])
    counts = ArmCounts(ids(4), impressions, clicks)
    exact = ThompsonSampling(n_draws=200_000, empirical_bayes=False, seed=0).weights(counts)
    alpha = np.tile(1 + clicks, (400, 1))
    beta = np.tile(1 + impressions - clicks, (400, 1))
    batch = batch_thompson_weights(alpha, beta, rng=0, n_draws=500).mean(axis=0)
    assert np.all(np.abs(batch - exact) < 0.01)


# --------------------------------------------------------------------------- regret

EQUAL_GAPS = {
    "equal gap 0.5 pp": np.array([0.05] + [0.045] * 9),
    "equal gap 0.1 pp": np.array([0.05] + [0.049] * 9),
}
SPACED_GAPS = {
    "spaced 0.5 pp": 0.05 - 0.005 * np.arange(10),
    "spaced 0.1 pp": 0.05 - 0.001 * np.arange(10),
}


def _mean_regret(make_policy, means, horizon, seeds):
    return float(
        np.mean(
            [
                bernoulli_regret(
                    make_policy(), means, horizon=horizon, batch_size=1000, seed=seed
                ).final_regret
                for seed in seeds
            ]
        )
    )


def _check_beats_uniform(ts, uniform, means, horizon, fraction):
    """Regret well below an equal split's, and below the Lai-Robbins bound where it says more.

    An equal split loses ``horizon * mean gap``; the asymptotic bound only says something a
    uniform split would fail where it lies below that, so it is checked only there.
    """
    assert ts < fraction * uniform
    bound = lai_robbins_bound(means, horizon)
    if bound < uniform:
        assert ts <= bound


def _check_thompson_regret(means, horizon, seeds, *, fraction, rivals=(UCB1, EpsilonGreedy)):
    """Thompson sampling's mean regret beats uniform (as above) and each rival; returns it."""
    ts = _mean_regret(ThompsonSampling, means, horizon, seeds)
    _check_beats_uniform(ts, _mean_regret(Uniform, means, horizon, seeds), means, horizon, fraction)
    for rival in rivals:
        assert ts < _mean_regret(rival, means, horizon, seeds), rival.__name__
    return ts


def test_thompson_regret_small_version():
    # ten seeds: regret is heavy-tailed (one unlucky start costs ~1,000 clicks), and three
    # seeds let a single tail decide the comparison.  Measured: ~370 against uniform's 900.
    means, horizon, seeds = EQUAL_GAPS["equal gap 0.5 pp"], 200_000, range(10)
    _check_thompson_regret(means, horizon, seeds, fraction=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["equal gap 0.5 pp", "spaced 0.5 pp", "spaced 0.1 pp"])
def test_thompson_regret_full_horizon(name):
    # measured over these seeds: ~580, ~230 and ~560 clicks against uniform's 4,500, 22,500
    # and 4,500, each below the Lai-Robbins bound (2,286, 657, 3,637)
    means = {**EQUAL_GAPS, **SPACED_GAPS}[name]
    horizon, seeds = 1_000_000, range(5)
    _check_thompson_regret(means, horizon, seeds, fraction=0.25)


@pytest.mark.slow
def test_thompson_regret_on_the_near_tie_problem():
    """Nine arms 0.1 pp below the best: at T = 1e6 the problem is pre-asymptotic (the
    Lai-Robbins bound, ~11.7 k, exceeds uniform allocation's 900, so it is not checked), and
    classic probability matching keeps spreading traffic over the near-tie (~760 clicks over
    30 seeds) while follow-the-leader policies lose less.  The default policy cuts exploration
    among practically tied arms and loses less than classic Thompson sampling, UCB1 and
    uniform (measured: ~530 against uniform's 900)."""
    means, horizon, seeds = EQUAL_GAPS["equal gap 0.1 pp"], 1_000_000, range(5)
    ts = _check_thompson_regret(means, horizon, seeds, fraction=0.7, rivals=(UCB1,))
    assert ts < _mean_regret(lambda: ThompsonSampling(loss_threshold=0.0), means, horizon, seeds)
