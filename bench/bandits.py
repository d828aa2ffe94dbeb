"""Bandits benchmark: adloop's allocation engine side by side with MABWiser.

``python -m bench bandits [--quick]`` (or ``adloop bench bandits``).  Same problems, same seeds:

* single-decision latency at 10 and 1,000 arms (ours: ``Snapshot.choose`` on a precomputed
  snapshot, the ad server's hot path; MABWiser: ``MAB.predict()``), plus the cost of refreshing
  our snapshot (``ThompsonSampling.weights``), which runs off the hot path;
* batch decisions per second (ours: ``Snapshot.choose_many``; MABWiser: ``predict(contexts)``);
* update throughput in events per second (ours: aggregating events into per-arm counts, which is
  all an update is when state is rebuilt from counts; MABWiser: ``partial_fit``);
* regret on Bernoulli problems with 10 arms, best arm 5 %, horizon 1e6, updates every 1,000
  impressions, 20 seeds: ours (Thompson sampling as the engine runs it, classic probability
  matching, uniform fixed-horizon A/B, epsilon-greedy, UCB1) and MABWiser's Thompson sampling,
  against the Lai-Robbins bound, plus a side-by-side summary.  "equal gap" problems put the
  nine other arms all that far below the best; "spaced" ones step down by the gap
  (5.0, 4.5, 4.0, ... %).  Regret runs are spread over the machine's cores.

MABWiser is a benchmark-only dependency (``pip install adloop[bench]``).
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from adloop.bandits import (
    UCB1,
    ArmCounts,
    EpsilonGreedy,
    ThompsonSampling,
    Uniform,
    batch_thompson_weights,
    bernoulli_regret,
    lai_robbins_bound,
    planned_sample_size,
)
from bench._common import best_of, markdown_table, write_results

PROBLEMS = {
    "equal gap 0.5 pp": np.array([0.05] + [0.045] * 9),
    "equal gap 0.1 pp": np.array([0.05] + [0.049] * 9),
    "spaced 0.5 pp": 0.05 - 0.005 * np.arange(10),
    "spaced 0.1 pp": 0.05 - 0.001 * np.arange(10),
}
BATCH = 1_000


def _ids(n_arms: int) -> tuple[str, ...]:
    return tuple(f"v{i}" for i in range(n_arms))


def _counts(n_arms: int, seed: int = 0) -> ArmCounts:
    rng = np.random.default_rng(seed)
    impressions = np.full(n_arms, 5_000.0)
    clicks = rng.binomial(5_000, rng.uniform(0.01, 0.05, n_arms)).astype(float)
    return ArmCounts(_ids(n_arms), impressions, clicks)


def _mabwiser(n_arms: int, seed: int, counts: ArmCounts | None = None):
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(
        arms=list(range(n_arms)), learning_policy=LearningPolicy.ThompsonSampling(), seed=seed
    )
    if counts is None:
        mab.fit(decisions=np.array([], dtype=int), rewards=np.array([]))
    else:  # the same evidence as ours, as individual events
        decisions = np.repeat(np.arange(n_arms), counts.impressions.astype(int))
        rewards = np.concatenate(
            [
                np.r_[np.ones(int(c)), np.zeros(int(n - c))]
                for n, c in zip(counts.impressions, counts.clicks, strict=True)
            ]
        )
        mab.fit(decisions=decisions, rewards=rewards)
    return mab


def _latency_rows(quick: bool) -> list[dict]:
    rows = []
    for n_arms in (10, 1000):
        counts = _counts(n_arms)
        policy = ThompsonSampling(seed=0, n_draws=4000)
        snapshot = policy.snapshot(counts)
        n_calls = 20_000 if quick else 200_000
        draws = [random.random() for _ in range(n_calls)]
        choose = snapshot.choose

        def ours(draws=draws, choose=choose):
            for u in draws:
                choose(u)

        rows.append(
            {
                "measure": "single decision latency",
                "system": "adloop Snapshot.choose",
                "arms": n_arms,
                "value": best_of(ours, 3) / n_calls * 1e6,
                "unit": "us",
            }
        )
        uniform = random.random

        def ours_with_draw(choose=choose, uniform=uniform, n=n_calls):
            for _ in range(n):
                choose(uniform())

        rows.append(
            {
                "measure": "single decision latency (incl. drawing u)",
                "system": "adloop Snapshot.choose",
                "arms": n_arms,
                "value": best_of(ours_with_draw, 3) / n_calls * 1e6,
                "unit": "us",
            }
        )
        refresh = best_of(lambda counts=counts, policy=policy: policy.weights(counts), 3)
        rows.append(
            {
                "measure": "snapshot refresh (TS weights, 4000 draws)",
                "system": "adloop",
                "arms": n_arms,
                "value": refresh * 1e3,
                "unit": "ms",
            }
        )
        mab = _mabwiser(n_arms, seed=0, counts=counts)
        n_mab = (200 if quick else 2000) if n_arms == 10 else (5 if quick else 40)

        def theirs(mab=mab, n=n_mab):
            for _ in range(n):
                mab.predict()

        rows.append(
            {
                "measure": "single decision latency",
                "system": "MABWiser TS predict()",
                "arms": n_arms,
                "value": best_of(theirs, 3) / n_mab * 1e6,
                "unit": "us",
            }
        )
    return rows


def _throughput_rows(quick: bool) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for n_arms in (10, 1000):
        counts = _counts(n_arms)
        snapshot = ThompsonSampling(seed=0).snapshot(counts)
        n = 2_000_000 if quick else 10_000_000
        seconds = best_of(lambda snapshot=snapshot, n=n: snapshot.choose_many(n, rng), 3)
        rows.append(
            {
                "measure": "batch decisions",
                "system": "adloop Snapshot.choose_many",
                "arms": n_arms,
                "value": n / seconds / 1e6,
                "unit": "M decisions/s",
            }
        )
        mab = _mabwiser(n_arms, seed=0, counts=counts)
        n_mab = 10_000 if n_arms == 10 else 200
        seconds = best_of(lambda mab=mab, n=n_mab: mab.predict(np.zeros((n, 1))), 2)
        rows.append(
            {
                "measure": "batch decisions",
                "system": "MABWiser TS predict(contexts)",
                "arms": n_arms,
                "value": n_mab / seconds / 1e6,
                "unit": "M decisions/s",
            }
        )

        n_events = 1_000_000 if n_arms == 10 else 200_000
        arms = rng.integers(0, n_arms, n_events)
        rewards = (rng.random(n_events) < 0.03).astype(np.int64)

        def ours_update(arms=arms, rewards=rewards, counts=counts, n_arms=n_arms):
            # an update is aggregation: state is rebuilt from per-arm counts
            shown = np.bincount(arms, minlength=n_arms)
            clicked = np.bincount(arms, weights=rewards, minlength=n_arms)
            return ArmCounts(counts.arm_ids, counts.impressions + shown, counts.clicks + clicked)

        seconds = best_of(ours_update, 3)
        rows.append(
            {
                "measure": "update throughput",
                "system": "adloop (aggregate to counts)",
                "arms": n_arms,
                "value": n_events / seconds / 1e6,
                "unit": "M events/s",
            }
        )
        seconds = best_of(lambda mab=mab, a=arms, r=rewards: mab.partial_fit(a, r), 1)
        rows.append(
            {
                "measure": "update throughput",
                "system": "MABWiser TS partial_fit",
                "arms": n_arms,
                "value": n_events / seconds / 1e6,
                "unit": "M events/s",
            }
        )

    # the vectorized helper a policy-only simulator calls: 1,000 campaigns at once
    n_sims, n_steps = 1000, (5 if quick else 20)
    means = PROBLEMS["equal gap 0.5 pp"]
    impressions = np.zeros((n_sims, 10))
    clicks = np.zeros((n_sims, 10))
    start = time.perf_counter()
    for _ in range(n_steps):
        weights = batch_thompson_weights(1 + clicks, 1 + impressions - clicks, rng=rng, n_draws=64)
        shown = rng.multinomial(BATCH, weights)
        clicks += rng.binomial(shown, means)
        impressions += shown
    seconds = time.perf_counter() - start
    rows.append(
        {
            "measure": "policy-only simulation (1,000 sims, batch 1,000, 64 draws)",
            "system": "adloop batch_thompson_weights",
            "arms": 10,
            "value": n_sims * n_steps * BATCH / seconds / 1e6,
            "unit": "M impressions/s",
        }
    )
    return rows


def _mabwiser_regret(means: np.ndarray, horizon: int, seed: int) -> float:
    world = np.random.default_rng(seed)
    mab = _mabwiser(len(means), seed=seed)
    gaps = means.max() - means
    regret = 0.0
    for _ in range(horizon // BATCH):
        arms = np.asarray(mab.predict(np.zeros((BATCH, 1))), dtype=np.int64)
        rewards = (world.random(BATCH) < means[arms]).astype(np.int64)
        mab.partial_fit(arms, rewards)
        regret += float(gaps[arms].sum())
    return regret


TS = "adloop TS"
CLASSIC_TS = "adloop TS, classic (loss_threshold=0)"
UNIFORM = "adloop uniform A/B (z-test at planned n)"
EPSILON_GREEDY = "adloop epsilon-greedy 0.1"
UCB = "adloop UCB1"
MABWISER = "MABWiser TS"
SYSTEMS = (TS, CLASSIC_TS, UNIFORM, EPSILON_GREEDY, UCB, MABWISER)


def _one_regret(system: str, name: str, horizon: int, seed: int) -> tuple[float, float]:
    """Final regret of one system on one problem and seed, and the seconds it took."""
    start = time.perf_counter()
    means = PROBLEMS[name]
    if system == MABWISER:
        return _mabwiser_regret(means, horizon, seed), time.perf_counter() - start
    planned = planned_sample_size(0.05, -(means.max() - np.sort(means)[-2]), n_arms=10)
    policy = {
        TS: ThompsonSampling,  # the engine's configuration: the defaults
        CLASSIC_TS: lambda: ThompsonSampling(loss_threshold=0.0),
        UNIFORM: lambda: Uniform(planned_impressions=planned),
        EPSILON_GREEDY: EpsilonGreedy,
        UCB: UCB1,
    }[system]()
    run = bernoulli_regret(policy, means, horizon=horizon, batch_size=BATCH, seed=seed)
    return run.final_regret, time.perf_counter() - start


def _run_regrets(tasks: list[tuple[str, str, int]], horizon: int) -> list[tuple[float, float]]:
    """:func:`_one_regret` for every ``(system, problem, seed)``, spread over the cores."""
    systems, names, seeds = zip(*tasks, strict=True) if tasks else ((), (), ())
    with ProcessPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 4))) as pool:
        return list(pool.map(_one_regret, systems, names, [horizon] * len(tasks), seeds))


def _standard_error(values: list[float]) -> float | str:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else ""


def _regret_rows(quick: bool) -> tuple[list[dict], list[dict]]:
    """Regret rows (one per problem and system) and a side-by-side summary (one per problem)."""
    horizon = 100_000 if quick else 1_000_000
    seeds = list(range(2) if quick else range(20))
    problems = list(PROBLEMS)[:2] if quick else list(PROBLEMS)
    tasks = [(system, name, seed) for name in problems for system in SYSTEMS for seed in seeds]
    # MABWiser runs are the slowest: start them first so the pool ends evenly
    tasks.sort(key=lambda task: task[0] != MABWISER)
    by_task = dict(zip(tasks, _run_regrets(tasks, horizon), strict=True))
    rows, summary = [], []
    for name in problems:
        bound = lai_robbins_bound(PROBLEMS[name], horizon)
        side_by_side: dict = {"problem": f"{name}, T={horizon:.0e}", "seeds": len(seeds)}
        regrets_of = {}
        for system in SYSTEMS:
            regrets = [by_task[system, name, seed][0] for seed in seeds]
            regrets_of[system] = regrets
            rows.append(
                {
                    "measure": f"regret, {name}, T={horizon:.0e}",
                    "system": system,
                    "arms": 10,
                    "value": float(np.mean(regrets)),
                    "unit": "clicks",
                    "se": _standard_error(regrets),
                    "vs_lai_robbins": float(np.mean(regrets)) / bound,
                    "seconds": sum(by_task[system, name, seed][1] for seed in seeds),
                    "per_seed": [round(r, 1) for r in regrets],
                }
            )
            se = _standard_error(regrets)
            side_by_side[system] = (
                f"{np.mean(regrets):.0f} ± {se:.0f}" if se != "" else f"{np.mean(regrets):.0f}"
            )
        side_by_side["Lai-Robbins bound"] = f"{bound:.0f}"
        rows.append(
            {
                "measure": f"regret, {name}, T={horizon:.0e}",
                "system": "Lai-Robbins lower bound",
                "arms": 10,
                "value": bound,
                "unit": "clicks",
                "vs_lai_robbins": 1.0,
            }
        )
        # paired by seed: each seed is one world for every system
        for rival in (EPSILON_GREEDY, UCB, MABWISER, CLASSIC_TS):
            gain = np.array(regrets_of[rival]) - np.array(regrets_of[TS])
            side_by_side[f"{rival} - TS, paired"] = (
                f"{gain.mean():.0f} ± {_standard_error(list(gain)) or 0:.0f}"
            )
        summary.append(side_by_side)
    return rows, summary


def main(out: Path, quick: bool) -> None:
    """Run the suite and write ``bandits.json`` / ``bandits.md`` under ``out``."""
    start = time.perf_counter()
    regret_rows, summary = _regret_rows(quick)
    rows = _latency_rows(quick) + _throughput_rows(quick) + regret_rows
    notes = (
        "## Regret side by side (mean ± se over seeds, clicks)\n\n"
        + markdown_table(summary)
        + "\nRegret is pseudo-regret (expected clicks lost to the best arm), mean over seeds; the "
        'same seeds drive every system ("rival - TS, paired" is the mean per-seed difference: '
        'positive means TS lost less).  "adloop TS" is the engine\'s default configuration '
        "(probability matching cut back among practically tied arms, see ThompsonSampling's "
        'loss_threshold); "classic" is plain probability matching.  Our policies see batched '
        "updates of 1,000 impressions; MABWiser gets the same batches through "
        "predict(contexts) + partial_fit.  "
        "Thompson sampling's regret is heavy-tailed across seeds (a best arm unlucky early is "
        "starved for a while), so compare means within their standard errors (se).  "
        "Timings are best-of-N on a 2-core machine shared with other jobs.  "
        f"Total wall time {time.perf_counter() - start:.0f} s."
    )
    write_results("adloop.bandits", rows, out, notes)


def near_tie(first: int, stop: int, out: Path, name: str = "equal gap 0.1 pp") -> None:
    """Default TS, classic TS and ε-greedy on the near-tie problem over seeds ``first..stop-1``.

    ``python -m bench.bandits --near-tie 200 300``: the problem where ε-greedy comes closest
    (regret there is nearly a coin flip per seed: ~200 clicks when the best arm ends up leading,
    ~980 when another does), on more seeds than the suite runs (MABWiser left out, it is the
    slow one). ``--problem NAME`` runs another problem of the suite over the same seed range.
    Writes ``bandits_near_tie.json`` / ``.md`` under ``out``.
    """
    seeds = list(range(first, stop))
    systems = (TS, CLASSIC_TS, EPSILON_GREEDY)
    tasks = [(system, name, seed) for system in systems for seed in seeds]
    regrets = {system: [] for system in systems}
    for (system, _, _), (regret, _) in zip(tasks, _run_regrets(tasks, 1_000_000), strict=True):
        regrets[system].append(regret)
    rows = [
        {
            "system": system,
            "seeds": f"{first}-{stop - 1}",
            "regret": float(np.mean(values)),
            "se": _standard_error(values),
            "minus_default_ts_paired": float(np.mean(np.subtract(values, regrets[TS]))),
            "paired_se": _standard_error(list(np.subtract(values, regrets[TS]))),
        }
        for system, values in regrets.items()
    ]
    write_results(
        "bandits_near_tie",
        rows,
        out,
        f"Regret (clicks) on '{name}', T=1e6, batches of {BATCH}; paired = per-seed difference "
        "from the default TS (negative: lost less than it).",
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Bandit benchmark extras.")
    parser.add_argument("--near-tie", nargs=2, type=int, metavar=("FIRST", "STOP"), required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--problem", choices=list(PROBLEMS), default="equal gap 0.1 pp", help="regret problem"
    )
    args = parser.parse_args()
    near_tie(*args.near_tie, args.out, args.problem)
