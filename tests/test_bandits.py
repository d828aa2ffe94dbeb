"""Fast behavioural tests of the bandits package (allocation, snapshots, priors, segments)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adloop import bandits
from adloop.bandits import (
    UCB1,
    ArmCounts,
    BanditError,
    DiscountedCounts,
    EpsilonGreedy,
    InvalidConfigError,
    InvalidCountsError,
    NoActiveArmsError,
    SlidingWindowCounts,
    Snapshot,
    ThompsonSampling,
    Uniform,
    batch_thompson_weights,
    discounted_sums,
    empirical_bayes_prior,
    planned_sample_size,
    posterior_summary,
    sliding_window_sums,
    two_proportion_z_test,
)


def ids(n: int) -> tuple[str, ...]:
    return tuple(f"v{i}" for i in range(n))


def test_docstring_examples_run():
    import doctest
    import importlib

    for name in (
        "batch",
        "counts",
        "evaluation",
        "policies",
        "posterior",
        "segments",
        "snapshot",
        "stopping",
    ):
        module = importlib.import_module(f"adloop.bandits.{name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
    assert doctest.testmod(bandits).failed == 0


def test_public_surface_is_importable_and_complete():
    for name in bandits.__all__:
        assert hasattr(bandits, name), name
    contract = {
        "ArmCounts",
        "ThompsonSampling",
        "Uniform",
        "EpsilonGreedy",
        "UCB1",
        "Snapshot",
        "WinnerDecision",
        "decide_winner",
        "retire_candidates",
        "empirical_bayes_prior",
        "BanditError",
        "posterior_summary",
        "batch_thompson_weights",
        "POLICIES",
    }
    assert contract <= set(bandits.__all__)
    assert {
        "ts": ThompsonSampling,
        "uniform": Uniform,
        "egreedy": EpsilonGreedy,
        "ucb1": UCB1,
    } == bandits.POLICIES


# --------------------------------------------------------------------------- counts


def test_arm_counts_reject_bad_input_naming_the_field():
    with pytest.raises(InvalidCountsError, match="clicks"):
        ArmCounts(ids(2), impressions=[10, 10], clicks=[1, -1])
    with pytest.raises(InvalidCountsError, match="impressions"):
        ArmCounts(ids(2), impressions=[10, np.nan], clicks=[1, 1])
    with pytest.raises(InvalidCountsError, match="shape"):
        ArmCounts(ids(2), impressions=[10, 10, 10], clicks=[1, 1])
    with pytest.raises(InvalidCountsError, match="unique"):
        ArmCounts(("a", "a"), impressions=[1, 1], clicks=[0, 0])
    assert issubclass(InvalidCountsError, BanditError)


def test_arm_counts_copy_inputs_and_accept_float_counts():
    impressions = np.array([10.5, 20.25])
    counts = ArmCounts(ids(2), impressions=impressions, clicks=[0.5, 1.5])
    impressions[0] = 99  # the caller's array stays theirs
    assert counts.impressions.tolist() == [10.5, 20.25]
    assert counts.conversions.tolist() == [0.0, 0.0]


def test_arm_counts_from_storage_frame():
    frame = pl.DataFrame(
        {
            "variant_id": ["v_a", "v_b"],
            "impressions": [100, 200],
            "clicks": [3, 9],
            "conversions": [1, 2],
            "value": [10.0, 30.0],
            "status": ["active", "retired"],
        }
    )
    counts = ArmCounts.from_frame(frame)
    assert counts.arm_ids == ("v_a", "v_b")
    assert counts.value.tolist() == [10.0, 30.0]
    assert counts.active.tolist() == [True, False]


# --------------------------------------------------------------------------- weights

POLICIES = [
    lambda floor: ThompsonSampling(floor=floor, n_draws=200, seed=1),
    lambda floor: ThompsonSampling(floor=floor, n_draws=200, top_two=True, seed=1),
    lambda floor: ThompsonSampling("value", floor=floor, n_draws=200, seed=1),
    lambda floor: Uniform(floor=floor, planned_impressions=50),
    lambda floor: EpsilonGreedy(floor=floor, epsilon=0.1),
    lambda floor: UCB1(floor=floor),
]


@st.composite
def arm_counts(draw):
    n_arms = draw(st.integers(1, 12))
    impressions = np.array(draw(st.lists(st.floats(0, 1e6), min_size=n_arms, max_size=n_arms)))
    ratios = np.array(draw(st.lists(st.floats(0, 1), min_size=n_arms, max_size=n_arms)))
    active = draw(st.lists(st.booleans(), min_size=n_arms, max_size=n_arms))
    if not any(active):
        active[draw(st.integers(0, n_arms - 1))] = True
    clicks = impressions * ratios
    conversions = clicks * 0.1
    value = conversions * draw(st.floats(0, 500))
    return ArmCounts(ids(n_arms), impressions, clicks, conversions, value, active=np.array(active))


@settings(max_examples=60, deadline=None)
@given(counts=arm_counts(), floor=st.floats(0, 0.6), which=st.integers(0, len(POLICIES) - 1))
def test_weights_sum_to_one_respect_floor_and_mask(counts, floor, which):
    weights = POLICIES[which](floor).weights(counts)
    n_active = int(counts.active.sum())
    assert weights.shape == (counts.n_arms,)
    assert abs(weights.sum() - 1.0) < 1e-9
    assert np.all(weights[~counts.active] == 0.0)
    effective_floor = min(floor, 1.0 / n_active)
    assert np.all(weights[counts.active] >= effective_floor - 1e-9)


@settings(max_examples=30, deadline=None)
@given(counts=arm_counts(), floor=st.floats(0, 0.3))
def test_batch_weights_sum_to_one_respect_floor_and_mask(counts, floor):
    alpha = np.stack([1 + counts.clicks] * 3)
    beta = np.stack([1 + counts.impressions - counts.clicks] * 3)
    active = np.stack([counts.active] * 3)
    weights = batch_thompson_weights(alpha, beta, rng=0, n_draws=50, floor=floor, active=active)
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert np.all(weights[~active] == 0.0)
    effective_floor = np.minimum(floor, 1.0 / active.sum(axis=1, keepdims=True))
    assert np.all((weights >= effective_floor - 1e-9) | ~active)


def test_retired_arm_gets_zero_traffic_even_when_it_is_the_best():
    counts = ArmCounts(ids(3), impressions=[5000, 5000, 5000], clicks=[100, 150, 400])
    retired = counts.retire(["v2"])
    for policy in (ThompsonSampling(seed=0, floor=0.05), Uniform(), EpsilonGreedy(), UCB1()):
        snapshot = policy.snapshot(retired)
        assert snapshot.weights[2] == 0.0
        arms, probabilities = snapshot.choose_many(200_000, np.random.default_rng(0))
        assert not np.any(arms == 2)
        assert all(snapshot.choose(u)[0] != 2 for u in np.linspace(0, 1, 1001)[:-1])
    with pytest.raises(NoActiveArmsError):
        ThompsonSampling().weights(counts.with_active([False, False, False]))


def test_same_seed_same_decisions_and_different_seed_differs():
    counts = ArmCounts(ids(5), impressions=[300] * 5, clicks=[6, 7, 8, 9, 10])
    first = ThompsonSampling(seed=42).snapshot(counts)
    second = ThompsonSampling(seed=42).snapshot(counts)
    other = ThompsonSampling(seed=43).snapshot(counts)
    assert np.array_equal(first.weights, second.weights)
    assert not np.array_equal(first.weights, other.weights)
    a = first.choose_many(1000, np.random.default_rng(7))
    b = second.choose_many(1000, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # an explicit rng wins over the policy's own generator
    policy = ThompsonSampling(seed=1)
    other_seed = ThompsonSampling(seed=9)
    assert np.array_equal(policy.weights(counts, rng=5), other_seed.weights(counts, 5))


def test_thompson_prefers_the_better_arm_and_is_calibrated_on_two_arms():
    counts = ArmCounts(ids(2), impressions=[2000, 2000], clicks=[40, 55])
    weights = ThompsonSampling(n_draws=200_000, empirical_bayes=False, seed=0).weights(counts)
    # P(theta_1 > theta_0) for Beta(56, 1946) vs Beta(41, 1961) by the normal approximation
    a, b = np.array([41.0, 56.0]), np.array([1961.0, 1946.0])
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    from scipy.stats import norm

    expected = norm.cdf((mean[1] - mean[0]) / np.sqrt(var.sum()))
    assert abs(weights[1] - expected) < 0.01


def test_top_two_gives_the_challenger_more_traffic():
    counts = ArmCounts(ids(3), impressions=[20000] * 3, clicks=[400, 480, 300])
    plain = ThompsonSampling(seed=0, n_draws=20_000).weights(counts)
    top_two = ThompsonSampling(seed=0, n_draws=20_000, top_two=True).weights(counts)
    assert plain[1] > 0.95
    assert 0.45 < top_two[1] < 0.55 and top_two[0] > 0.4


def test_invalid_configuration_names_field_and_value():
    with pytest.raises(InvalidConfigError, match="floor"):
        ThompsonSampling(floor=1.5)
    with pytest.raises(InvalidConfigError, match="objective"):
        ThompsonSampling("revenue")
    with pytest.raises(InvalidConfigError, match="n_draws"):
        ThompsonSampling(n_draws=0)
    with pytest.raises(InvalidConfigError, match="prior"):
        ThompsonSampling(prior=(0, 1))
    with pytest.raises(InvalidConfigError, match="epsilon"):
        EpsilonGreedy(epsilon=2)
    with pytest.raises(InvalidConfigError, match="planned_impressions"):
        Uniform(planned_impressions=0)


def test_repr_shows_the_configuration():
    assert "floor=0.05" in repr(ThompsonSampling(floor=0.05))


# ------------------------------------------------- practically tied arms (loss threshold)

# three arms 0.05 pp apart at 5 % after 100k impressions each: the leader's expected loss is
# under 1 % of its value, far below a threshold of caring of 5 %
TIED = ArmCounts(ids(3), impressions=[100_000] * 3, clicks=[5_000, 4_975, 4_950])


def tie_rule(*args, **kwargs) -> ThompsonSampling:
    """Thompson sampling with the practically-tied rule at its default threshold, spelled out."""
    return ThompsonSampling(*args, loss_threshold=0.05, **kwargs)


def test_practically_tied_arms_send_most_traffic_to_the_leader_but_keep_exploring():
    default = tie_rule(seed=0).weights(TIED)
    classic = ThompsonSampling(seed=0, loss_threshold=0.0).weights(TIED)
    assert classic[0] < 0.7  # probability matching spreads traffic over the near-tie
    assert default[0] > classic[0] + 0.2
    # the rest is probability matching scaled by the Thompson share, never below its minimum
    share = default[1:].sum() / classic[1:].sum()
    assert ThompsonSampling().min_thompson_share - 1e-9 <= share < 1.0
    np.testing.assert_allclose(default[1:], share * classic[1:])
    assert (default > 0).all()


def test_arms_outside_the_tie_keep_their_probability_matching_traffic():
    # C is 20 % below the leader but uncertain: explored as before, so evidence still builds up
    counts = ArmCounts(ids(3), impressions=[100_000, 100_000, 2_000], clicks=[5_000, 4_975, 80])
    default = tie_rule(seed=0).weights(counts)
    classic = ThompsonSampling(seed=0, loss_threshold=0.0).weights(counts)
    assert classic[2] > 0.01
    assert default[2] == pytest.approx(classic[2], abs=1e-12)
    assert default[1] < 0.5 * classic[1] and default[0] > classic[0]


def test_nothing_changes_while_more_than_the_threshold_is_at_stake():
    early = ArmCounts(ids(3), impressions=[300] * 3, clicks=[15, 18, 12])
    default = tie_rule(seed=0).weights(early)
    classic = ThompsonSampling(seed=0, loss_threshold=0.0).weights(early)
    np.testing.assert_array_equal(default, classic)
    # a clear winner: probability matching already puts (nearly) everything on it
    clear = ArmCounts(ids(3), impressions=[50_000] * 3, clicks=[2_500, 2_000, 1_500])
    assert tie_rule(seed=0).weights(clear)[0] > 0.999


def test_loss_threshold_zero_or_full_thompson_share_is_classic_thompson_sampling():
    classic = ThompsonSampling(seed=3, loss_threshold=0.0).weights(TIED)
    full_share = tie_rule(seed=3, min_thompson_share=1.0).weights(TIED)
    assert ThompsonSampling().loss_threshold == 0.05  # on by default
    np.testing.assert_array_equal(classic, full_share)
    exact = ThompsonSampling(n_draws=200_000, loss_threshold=0.0, seed=0).weights(TIED)
    # the leader's probability of being best (0.491 by numerical integration), not more
    assert exact[0] == pytest.approx(0.491, abs=0.01)


def test_loss_threshold_works_with_floors_top_two_segments_and_value():
    policy = tie_rule(seed=0, floor=0.05, top_two=True)
    weights = policy.weights(TIED)
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0.05 - 1e-12).all()
    assert weights[0] == weights.max()
    by_segment = policy.weights_by_segment({"all": TIED}, TIED)
    assert by_segment["all"].sum() == pytest.approx(1.0)
    value = ArmCounts(
        ids(2),
        impressions=[100_000] * 2,
        clicks=[0, 0],
        conversions=[500, 498],
        value=[5_000.0, 4_990.0],
    )
    weights = tie_rule("value", seed=0).weights(value)
    assert weights.sum() == pytest.approx(1.0) and (weights > 0).all()


def _random_problems(rng, n_problems, n_arms, *, all_active=False):
    """Counts of several problems on every scale, some arms untried, some inactive."""
    scale = rng.choice([0.0, 30.0, 500.0, 5_000.0, 200_000.0], size=(n_problems, n_arms))
    impressions = np.floor(scale * rng.random((n_problems, n_arms)))
    clicks = np.floor(impressions * rng.uniform(0.0, 0.1, size=(n_problems, n_arms)))
    active = (
        np.ones((n_problems, n_arms), bool) if all_active else rng.random(impressions.shape) < 0.8
    )
    active[:, 0] = True
    return impressions, clicks, active


DETERMINISTIC = [
    Uniform(),
    Uniform(planned_impressions=200, floor=0.02),
    EpsilonGreedy(),
    EpsilonGreedy(epsilon=0.3, floor=0.05),
    UCB1(),
    UCB1(exploration=1.0, floor=0.1),
]


@pytest.mark.parametrize("policy", DETERMINISTIC, ids=repr)
def test_batch_weights_equal_each_problems_own_weights_for_deterministic_policies(policy):
    rng = np.random.default_rng(11)
    for n_arms in (1, 2, 5, 12):
        impressions, clicks, active = _random_problems(rng, 8, n_arms)
        batch = policy.batch_weights(impressions, clicks, active=active)
        for i in range(8):
            counts = ArmCounts(ids(n_arms), impressions[i], clicks[i], active=active[i])
            single = policy.weights(counts)
            if active[i].all():
                assert np.array_equal(batch[i], single)
            else:  # same numbers, summed in another order
                np.testing.assert_allclose(batch[i], single, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "policy",
    [
        ThompsonSampling(n_draws=500),
        ThompsonSampling(empirical_bayes=False, floor=0.02, n_draws=300),
        ThompsonSampling("cvr", top_two=True, n_draws=300),
        ThompsonSampling(prior=(2.0, 60.0), loss_threshold=0.2, n_draws=300),
    ],
    ids=repr,
)
def test_thompson_batch_row_is_the_single_problem_weights_from_the_same_draws(policy):
    rng = np.random.default_rng(5)
    for n_arms in (1, 3, 10):
        impressions, successes, _ = _random_problems(rng, 6, n_arms, all_active=True)
        for i in range(6):
            counts = ArmCounts(
                ids(n_arms),
                impressions[i],
                clicks=successes[i] if policy.objective == "ctr" else successes[i] * 10,
                conversions=successes[i],
            )
            seed = int(rng.integers(1 << 30))
            single = policy.weights(counts, rng=seed)
            batch = policy.batch_weights(impressions[i : i + 1], successes[i : i + 1], rng=seed)
            assert np.array_equal(batch[0], single)


def test_thompson_batch_equals_single_weights_in_distribution_with_the_tie_rule():
    # rows 0-1: nine arms practically tied with the leader (the tie rule moves traffic);
    # row 2: a clear winner; row 3: a new arm behind established ones (empirical-Bayes
    # prior) and a retired arm
    impressions = np.array(
        [
            [200_000.0] * 4,
            [400_000.0, 400_000.0, 400_000.0, 400_000.0],
            [5_000.0, 5_000.0, 5_000.0, 5_000.0],
            [20_000.0, 20_000.0, 0.0, 8_000.0],
        ]
    )
    clicks = np.array(
        [
            [10_000.0, 9_990.0, 9_980.0, 9_970.0],
            [20_000.0, 20_010.0, 19_995.0, 20_005.0],
            [250.0, 200.0, 190.0, 180.0],
            [1_000.0, 900.0, 0.0, 400.0],
        ]
    )
    active = np.ones_like(impressions, dtype=bool)
    active[3, 3] = False
    policy = ThompsonSampling(n_draws=400)
    classic = ThompsonSampling(n_draws=400, loss_threshold=0.0)
    n_copies = 1000
    batch = policy.batch_weights(
        np.repeat(impressions, n_copies, axis=0),
        np.repeat(clicks, n_copies, axis=0),
        active=np.repeat(active, n_copies, axis=0),
        rng=3,
    ).reshape(4, n_copies, 4)
    assert np.all(batch[3, :, 3] == 0.0)
    for i in range(4):
        counts = ArmCounts(ids(4), impressions[i], clicks[i], active=active[i])
        single = np.array([policy.weights(counts, rng=seed) for seed in range(n_copies)])
        # the tie rule switches on in some draws and not others: compare means within five
        # standard errors of their difference (and 0.005 for the weights' 1/n_draws grain)
        standard_error = np.sqrt((batch[i].var(axis=0) + single.var(axis=0)) / n_copies)
        difference = np.abs(batch[i].mean(axis=0) - single.mean(axis=0))
        assert np.all(difference <= 5 * standard_error + 0.005), (i, difference, standard_error)
    # the tie rule is what the batch computes: the leader gets more than probability matching
    tied = ArmCounts(ids(4), impressions[0], clicks[0])
    matching = np.mean([classic.weights(tied, rng=seed) for seed in range(300)], axis=0)
    assert batch[0, :, 0].mean() > matching[0] + 0.1


def test_batch_weights_reject_bad_input_naming_the_problem():
    policy = EpsilonGreedy()
    with pytest.raises(InvalidCountsError, match="shape"):
        policy.batch_weights(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(InvalidCountsError, match="successes"):
        policy.batch_weights(np.ones((1, 2)), np.array([[1.0, -1.0]]))
    with pytest.raises(InvalidCountsError, match="active"):
        policy.batch_weights(np.ones((1, 2)), np.ones((1, 2)), active=np.ones((1, 3), bool))
    with pytest.raises(NoActiveArmsError, match="problem 1"):
        policy.batch_weights(
            np.ones((2, 2)), np.ones((2, 2)), active=np.array([[True, False], [False, False]])
        )
    with pytest.raises(InvalidConfigError, match="value"):
        ThompsonSampling("value").batch_weights(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(InvalidConfigError, match="prior alpha"):
        ThompsonSampling().batch_weights(np.ones((2, 2)), np.ones((2, 2)), prior=([1.0, 0.0], 1.0))


def test_empirical_bayes_prior_fits_each_row_of_a_batch_on_its_own():
    successes = np.array([[20.0, 30.0, 40.0], [5.0, 0.0, 0.0], [100.0, 100.0, 100.0]])
    trials = np.array([[1000.0] * 3, [1000.0, 10.0, 0.0], [1000.0] * 3])
    alpha, beta = empirical_bayes_prior(successes, trials)
    for i in range(3):
        assert (alpha[i], beta[i]) == pytest.approx(empirical_bayes_prior(successes[i], trials[i]))


def test_loss_threshold_configuration_is_checked_and_shown():
    for bad in (-0.01, float("nan"), float("inf"), "2%"):
        with pytest.raises(InvalidConfigError, match="loss_threshold"):
            ThompsonSampling(loss_threshold=bad)
    with pytest.raises(InvalidConfigError, match="min_thompson_share"):
        ThompsonSampling(min_thompson_share=1.5)
    text = repr(ThompsonSampling(loss_threshold=0.05, min_thompson_share=0.2))
    assert "loss_threshold=0.05" in text and "min_thompson_share=0.2" in text


# --------------------------------------------------------------------------- snapshot


@pytest.mark.parametrize("n_arms", [10, 1000])
def test_snapshot_single_decision_carries_its_probability(n_arms):
    # speed is measured in bench/bandits.py, not asserted here
    rng = np.random.default_rng(0)
    weights = rng.random(n_arms)
    weights /= weights.sum()
    snapshot = Snapshot(ids(n_arms), weights)
    chosen = np.array([snapshot.choose(u)[0] for u in rng.random(20_000).tolist()])
    # decisions follow the weights
    assert np.abs(np.bincount(chosen, minlength=n_arms) / 20_000 - weights).max() < 0.02
    arm, probability = snapshot.choose(0.5)
    assert probability == snapshot.weights[arm]
    assert snapshot.choose_id(0.5) == (snapshot.arm_ids[arm], probability)


def test_snapshot_batch_matches_weights_and_single_choice():
    weights = np.array([0.5, 0.0, 0.2, 0.3, 0.0])
    snapshot = Snapshot(ids(5), weights)
    arms, probabilities = snapshot.choose_many(400_000, np.random.default_rng(3))
    share = np.bincount(arms, minlength=5) / len(arms)
    assert np.all(np.abs(share - weights) < 0.004)
    assert np.array_equal(probabilities, weights[arms])
    single = (
        np.bincount(
            [snapshot.choose(u)[0] for u in np.random.default_rng(4).random(50_000)], minlength=5
        )
        / 50_000
    )
    assert np.all(np.abs(single - weights) < 0.01)
    assert snapshot.choose(0.0)[0] == 0 and snapshot.choose(np.nextafter(1.0, 0))[0] == 3


def test_snapshot_rejects_weights_that_do_not_sum_to_one():
    with pytest.raises(InvalidConfigError, match="sum"):
        Snapshot(ids(2), np.array([0.5, 0.6]))
    with pytest.raises(NoActiveArmsError):
        Snapshot(ids(2), np.array([0.0, 0.0]))


# --------------------------------------------------------------------------- priors


def test_empirical_bayes_prior_recovers_population_of_rates():
    rng = np.random.default_rng(0)
    true_rates = rng.beta(20, 980, size=200)  # mean 0.02, strength 1000
    trials = np.full(200, 50_000.0)
    successes = rng.binomial(50_000, true_rates).astype(float)
    alpha, beta = empirical_bayes_prior(successes, trials, max_strength=10_000)
    assert abs(alpha / (alpha + beta) - 0.02) < 0.001
    assert 600 < alpha + beta < 1600
    assert empirical_bayes_prior(np.array([0.0]), np.array([10.0])) == (1.0, 1.0)


def test_empirical_bayes_prior_is_for_new_arms_and_fades_with_their_own_evidence():
    counts = ArmCounts(ids(4), [20_000, 20_000, 0, 500], [400, 500, 0, 12])
    alpha, beta = ThompsonSampling().prior_for(counts)
    assert (alpha[:2] == 1).all() and (beta[:2] == 1).all()  # established: flat, own data rules
    assert alpha[2] / (alpha[2] + beta[2]) == pytest.approx(0.0225, abs=0.001)
    assert alpha[2] + beta[2] > alpha[3] + beta[3] > 2  # half-way arm: half the prior weight
    flat = ThompsonSampling(empirical_bayes=False).prior_for(counts)
    assert (flat[0] == 1).all() and (flat[1] == 1).all()


def test_added_arm_with_empirical_bayes_prior_is_neither_starved_nor_flooded():
    rng = np.random.default_rng(1)
    rates = np.array([0.020, 0.022, 0.025, 0.018, 0.021, 0.024, 0.019, 0.023])
    impressions = np.full(8, 20_000.0)
    clicks = rng.binomial(20_000, rates).astype(float)
    counts = ArmCounts(ids(9), np.append(impressions, 0), np.append(clicks, 0))
    eb = ThompsonSampling(seed=0, n_draws=20_000).weights(counts)
    flat = ThompsonSampling(seed=0, n_draws=20_000, empirical_bayes=False).weights(counts)
    assert flat[8] > 0.95  # the flat prior's 50 % mean floods a new arm
    assert 0.02 < eb[8] < 0.5  # EB: explored, but the proven arms keep most traffic

    # and then it earns (or loses) its traffic: a strong new arm ends up leading
    policy = ThompsonSampling(seed=0, n_draws=2000)
    impressions_now, clicks_now = counts.impressions.copy(), counts.clicks.copy()
    world = np.append(rates, 0.035)
    for _ in range(60):
        shown = rng.multinomial(
            1000, policy.weights(ArmCounts(ids(9), impressions_now, clicks_now))
        )
        impressions_now += shown
        clicks_now += rng.binomial(shown, world)
    final = policy.weights(ArmCounts(ids(9), impressions_now, clicks_now))
    assert final[8] > 0.9


def test_posterior_summary_intervals_cover_the_truth():
    rng = np.random.default_rng(5)
    hits_ctr = hits_value = 0
    trials = 300
    for _ in range(trials):
        p, mean_value = 0.03, 40.0
        n = 5000
        conversions = rng.binomial(n, p)
        value = rng.exponential(mean_value, conversions).sum()
        counts = ArmCounts(ids(1), [n], [conversions], [conversions], [value])
        ctr = posterior_summary(counts, "ctr")
        hits_ctr += ctr["low"][0] <= p <= ctr["high"][0]
        val = posterior_summary(counts, "value", rng=rng, n_draws=2000)
        hits_value += val["low"][0] <= p * mean_value <= val["high"][0]
    assert 0.91 <= hits_ctr / trials <= 0.99
    assert 0.90 <= hits_value / trials <= 0.99


def test_value_objective_prefers_more_value_per_impression_not_more_conversions():
    # arm 0 converts more often but at a third of the value
    counts = ArmCounts(
        ids(2),
        impressions=[20000, 20000],
        clicks=[600, 600],
        conversions=[300, 200],
        value=[300 * 10.0, 200 * 30.0],
    )
    assert ThompsonSampling("cvr", seed=0).weights(counts)[0] > 0.99
    assert ThompsonSampling("value", seed=0).weights(counts)[1] > 0.99


# --------------------------------------------------------------------------- segments


def test_thin_segment_borrows_strength_and_thick_segment_follows_its_data():
    rng = np.random.default_rng(0)
    segments = {}
    for name in ("north", "south", "east", "west"):  # agree with the campaign: arm 1 is better
        segments[name] = ArmCounts(
            ids(2), impressions=[10_000] * 2, clicks=rng.binomial(10_000, [0.010, 0.015])
        )
    # a segment with lots of evidence that really prefers arm 0
    segments["thick"] = ArmCounts(ids(2), impressions=[8000, 8000], clicks=[160, 80])
    # a thin segment where arm 0 got lucky on a handful of impressions, and a brand-new one
    segments["thin"] = ArmCounts(ids(2), impressions=[20, 20], clicks=[1, 0])
    segments["new"] = ArmCounts.zeros(ids(2))
    overall = segments["north"]
    for name in ("south", "east", "west", "thick", "thin"):
        overall = overall + segments[name]
    policy = ThompsonSampling(seed=0, n_draws=20_000)
    weights = policy.weights_by_segment(segments, overall)
    assert weights["thick"][0] > 0.99  # lots of its own evidence: follows it
    assert weights["north"][1] > 0.9
    # no evidence of its own: leans the campaign's way, as uncertain as segments differ
    assert weights["new"][1] > 0.6
    assert weights["thin"][1] > 0.5  # little evidence: pulled toward the campaign...
    alone = ThompsonSampling(seed=0, empirical_bayes=False).weights(segments["thin"])
    assert alone[0] > 0.7  # ...which on its own it would contradict, chasing noise


# --------------------------------------------------------------------------- non-stationarity


def test_stream_helpers_match_their_array_versions():
    rng = np.random.default_rng(0)
    steps = rng.integers(0, 100, size=(50, 3)).astype(float)
    stream = DiscountedCounts(ids(3), half_life=5)
    window = SlidingWindowCounts(ids(3), window=7)
    for t, row in enumerate(steps):
        stream.update(row, row * 0.1, elapsed=1)
        window.update(row, row * 0.1, at=t)
    assert np.allclose(stream.counts().impressions, discounted_sums(steps, 5)[-1])
    assert np.allclose(window.counts().impressions, sliding_window_sums(steps, 7)[-1])


def _swap_run(policy, counts_factory, seed):
    """A leads for 300 batches, then B; returns B's mean share over the 50 batches after."""
    before, after = np.array([0.05, 0.03]), np.array([0.03, 0.05])
    rng = np.random.default_rng(seed)
    store = counts_factory()
    shares = []
    for step in range(350):
        weights = policy.weights(store.counts(), rng)
        shown = rng.multinomial(1000, weights)
        clicks = rng.binomial(shown, before if step < 300 else after)
        store.update(shown, clicks)
        if step >= 300:
            shares.append(weights[1])
    return float(np.mean(shares))


