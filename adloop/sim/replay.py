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
(two-fold cross-fitting, :func:`cross_fitted_prior`, so no test informs its own prior); and
``ts_text``: ``ts_eb`` plus a copy scorer's evidence about each arm's headline
(:class:`adloop.bandits.TextPriorThompson`), cross-fitted both ways. The scorer (a
:data:`~adloop.sim.text_scorers.TextScorer`, e.g. the outcome scorer) predicts each arm
from a model never trained on that arm's test; how far to trust it
(:func:`adloop.bandits.fit_text_calibration`) is fitted on the *other* half of the tests, the
same halves as ``ts_eb``'s prior (:func:`cross_fitted_text_evidence`). ``ts_scaled`` is
``ts_eb`` with each arm's posterior narrowed by a scale (``posterior_scale`` of
:class:`~adloop.bandits.TextPriorThompson`: the draws spread ``1 / sqrt(scale)`` as wide, so the
policy backs its leader sooner) chosen for each half of the tests by replaying the other half
(:func:`cross_fitted_posterior_scale`); ``ts_text`` chooses its scale the same way, with the text.
``ts_text`` and ``ts_scaled`` draw from ``ts_eb``'s random stream, so where the scorer is not
trusted ``ts_text`` and ``ts_scaled`` are the same run, and elsewhere their difference is the
text's doing rather than the dice's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adloop.bandits import (
    BanditError,
    TextCalibration,
    TextEvidence,
    TextPriorThompson,
    empirical_bayes_prior,
    fit_text_calibration,
)
from adloop.sim.errors import ReplayError, SimError
from adloop.sim.fast import BatchedRun, make_policy, simulate_batched
from adloop.sim.text_scorers import TextScorer

__all__ = [
    "REPLAY_POLICIES",
    "ReplayProblems",
    "ReplayResult",
    "SCALE_GRID",
    "cross_fitted_posterior_scale",
    "cross_fitted_prior",
    "cross_fitted_text_evidence",
    "load_tests",
    "replay",
]

#: The engine's policies (:data:`adloop.bandits.POLICIES`), ``ts_eb``, ``ts_text`` and
#: ``ts_scaled``.  A policy's place here picks its random stream, so the order is kept and
#: published figures reproduce (``ts_text`` and ``ts_scaled`` share ``ts_eb``'s stream on
#: purpose).
REPLAY_POLICIES: tuple[str, ...] = (
    "ts", "ts_eb", "uniform", "ucb1", "egreedy", "ts_text", "ts_scaled",
)  # fmt: skip

#: Posterior scales :func:`cross_fitted_posterior_scale` chooses among (1: plain Thompson).
SCALE_GRID: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
_REQUIRED = ("test_id", "headline", "impressions", "clicks")


@dataclass(frozen=True)
class ReplayProblems:
    """Tests as padded arrays: ``ctr`` (tests, max arms) with ``nan`` padding, ``horizons``.

    ``arm_impressions`` has the same shape as ``ctr``, with zero padding; ``texts`` holds each
    test's headlines, arm by arm (empty when not loaded from an archive).
    """

    test_ids: tuple[str, ...]
    ctr: np.ndarray
    horizons: np.ndarray
    n_arms: np.ndarray
    arm_impressions: np.ndarray
    texts: tuple[tuple[str, ...], ...] = ()

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
        pl.col("headline").cast(pl.String).fill_null(""),
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
        .agg(pl.col("impressions"), pl.col("clicks"), pl.col("headline"))
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
        texts=tuple(tuple(headlines) for headlines in tests["headline"].to_list()),
    )


def _test_folds(n_tests: int, seed: int, n_folds: int) -> np.ndarray:
    """Each test's fold: a seeded shuffle dealt round-robin (the same for every use)."""
    if n_folds < 2:
        raise ReplayError(f"n_folds must be >= 2, got {n_folds}")
    return np.random.default_rng(seed).permutation(n_tests) % n_folds


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
    n_tests = problems.n_tests
    folds = _test_folds(n_tests, seed, n_folds)
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


