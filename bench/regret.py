"""Regret benchmark: the engine's policies and MABWiser on Bernoulli problems, same seeds.

``adloop bench regret [--quick]``: 10 arms, best arm 5 %, horizon 1e6, updates every 1,000
impressions, on seeds 1000-1019, fixed before this run and never used to choose a default (the
defaults were chosen on seeds 0-399). Policies are the ``adloop.bandits`` objects the engine
allocates with (``EngineConfig.policy``): Thompson sampling as configured by default, classic
probability matching, a uniform fixed-horizon A/B, epsilon-greedy and UCB1; beside them
MABWiser's Thompson sampling, and the Lai-Robbins bound. "equal gap" problems put the nine other
arms all that far below the best; "spaced" ones step down by the gap (5.0, 4.5, 4.0, ... %).
Runs are spread over the machine's cores.

``python -m bench.regret --near-tie FIRST STOP [--problem NAME]`` runs more seeds of one problem.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from adloop.bandits import (
    UCB1,
    EpsilonGreedy,
    TextPriorThompson,
    ThompsonSampling,
    Uniform,
    bernoulli_regret,
    lai_robbins_bound,
    planned_sample_size,
)
from bench._common import markdown_table, max_rss_mb, write_results
from bench.bandits import mabwiser

PROBLEMS = {
    "equal gap 0.5 pp": np.array([0.05] + [0.045] * 9),
    "equal gap 0.1 pp": np.array([0.05] + [0.049] * 9),
    "spaced 0.5 pp": 0.05 - 0.005 * np.arange(10),
    "spaced 0.1 pp": 0.05 - 0.001 * np.arange(10),
}
BATCH = 1_000
#: Seeds of the regret tables, fixed before the run; the defaults were chosen on seeds 0-399.
REGRET_SEEDS = range(1000, 1020)


def _mabwiser_regret(means: np.ndarray, horizon: int, seed: int) -> float:
    world = np.random.default_rng(seed)
    mab = mabwiser(len(means), seed=seed)
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
#: ``ts_scaled`` of the replay without its text: the default TS drawing from posteriors
#: ``1 / sqrt(scale)`` as wide; the system name ends in ``x<scale>``.
SCALED_TS = "adloop TS, posterior scale x"
SYSTEMS = (TS, CLASSIC_TS, UNIFORM, EPSILON_GREEDY, UCB, MABWISER)


def _one_regret(system: str, name: str, horizon: int, seed: int) -> tuple[float, float]:
    """Final regret of one system on one problem and seed, and the seconds it took."""
    start = time.perf_counter()
    means = PROBLEMS[name]
    if system == MABWISER:
        return _mabwiser_regret(means, horizon, seed), time.perf_counter() - start
    planned = planned_sample_size(0.05, -(means.max() - np.sort(means)[-2]), n_arms=10)
    if system.startswith(SCALED_TS):
        scale = float(system.rsplit("x", 1)[1])
        run = bernoulli_regret(
            TextPriorThompson(posterior_scale=scale), means, horizon=horizon, batch_size=BATCH,
            seed=seed,
        )  # fmt: skip
        return run.final_regret, time.perf_counter() - start
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
    seeds = list(REGRET_SEEDS)[:2] if quick else list(REGRET_SEEDS)
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
    rows, summary = _regret_rows(quick)
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
        f"Total wall time {time.perf_counter() - start:.0f} s; peak RSS {max_rss_mb():.0f} MiB."
    )
    write_results("regret", rows, out, notes)


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


def posterior_scales(out: Path, scales: tuple[float, ...] = (2.0, 4.0)) -> None:
    """Default TS against the same TS with narrowed posteriors, on every problem and seed of
    the suite: does the scale that paid on the short, nearly tied Upworthy tests cost regret
    on these long ones? ``python -m bench.regret --posterior-scale``; writes
    ``regret_posterior_scale.json`` / ``.md`` under ``out``."""
    systems = (TS, *(f"{SCALED_TS}{scale:g}" for scale in scales))
    seeds = list(REGRET_SEEDS)
    tasks = [(system, name, seed) for name in PROBLEMS for system in systems for seed in seeds]
    by_task = dict(zip(tasks, _run_regrets(tasks, 1_000_000), strict=True))
    rows = []
    for name in PROBLEMS:
        default = [by_task[TS, name, seed][0] for seed in seeds]
        for system in systems:
            values = [by_task[system, name, seed][0] for seed in seeds]
            paired = list(np.subtract(values, default))
            rows.append(
                {
                    "problem": name,
                    "system": system,
                    "seeds": f"{seeds[0]}-{seeds[-1]}",
                    "regret": float(np.mean(values)),
                    "se": _standard_error(values),
                    "minus_default_ts_paired": float(np.mean(paired)),
                    "paired_se": _standard_error(paired),
                }
            )
    write_results(
        "regret_posterior_scale",
        rows,
        out,
        f"Regret (clicks), T=1e6, batches of {BATCH}, seeds fixed before the run; paired = "
        "per-seed difference from the default TS (positive: lost more than it).",
    )


def cli(argv: list[str] | None = None) -> None:
    """More seeds of one problem (``adloop bench near-tie --help``)."""
    parser = argparse.ArgumentParser(description="Bandit benchmark extras.")
    parser.add_argument("--near-tie", nargs=2, type=int, metavar=("FIRST", "STOP"))
    parser.add_argument(
        "--posterior-scale", action="store_true", help="default TS against narrowed posteriors"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--problem", choices=list(PROBLEMS), default="equal gap 0.1 pp", help="regret problem"
    )
    args = parser.parse_args(argv)
    if args.posterior_scale:
        posterior_scales(args.out)
    elif args.near_tie:
        near_tie(*args.near_tie, args.out, args.problem)
    else:
        parser.error("give --near-tie FIRST STOP or --posterior-scale")


if __name__ == "__main__":
    cli()