def test_discounting_recovers_after_a_ctr_swap():
    class Undiscounted(DiscountedCounts):
        def update(self, impressions, clicks, conversions=None, value=None, *, elapsed=None):
            super().update(impressions, clicks, conversions, value, elapsed=0)

    policy = ThompsonSampling(seed=0, n_draws=1000, empirical_bayes=False)
    for seed in (0, 1):
        discounted = _swap_run(policy, lambda: DiscountedCounts(ids(2), half_life=20_000), seed)
        windowed = _swap_run(policy, lambda: SlidingWindowCounts(ids(2), window=50_000), seed)
        stale = _swap_run(policy, lambda: Undiscounted(ids(2), half_life=1), seed)
        # measured 0.57-0.80 of the traffic moves to the new leader (the mean over the first 50
        # batches after the swap, while the evidence turns), ~0.02 without forgetting
        assert discounted > 0.5
        assert windowed > 0.5
        assert stale < 0.2


# --------------------------------------------------------------------------- baselines


def test_uniform_is_a_fixed_horizon_test_then_ships_the_winner():
    policy = Uniform(planned_impressions=10_000)
    early = ArmCounts(ids(3), impressions=[5000] * 3, clicks=[100, 150, 110])
    assert np.allclose(policy.weights(early), 1 / 3)
    done = ArmCounts(ids(3), impressions=[10_000] * 3, clicks=[200, 300, 210])
    result = policy.test(done)
    assert result.winner == 1 and result.p_values[0] < 0.025 and result.p_values[2] < 0.025
    assert policy.weights(done).tolist() == [0.0, 1.0, 0.0]
    tie = ArmCounts(ids(2), impressions=[10_000] * 2, clicks=[200, 205])
    assert policy.test(tie).winner is None and policy.weights(tie).tolist() == [0.0, 1.0]


def test_two_proportion_z_test_and_sample_size():
    z, p = two_proportion_z_test(200, 10_000, 200, 10_000)
    assert z == 0 and p == 1
    z, p = two_proportion_z_test(260, 10_000, 200, 10_000)
    assert 2.8 < z < 2.9 and 0.004 < p < 0.006
    assert planned_sample_size(0.05, 0.005) > planned_sample_size(0.05, 0.01)
    assert planned_sample_size(0.05, 0.01, n_arms=5) > planned_sample_size(0.05, 0.01)


def test_ucb1_and_epsilon_greedy_try_untried_arms_first():
    counts = ArmCounts(ids(3), impressions=[100, 0, 100], clicks=[50, 0, 1])
    assert UCB1().weights(counts).tolist() == [0.0, 1.0, 0.0]
    assert EpsilonGreedy(epsilon=0.3).weights(counts)[1] == pytest.approx(0.8)
