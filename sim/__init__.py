"""Simulated campaigns: a text-aware audience, fast policy sweeps, replay of real tests, and
engine-mode runs that drive :class:`adloop.optimizer.Engine` on a simulated clock.

Public surface:

* :func:`features` — interpretable text features; :class:`World` — segments and the hidden
  scorer (an environment: ``reset(seed)``, ``step(...)``, :func:`check_world`).
* :class:`Scenario` / :func:`load_scenario` — YAML scenario files, validated.
* :func:`simulate` / :func:`simulate_batched` — fast, vectorized policy-only simulation.
* :func:`replay` — real A/B tests as bandit problems.
* :func:`run_scenario` — engine mode (imports the optimizer lazily).
* :func:`write_report` — ``summary.json``, PNG plots and ``report.html``.
"""

from adloop.sim.engine_run import EngineRunResult, RetrainHook, SimClock, run_scenario
from adloop.sim.errors import ReplayError, ScenarioError, SimError, WorldError
from adloop.sim.fast import POLICIES, BatchedRun, FastResult, simulate, simulate_batched
from adloop.sim.features import DEFAULT_LEXICON, feature_names, features, language_of
from adloop.sim.replay import (
    REPLAY_POLICIES,
    ReplayResult,
    empirical_bayes_prior,
    load_tests,
    replay,
)
from adloop.sim.report import write_report
from adloop.sim.scenario import Scenario, load_scenario
from adloop.sim.world import Segment, StepResult, TrueRates, World, check_world, default_segments

__all__ = [
    "DEFAULT_LEXICON",
    "POLICIES",
    "REPLAY_POLICIES",
    "BatchedRun",
    "EngineRunResult",
    "FastResult",
    "ReplayError",
    "ReplayResult",
    "RetrainHook",
    "Scenario",
    "ScenarioError",
    "Segment",
    "SimClock",
    "SimError",
    "StepResult",
    "TrueRates",
    "World",
    "WorldError",
    "check_world",
    "default_segments",
    "empirical_bayes_prior",
    "feature_names",
    "features",
    "language_of",
    "load_scenario",
    "load_tests",
    "replay",
    "run_scenario",
    "simulate",
    "simulate_batched",
    "write_report",
]