def cross_fitted_text_evidence(
    problems: ReplayProblems, scores: np.ndarray, *, seed: int = 0, n_folds: int = 2
) -> tuple[TextEvidence, list[TextCalibration]]:
    """Each test's :class:`~adloop.bandits.TextEvidence`, calibrated on the *other* tests.

    ``scores`` (shape of ``problems.ctr``) must already be cross-fitted predictions. Tests fall
    into the folds of :func:`cross_fitted_prior` (same ``seed`` and ``n_folds``); a test's
    scores are calibrated by :func:`adloop.bandits.fit_text_calibration` on the arms of all
    other folds, so its own clicks inform neither its scores nor how far they are trusted.

    Returns the evidence (offsets shaped like ``problems.ctr``, zero padding; one precision
    per test) and the calibration of each fold.
    """
    folds = _test_folds(problems.n_tests, seed, n_folds)
    valid = ~np.isnan(problems.ctr)
    scores = np.where(valid, np.asarray(scores, dtype=np.float64), 0.0)
    trials = problems.arm_impressions
    successes = np.rint(np.nan_to_num(problems.ctr) * trials)
    groups = np.broadcast_to(np.arange(problems.n_tests)[:, None], valid.shape)
    offsets = np.zeros(valid.shape)
    precision = np.zeros(problems.n_tests)
    calibrations = []
    for fold in range(n_folds):
        train = valid & (folds != fold)[:, None]
        try:
            calibration = fit_text_calibration(
                scores[train], successes[train], trials[train], groups[train]
            )
        except BanditError as error:
            raise ReplayError(f"cannot calibrate the text scorer: {error}") from error
        evidence = calibration.evidence(scores[folds == fold])
        offsets[folds == fold] = np.where(valid[folds == fold], evidence.offsets, 0.0)
        precision[folds == fold] = evidence.precision
        calibrations.append(calibration)
    return TextEvidence(offsets, precision), calibrations


def _run_rows(
    problems: ReplayProblems,
    rows: np.ndarray,
    policy: TextPriorThompson,
    prior: tuple[np.ndarray, np.ndarray],
    text: TextEvidence | None,
    n_updates: int,
    rng: np.random.Generator,
) -> BatchedRun:
    """``policy`` on the tests ``rows`` (a boolean mask) only, under their prior and text."""
    return simulate_batched(
        problems.ctr[rows], problems.horizons[rows], policy=policy, n_updates=n_updates, rng=rng,
        prior_alpha=prior[0][rows], prior_beta=prior[1][rows],
        text=None if text is None else TextEvidence(
            text.offsets[rows], np.broadcast_to(text.precision, rows.shape)[rows]
        ),
    )  # fmt: skip


