"""Simulated campaigns: a text-aware audience, fast policy sweeps, replay of real tests, and
engine-mode runs that drive :class:`adloop.optimizer.Engine` on a simulated clock.

Public surface:

* :func:`features` — interpretable text features; :class:`World` — segments and the hidden
  scorer (an environment: ``reset(seed)``, ``step(...)``, :func:`check_world`).
* :class:`Scenario` / :func:`load_scenario` — YAML scenario files, validated.
* :func:`simulate` / :func:`simulate_batched` — fast, vectorized policy-only simulation of the
  engine's own policies (:data:`POLICIES`, :func:`make_policy`, from :mod:`adloop.bandits`).
* :func:`replay` — real A/B tests as bandit problems (:func:`cross_fitted_prior` for ``ts_eb``;
  :func:`cross_fitted_text_evidence` and a :data:`TextScorer` from :func:`load_text_scorer` for
  ``ts_text``; :func:`cross_fitted_posterior_scale` for ``ts_scaled`` and ``ts_text``).
* :func:`run_scenario` — engine mode (imports the optimizer lazily).
* :func:`compare_segment_copy` — per-segment copy against one shared pool, over fixed seeds.
* :func:`write_report` — ``summary.json``, PNG plots and ``report.html``.
"""

from adloop.sim.engine_run import EngineRunResult, RetrainHook, SimClock, run_scenario
from adloop.sim.errors import ReplayError, ScenarioError, SimError, WorldError
from adloop.sim.fast import (
    POLICIES,
    BatchedRun,
    FastResult,
    make_policy,
    simulate,
    simulate_batched,
)
from adloop.sim.features import DEFAULT_LEXICON, feature_names, features, language_of
from adloop.sim.replay import (
    REPLAY_POLICIES,
    ReplayProblems,
    ReplayResult,
    cross_fitted_posterior_scale,
    cross_fitted_prior,
    cross_fitted_text_evidence,
    load_tests,
    replay,
)
from adloop.sim.report import write_report
from adloop.sim.scenario import Scenario, load_scenario
from adloop.sim.segments import SegmentCopyComparison, compare_segment_copy
from adloop.sim.text_scorers import (
    TEXT_SCORERS,
    TextScorer,
    cross_fitted_word_scores,
    load_text_scorer,
)
from adloop.sim.world import Segment, StepResult, TrueRates, World, check_world, default_segments

__all__ = [
    "DEFAULT_LEXICON",
    "POLICIES",
    "REPLAY_POLICIES",
    "TEXT_SCORERS",
    "BatchedRun",
    "EngineRunResult",
    "FastResult",
    "ReplayError",
    "ReplayProblems",
    "ReplayResult",
    "RetrainHook",
    "Scenario",
    "ScenarioError",
    "SegmentCopyComparison",
    "Segment",
    "SimClock",
    "SimError",
    "StepResult",
    "TextScorer",
    "TrueRates",
    "World",
    "WorldError",
    "check_world",
    "compare_segment_copy",
    "default_segments",
    "cross_fitted_posterior_scale",
    "cross_fitted_prior",
    "cross_fitted_text_evidence",
    "cross_fitted_word_scores",
    "feature_names",
    "features",
    "language_of",
    "load_scenario",
    "load_tests",
    "load_text_scorer",
    "make_policy",
    "replay",
    "run_scenario",
    "simulate",
    "simulate_batched",
    "write_report",
]
