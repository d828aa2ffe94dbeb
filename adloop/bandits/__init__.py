"""Traffic allocation among ad variants: Thompson sampling, baselines, priors and stopping rules.

Pure numpy/scipy, no I/O.  Evidence comes in as :class:`ArmCounts` (aggregated, possibly
discounted counts per variant), policies turn it into traffic weights, a :class:`Snapshot` makes
O(log K) decisions with their propensities, and :func:`decide_winner` /
:func:`retire_candidates` say when to stop or drop an arm.

* Retired arms: mark them inactive in ``ArmCounts(active=...)`` (or :meth:`ArmCounts.retire`);
  they keep their row and index but get exactly zero traffic.  Leaving them out works too.
* New arms: ``ThompsonSampling`` gives them an empirical-Bayes prior fitted to the other arms.
* Non-stationary traffic: :class:`DiscountedCounts`, :class:`SlidingWindowCounts`,
  :func:`discounted_sums`, :func:`sliding_window_sums` (float counts are fine everywhere).
* Segments: ``ThompsonSampling.weights_by_segment`` shrinks each segment toward the campaign.
* Text-informed priors: :class:`TextPriorThompson` adds a copy scorer's calibrated evidence
  (:func:`fit_text_calibration`, :class:`TextEvidence`) to each arm's prior.
* Many problems at once: every policy's ``batch_weights(impressions, successes)`` computes the
  same allocation as ``weights`` for ``(n_problems, K)`` arrays (the simulator's fast mode and
  replay use it); :func:`batch_thompson_weights` is bare probability-best of Beta posteriors.
* Names: :data:`POLICIES` maps ``"ts"``, ``"uniform"``, ``"egreedy"``, ``"ucb1"`` to the classes.

>>> from adloop.bandits import ArmCounts, ThompsonSampling
>>> counts = ArmCounts(["v1", "v2"], impressions=[5000, 5000], clicks=[100, 160])
>>> snapshot = ThompsonSampling(seed=1).snapshot(counts)
>>> arm, probability = snapshot.choose(0.5)
>>> snapshot.arm_ids[arm]
'v2'
"""

from .batch import batch_thompson_weights
from .counts import (
    ArmCounts,
    DiscountedCounts,
    SlidingWindowCounts,
    decay_factor,
    discounted_sums,
    sliding_window_sums,
)
from .errors import BanditError, InvalidConfigError, InvalidCountsError, NoActiveArmsError
from .evaluation import RegretRun, bernoulli_kl, bernoulli_regret, lai_robbins_bound
from .policies import POLICIES, UCB1, EpsilonGreedy, Policy, ThompsonSampling, Uniform
from .posterior import (
    OBJECTIVES,
    Posterior,
    empirical_bayes_prior,
    posterior,
    posterior_summary,
)
from .segments import segment_priors
from .snapshot import Snapshot
from .stopping import (
    WinnerDecision,
    ZTestResult,
    decide_winner,
    planned_sample_size,
    retire_candidates,
    two_proportion_z_test,
)
from .text_prior import (
    TextCalibration,
    TextEvidence,
    TextPriorThompson,
    fit_text_calibration,
    text_prior,
)

__all__ = [
    "OBJECTIVES",
    "POLICIES",
    "ArmCounts",
    "BanditError",
    "DiscountedCounts",
    "EpsilonGreedy",
    "InvalidConfigError",
    "InvalidCountsError",
    "NoActiveArmsError",
    "Policy",
    "Posterior",
    "RegretRun",
    "SlidingWindowCounts",
    "Snapshot",
    "TextCalibration",
    "TextEvidence",
    "TextPriorThompson",
    "ThompsonSampling",
    "UCB1",
    "Uniform",
    "WinnerDecision",
    "ZTestResult",
    "batch_thompson_weights",
    "bernoulli_kl",
    "bernoulli_regret",
    "decay_factor",
    "decide_winner",
    "discounted_sums",
    "empirical_bayes_prior",
    "fit_text_calibration",
    "lai_robbins_bound",
    "planned_sample_size",
    "posterior",
    "posterior_summary",
    "retire_candidates",
    "segment_priors",
    "sliding_window_sums",
    "text_prior",
    "two_proportion_z_test",
]
