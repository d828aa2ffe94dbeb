"""Replay of real A/B tests: each archived test becomes a bandit problem.

Input: a Parquet file with one row per (test, variant) and at least the columns ``test_id``,
``headline``, ``impressions`` and ``clicks`` (the schema of the Upworthy Research Archive;
other columns are ignored). Each test becomes a Bernoulli bandit whose arms are its rows, with
true CTR ``clicks / impressions`` and horizon the test's total impressions. Each policy runs
with ``n_updates`` batched posterior updates per test (see :mod:`adloop.sim.fast`), and is scored in
expected clicks against the oracle that shows the best arm to everyone:

* ``regret = oracle_clicks - clicks``
* ``regret_reduction_vs_uniform = 1 - regret / regret_of_uniform``: the share of the clicks an
  equal split leaves on the table that the policy recovers.

Policies are the engine's own (:data:`adloop.bandits.POLICIES`: ``ts``, ``uniform``,
``egreedy``, ``ucb1``, with the engine's defaults; ``ts`` includes the practically-tied rule), plus
``ts_eb``: the same Thompson sampling under a Beta prior learned across tests —
:func:`adloop.bandits.empirical_bayes_prior` fitted to the arms of the *other* half of the tests
(two-fold cross-fitting, :func:`cross_fitted_prior`, so no test informs its own prior).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adloop.bandits import empirical_bayes_prior
from adloop.sim.errors import ReplayError, SimError
from adloop.sim.fast import make_policy, simulate_batched

__all__ = [
    "REPLAY_POLICIES",
    "ReplayProblems",
    "ReplayResult",
    "cross_fitted_prior",
    "load_tests",
    "replay",
]

#: The engine's policies (:data:`adloop.bandits.POLICIES`) and ``ts_eb``.  A policy's place
#: here picks its random stream, so the order is kept and published figures reproduce.
REPLAY_POLICIES: tuple[str, ...] = ("ts", "ts_eb", "uniform", "ucb1", "egreedy")
_REQUIRED = ("test_id", "headline", "impressions", "clicks")


@dataclass(frozen=True)
class ReplayProblems:
    """Tests as padded arrays: ``ctr`` (tests, max arms) with ``nan`` padding, ``horizons``.

    ``arm_impressions`` has the same shape as ``ctr``, with zero padding.
    """

    test_ids: tuple[str, ...]
    ctr: np.ndarray
    horizons: np.ndarray
    n_arms: np.ndarray
    arm_impressions: np.ndarray

    @property
    def n_tests(self) -> int:
        """Number of tests."""
        return len(self.test_ids)


def load_tests(path: str | Path, *, max_tests: int | None = None) -> ReplayProblems:
    """Read a test archive into :class:`ReplayProblems`.

    Rows with zero impressions are dropped (they carry no CTR); tests left with fewer than two
    arms are dropped (there is nothing to allocate). Tests keep their order of first
    appearance; ``max_tests`` keeps the first ones.

    Raises
    ------
    ReplayError
        If the file is missing or unreadable, lacks a required column, has negative counts or
        more clicks than impressions, or holds no usable test.
    """
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"replay file not found: {path}")
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several types for a non-Parquet file
        raise ReplayError(f"{path} is not a readable Parquet file: {error}") from error
    missing = [column for column in _REQUIRED if column not in frame.columns]
    if missing:
        raise ReplayError(f"{path} lacks column(s) {missing}; needs {list(_REQUIRED)}")
    frame = frame.select(
        pl.col("test_id").cast(pl.String),
        pl.col("impressions").cast(pl.Int64),
        pl.col("clicks").cast(pl.Int64),
    ).drop_nulls()
    bad = frame.filter(
        (pl.col("impressions") < 0) | (pl.col("clicks") < 0)
        | (pl.col("clicks") > pl.col("impressions"))
    )  # fmt: skip
    if bad.height:
        raise ReplayError(
            f"{path}: {bad.height} row(s) have negative counts or clicks > impressions "
            f"(first test_id {bad['test_id'][0]!r})"
        )
    tests = (
        frame.filter(pl.col("impressions") > 0)
        .group_by("test_id", maintain_order=True)
        .agg(pl.col("impressions"), pl.col("clicks"))
        .filter(pl.col("impressions").list.len() >= 2)
    )
    if max_tests is not None:
        tests = tests.head(max_tests)
    if tests.height == 0:
        raise ReplayError(f"{path} holds no test with at least two arms that had impressions")
    n_arms = tests["impressions"].list.len().to_numpy()
    ctr = np.full((tests.height, int(n_arms.max())), np.nan)
    arm_impressions = np.zeros(ctr.shape)
    horizons = np.zeros(tests.height, dtype=np.int64)
    for index, (impressions, clicks) in enumerate(
        zip(tests["impressions"].to_list(), tests["clicks"].to_list(), strict=True)
    ):
        impressions_array = np.asarray(impressions, dtype=float)
        ctr[index, : len(impressions)] = np.asarray(clicks, dtype=float) / impressions_array
        arm_impressions[index, : len(impressions)] = impressions_array
        horizons[index] = int(impressions_array.sum())
    return ReplayProblems(
        test_ids=tuple(tests["test_id"].to_list()),
        ctr=ctr,
        horizons=horizons,
        n_arms=n_arms,
        arm_impressions=arm_impressions,
    )


def cross_fitted_prior(
    problems: ReplayProblems, *, seed: int = 0, n_folds: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """A Beta prior per test learned from the arms of the *other* tests (cross-fitting).

    Tests are split at random into ``n_folds`` folds; the prior of a test in one fold is
    :func:`adloop.bandits.empirical_bayes_prior` (method of moments, sampling noise removed)
    fitted to every arm of all other folds, so a test's own data never informs its prior.

    Returns
    -------
    (alpha, beta)
        Arrays of shape (n_tests,).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> ctr = rng.beta(20, 980, size=(200, 3))
    >>> problems = ReplayProblems(tuple(map(str, range(200))), ctr, np.full(200, 30_000),
    ...                           np.full(200, 3), np.full((200, 3), 10_000.0))
    >>> alpha, beta = cross_fitted_prior(problems)
    >>> round(float(np.mean(alpha / (alpha + beta))), 3)
    0.02
    """
    if n_folds < 2:
        raise ReplayError(f"n_folds must be >= 2, got {n_folds}")
    n_tests = problems.n_tests
    folds = np.random.default_rng(seed).permutation(n_tests) % n_folds
    trials = problems.arm_impressions
    successes = np.rint(np.nan_to_num(problems.ctr) * trials)
    alpha = np.ones(n_tests)
    beta = np.ones(n_tests)
    for fold in range(n_folds):
        others = folds != fold
        alpha[~others], beta[~others] = empirical_bayes_prior(
            successes[others].ravel(), trials[others].ravel()
        )
    return alpha, beta


@dataclass(frozen=True)
class ReplayResult:
    """Totals per policy (:attr:`summary`) and one row per test and policy (:attr:`rows`)."""

    summary: dict[str, Any]
    rows: pl.DataFrame

    def write(self, json_path: str | Path) -> tuple[Path, Path]:
        """Write the summary as JSON and the per-test rows as Parquet next to it.

        The Parquet file is ``<json stem>.tests.parquet`` in the same folder.
        """
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        parquet_path = json_path.with_name(f"{json_path.stem}.tests.parquet")
        summary = dict(self.summary, per_test_file=parquet_path.name)
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        self.rows.write_parquet(parquet_path)
        return json_path, parquet_path


def replay(
    path: str | Path,
    *,
    policies: Sequence[str] = REPLAY_POLICIES,
    n_updates: int = 100,
    seed: int = 0,
    n_draws: int = 128,
    epsilon: float = 0.1,
    max_tests: int | None = None,
) -> ReplayResult:
    """Replay every test of a Parquet archive under each policy.

    Parameters
    ----------
    path:
        Parquet file with ``test_id, headline, impressions, clicks``.
    policies:
        Any of :data:`REPLAY_POLICIES` (``ts, ts_eb, uniform, ucb1, egreedy``); ``uniform`` is
        always run as the reference for ``regret_reduction_vs_uniform`` but only reported when
        asked for.
    n_updates:
        Batched posterior updates per test.
    seed:
        Seeds every policy's draws (each policy gets its own stream, independent of which
        other policies run) and the empirical-Bayes folds.
    n_draws:
        Monte Carlo draws for Thompson sampling's probability of being best.
    epsilon:
        Exploration rate of ``egreedy``.
    max_tests:
        Replay only the first tests (quick runs).

    Example
    -------
    >>> import tempfile, os
    >>> file = os.path.join(tempfile.mkdtemp(), "tests.parquet")
    >>> pl.DataFrame({"test_id": ["a", "a"], "headline": ["x", "y"],
    ...               "impressions": [1000, 1000], "clicks": [10, 30]}).write_parquet(file)
    >>> result = replay(file, policies=["uniform"])
    >>> result.summary["oracle_clicks"], result.summary["policies"]["uniform"]["clicks"]
    (60.0, 40.0)
    """
    unknown = [name for name in policies if name not in REPLAY_POLICIES]
    if unknown or not policies:
        raise ReplayError(
            f"unknown policy {unknown[0] if unknown else '(none given)'!r}; "
            f"choose from {', '.join(REPLAY_POLICIES)}"
        )
    if n_updates < 1:
        raise ReplayError(f"n_updates must be >= 1, got {n_updates}")
    problems = load_tests(path, max_tests=max_tests)
    to_run = list(dict.fromkeys(["uniform", *policies]))
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in to_run:
        rng = np.random.default_rng([seed, REPLAY_POLICIES.index(name)])
        policy = make_policy("ts" if name == "ts_eb" else name, n_draws=n_draws, epsilon=epsilon)
        prior: dict[str, Any] = {}
        if name == "ts_eb":
            prior["prior_alpha"], prior["prior_beta"] = cross_fitted_prior(problems, seed=seed)
        start = time.perf_counter()
        try:
            results[name] = simulate_batched(
                problems.ctr, problems.horizons, policy=policy, n_updates=n_updates, rng=rng,
                **prior,
            )  # fmt: skip
        except SimError as error:
            raise ReplayError(str(error)) from error
        seconds[name] = time.perf_counter() - start
    oracle = results["uniform"].oracle_clicks
    uniform_regret = float(results["uniform"].regret.sum())
    best_arm = np.nanargmax(problems.ctr, axis=1)
    per_policy: dict[str, Any] = {}
    rows: list[pl.DataFrame] = []
    for name in policies:
        run = results[name]
        regret = float(run.regret.sum())
        per_policy[name] = {
            "clicks": float(run.clicks.sum()),
            "regret": regret,
            "regret_reduction_vs_uniform": (
                1.0 - regret / uniform_regret if uniform_regret > 0 else 0.0
            ),
            "seconds": round(seconds[name], 3),
        }
        rows.append(
            pl.DataFrame(
                {
                    "test_id": list(problems.test_ids),
                    "policy": [name] * problems.n_tests,
                    "arms": problems.n_arms.astype(np.int64),
                    "horizon": problems.horizons,
                    "oracle_clicks": oracle,
                    "clicks": run.clicks,
                    "regret": run.regret,
                    "best_arm_share": run.impressions[np.arange(problems.n_tests), best_arm]
                    / np.maximum(problems.horizons, 1),
                }
            )
        )
    summary = {
        "file": str(path),
        "tests": problems.n_tests,
        "impressions": int(problems.horizons.sum()),
        "oracle_clicks": float(oracle.sum()),
        "updates": n_updates,
        "seed": seed,
        "policies": per_policy,
    }
    return ReplayResult(summary=summary, rows=pl.concat(rows))