def cross_fitted_posterior_scale(
    problems: ReplayProblems,
    prior: tuple[np.ndarray, np.ndarray],
    text: TextEvidence | None = None,
    *,
    grid: Sequence[float] = SCALE_GRID,
    n_updates: int = 100,
    n_draws: int = 128,
    seed: int = 0,
    n_folds: int = 2,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Each test's posterior scale, chosen by replaying the *other* tests (cross-fitting).

    For every fold of :func:`cross_fitted_prior`'s split, each scale in ``grid`` runs
    :class:`~adloop.bandits.TextPriorThompson` (``posterior_scale``; with ``prior`` and, when
    given, ``text``) on the tests of the other folds; the scale that lost the fewest clicks
    there is the fold's. A test's own clicks never choose its scale.

    Returns the scale per test (shape ``(n_tests,)``) and, per fold, the scale chosen and the
    clicks lost at each scale of the grid.
    """
    if not grid or any(not (0 < g < np.inf) for g in grid):
        raise ReplayError(f"the posterior-scale grid must hold finite numbers > 0, got {grid!r}")
    folds = _test_folds(problems.n_tests, seed, n_folds)
    chosen = np.ones(problems.n_tests)
    table: list[dict[str, Any]] = []
    for fold in range(n_folds):
        others = folds != fold
        lost = {}
        for scale in grid:
            rng = np.random.default_rng([seed, fold, int(round(scale * 1000))])
            policy = TextPriorThompson(n_draws=n_draws, posterior_scale=float(scale))
            run = _run_rows(problems, others, policy, prior, text, n_updates, rng)
            lost[float(scale)] = float(run.regret.sum())
        best = min(lost, key=lost.__getitem__)
        chosen[folds == fold] = best
        table.append(
            {"scale": best, "regret_on_other_tests": {str(k): round(v, 1) for k, v in lost.items()}}
        )
    return chosen, table


def _scaled_run(
    problems: ReplayProblems,
    scales: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray],
    text: TextEvidence | None,
    *,
    n_updates: int,
    n_draws: int,
    rng: np.random.Generator,
) -> BatchedRun:
    """One run over all tests, each group of tests under its own posterior scale."""
    shape = problems.ctr.shape
    impressions, observed = np.zeros(shape), np.zeros(shape)
    clicks, oracle = np.zeros(shape[0]), np.zeros(shape[0])
    for scale in np.unique(scales):
        rows = scales == scale
        policy = TextPriorThompson(n_draws=n_draws, posterior_scale=float(scale))
        run = _run_rows(problems, rows, policy, prior, text, n_updates, rng)
        impressions[rows], observed[rows] = run.impressions, run.observed_clicks
        clicks[rows], oracle[rows] = run.clicks, run.oracle_clicks
    return BatchedRun(impressions, clicks, observed, oracle, None, None)


def _text_scores(problems: ReplayProblems, scorer: TextScorer, seed: int) -> np.ndarray:
    """Cross-fitted scores of every arm, shaped like ``problems.ctr`` (zero padding)."""
    valid = ~np.isnan(problems.ctr)
    if not problems.texts:
        raise ReplayError("ts_text needs the tests' headlines; load them with load_tests")
    texts = [text for headlines in problems.texts for text in headlines]
    groups = np.broadcast_to(np.array(problems.test_ids, dtype=object)[:, None], valid.shape)
    trials = problems.arm_impressions[valid]
    clicks = np.rint(problems.ctr[valid] * trials)
    try:
        flat = np.asarray(scorer(texts, list(groups[valid]), trials, clicks, folds=5, seed=seed))
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        raise ReplayError(f"the text scorer failed: {error}") from error
    if flat.shape != (len(texts),) or not np.all(np.isfinite(flat)):
        raise ReplayError(
            f"the text scorer must return one finite score per arm ({len(texts)}), got "
            f"shape {flat.shape}"
        )
    scores = np.zeros(valid.shape)
    scores[valid] = flat
    return scores


def _calibration_row(calibration: TextCalibration) -> dict[str, float]:
    return {
        "tests": calibration.n_tests,
        "slope": round(calibration.slope, 5),
        "slope_z": round(calibration.slope_z, 2),
        "between_variance": round(calibration.between_variance, 5),
        "r_squared": round(calibration.r_squared, 4),
        "precision": round(calibration.precision, 3),
    }


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
    policies: Sequence[str] | None = None,
    n_updates: int = 100,
    seed: int = 0,
    n_draws: int = 128,
    epsilon: float = 0.1,
    max_tests: int | None = None,
    text_scorer: TextScorer | None = None,
    scale_grid: Sequence[float] = SCALE_GRID,
    progress: Callable[[str, int, int], None] | None = None,
) -> ReplayResult:
    """Replay every test of a Parquet archive under each policy.

    Parameters
    ----------
    path:
        Parquet file with ``test_id, headline, impressions, clicks``.
    policies:
        Any of :data:`REPLAY_POLICIES` (``ts, ts_eb, uniform, ucb1, egreedy, ts_text, ts_scaled``);
        None runs them all, ``ts_text`` only when a ``text_scorer`` is given. ``uniform`` is
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
    text_scorer:
        The scorer ``ts_text`` needs (see :func:`adloop.sim.load_text_scorer`), called once on
        all arms with ``folds=5, seed=seed``; the summary's ``text`` entry records each fold's
        calibration.
    scale_grid:
        Posterior scales ``ts_scaled`` and ``ts_text`` choose among, each test's by replaying
        the other tests (:func:`cross_fitted_posterior_scale`); the summary's
        ``posterior_scale_by_fold`` records the choices.
    progress:
        Called as ``progress(what, done, total)`` before each policy runs (``what`` names the
        policy, or the scorer's step) and once at the end, for a progress bar.

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
    if policies is None:
        policies = [p for p in REPLAY_POLICIES if p != "ts_text" or text_scorer is not None]
    unknown = [name for name in policies if name not in REPLAY_POLICIES]
    if unknown or not policies:
        raise ReplayError(
            f"unknown policy {unknown[0] if unknown else '(none given)'!r}; "
            f"choose from {', '.join(REPLAY_POLICIES)}"
        )
    if n_updates < 1:
        raise ReplayError(f"n_updates must be >= 1, got {n_updates}")
    if "ts_text" in policies and text_scorer is None:
        raise ReplayError(
            "ts_text needs a text scorer: pass text_scorer= (see adloop.sim.load_text_scorer), or "
            "--text-scorer on the command line"
        )
    problems = load_tests(path, max_tests=max_tests)
    to_run = list(dict.fromkeys(["uniform", *policies]))
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    text_summary: dict[str, Any] = {}
    scale_summary: dict[str, Any] = {}
    tell = progress or (lambda what, done, total: None)
    for done, name in enumerate(to_run):
        tell(f"policy {name}" + (" (scoring the headlines first)" if name == "ts_text" else ""),
             done, len(to_run))  # fmt: skip
        start = time.perf_counter()
        # ts_text and ts_scaled share ts_eb's stream: their differences are not the dice's
        shared = name in ("ts_text", "ts_scaled")
        rng = np.random.default_rng([seed, REPLAY_POLICIES.index("ts_eb" if shared else name)])
        try:
            if name in ("ts_eb", "ts_text", "ts_scaled"):
                prior = cross_fitted_prior(problems, seed=seed)
            text = None
            if name == "ts_text":
                assert text_scorer is not None
                scores = _text_scores(problems, text_scorer, seed)
                text, calibrations = cross_fitted_text_evidence(problems, scores, seed=seed)
                text_summary = {
                    "scorer": getattr(text_scorer, "__name__", type(text_scorer).__name__),
                    "calibration_by_fold": [_calibration_row(c) for c in calibrations],
                }
            if shared:
                tell(f"policy {name}: choosing the posterior scale on the other tests", done,
                     len(to_run))  # fmt: skip
                scales, scale_table = cross_fitted_posterior_scale(
                    problems, prior, text, grid=scale_grid, n_updates=n_updates,
                    n_draws=n_draws, seed=seed,
                )  # fmt: skip
                scale_summary[name] = scale_table
                results[name] = _scaled_run(problems, scales, prior, text, n_updates=n_updates,
                                            n_draws=n_draws, rng=rng)  # fmt: skip
            else:
                policy = make_policy("ts" if name == "ts_eb" else name, n_draws=n_draws,
                                     epsilon=epsilon)  # fmt: skip
                settings: dict[str, Any] = {}
                if name == "ts_eb":
                    settings["prior_alpha"], settings["prior_beta"] = prior
                results[name] = simulate_batched(
                    problems.ctr, problems.horizons, policy=policy, n_updates=n_updates,
                    rng=rng, **settings,
                )  # fmt: skip
        except SimError as error:
            raise ReplayError(str(error)) from error
        seconds[name] = time.perf_counter() - start
    tell("done", len(to_run), len(to_run))
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
    if text_summary:
        summary["text"] = text_summary
    if scale_summary:
        summary["posterior_scale_by_fold"] = scale_summary
    return ReplayResult(summary=summary, rows=pl.concat(rows))
