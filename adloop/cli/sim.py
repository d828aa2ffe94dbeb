"""``adloop sim``: simulated campaigns through the engine, fast policy sweeps, real-test replay."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from adloop.cli._common import fail, print_json

app = typer.Typer(
    help="Simulate campaigns: through the real engine (run), policy-only (fast), or by "
    "replaying real A/B tests (replay).",
    no_args_is_help=True,
)


def _write_json(payload: dict, target: Path) -> None:
    if str(target) == "-":
        print_json(payload)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _round_line(round_: dict[str, Any]) -> str:
    detail = round_.get("detail") or {}
    if round_["round"] == 0:
        what = "before any retraining"
    elif not round_.get("retrained"):
        what = "no retraining"
    else:
        what = f"{detail.get('outcome', '?')} {detail.get('version') or ''}".rstrip()
    ctr = round_.get("mean_true_ctr")
    measured = (
        f"new candidates' mean true CTR {100 * ctr:.2f} % (diversity "
        f"{round_['distinct_trigrams']:.2f}, {round_['n_candidates']} candidates)"
        if ctr is not None
        else "no candidates measured"
    )
    return f"round {round_['round']} ({what}): {measured}"


@app.command("run")
def run(
    scenario: Annotated[
        Path, typer.Option("--scenario", help="Scenario YAML file (see examples/).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for summary.json, plots and report.html (default: out/sim/NAME)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the summary JSON to this file ('-' for stdout)."),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(help="DuckDB file to keep the run's store in (default: a temporary file)."),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    retraining: Annotated[
        bool | None,
        typer.Option(
            "--retraining/--no-retraining",
            help="Override the scenario's retraining.enabled: run the same scenario and seed "
            "with and without retraining to compare the arms (with measure_candidates, the "
            "rounds are still measured without it).",
        ),
    ] = None,
) -> None:
    """Run a scenario through the real engine on a simulated clock, and write a report.

    With retraining, each round prints the outcome and the mean true CTR and diversity of a
    fresh batch of new candidates (the probe), as the report's retraining plot shows."""
    from rich.console import Console

    from adloop.sim import ScenarioError, SimError, load_scenario
    from adloop.sim.engine_run import run_scenario

    console = Console(stderr=True, soft_wrap=True)
    try:
        loaded = load_scenario(scenario, seed=seed)
    except ScenarioError as error:
        fail(f"{scenario}: {error}", code=2)
    if retraining is not None:
        settings = loaded.retraining.model_copy(update={"enabled": retraining})
        loaded = loaded.model_copy(update={"retraining": settings})
    hook = None
    if loaded.retraining.enabled:
        from adloop.cli._progress import TrainingProgress
        from adloop.sim.retraining import make_retrain_hook

        try:
            hook = make_retrain_hook(
                loaded.retraining.config, progress=None if quiet else TrainingProgress
            )
        except (TypeError, ValueError) as error:
            fail(f"{scenario}: retraining.config: {error}", code=2)
    target = out or Path("out") / "sim" / loaded.name
    try:
        result = run_scenario(loaded, db_path=db, out=target, on_retrain=hook, progress=not quiet)
    except ScenarioError as error:
        fail(f"{scenario}: {error}", code=2)
    except SimError as error:
        fail(str(error))
    summary = result.summary
    winner = summary.get("winner") or {}
    console.print(
        f"{summary['impressions']:,} impressions, {summary['clicks']:,} clicks, "
        f"{summary['conversions']:,} conversions; regret {summary['regret']:.1f} expected clicks; "
        f"winner: {winner.get('text', 'none declared')}"
    )
    for round_ in summary.get("retraining_rounds") or []:
        console.print(_round_line(round_))
    console.print(f"report: {target / 'report.html'}")
    if json_file is not None:
        _write_json(summary, json_file)


@app.command("replay")
def replay(
    file: Annotated[
        Path, typer.Argument(help="Parquet file: test_id, headline, impressions, clicks.")
    ],
    policies: Annotated[
        str,
        typer.Option(
            help="Comma-separated: ts, uniform, ucb1, egreedy (the engine's policies), ts_eb "
            "(Thompson sampling with a prior learned across the other tests), ts_scaled (ts_eb "
            "with its posterior narrowed by a scale chosen on the other tests; see "
            "--scale-grid), ts_text (ts_scaled plus a copy scorer's cross-fitted prediction for "
            "each headline; see --text-scorer)."
        ),
    ] = "ts,ts_eb,uniform,ucb1,egreedy",
    updates: Annotated[int, typer.Option(help="Batched posterior updates per test.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of every policy's draws.")] = 0,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Write the JSON here and per-test rows to STEM.tests.parquet."),
    ] = None,
    max_tests: Annotated[int | None, typer.Option(help="Replay only the first N tests.")] = None,
    draws: Annotated[int, typer.Option(help="Monte Carlo draws for Thompson sampling.")] = 128,
    text_scorer: Annotated[
        str,
        typer.Option(
            help="Copy scorer for ts_text, cross-fitted by test: outcome (MiniLM + SmolLM2 "
            "embeddings; slow the first time, then cached), words (word-feature ridge, no "
            "model), or auto (outcome when installed, else words)."
        ),
    ] = "auto",
    scale_grid: Annotated[
        str,
        typer.Option(
            help="Comma-separated posterior scales ts_scaled and ts_text choose among, each "
            "test's by replaying the other half of the tests (1: plain Thompson sampling)."
        ),
    ] = "1,2,4,8",
) -> None:
    """Replay real A/B tests as bandit problems and compare policies on clicks and regret."""
    from rich.console import Console
    from rich.table import Table

    from adloop.cli._progress import CountProgress
    from adloop.sim import ReplayError, load_text_scorer
    from adloop.sim import replay as run_replay

    names = [name.strip() for name in policies.split(",") if name.strip()]
    try:
        grid = [float(value) for value in scale_grid.split(",") if value.strip()]
    except ValueError:
        fail(f"--scale-grid must be comma-separated numbers > 0, e.g. 1,2,4,8; got {scale_grid!r}",
             code=2)  # fmt: skip
    scorer = None
    try:
        if "ts_text" in names:
            scorer_name, scorer = load_text_scorer(text_scorer)
            Console(stderr=True).print(f"ts_text: text scorer {scorer_name}")
        with CountProgress("replaying", len(names), "policies") as bar:
            result = run_replay(
                file, policies=names, n_updates=updates, seed=seed, max_tests=max_tests,
                n_draws=draws, text_scorer=scorer, scale_grid=grid,
                progress=lambda what, done, total: bar(done, total, what),
            )  # fmt: skip
    except ReplayError as error:
        fail(str(error), code=2)
    table = Table(title=f"{result.summary['tests']} tests, {updates} updates each, seed {seed}")
    for column in ("policy", "clicks", "regret", "regret reduction vs uniform"):
        table.add_column(column, justify="right")
    for name, row in result.summary["policies"].items():
        table.add_row(
            name, f"{row['clicks']:,.0f}", f"{row['regret']:,.0f}",
            f"{row['regret_reduction_vs_uniform']:.3f}",
        )  # fmt: skip
    Console(stderr=True).print(table)
    if json_file is not None and str(json_file) != "-":
        json_path, parquet_path = result.write(json_file)
        typer.echo(f"wrote {json_path} and {parquet_path}", err=True)
    else:
        print_json(result.summary)


@app.command("fast")
def fast(
    arms: Annotated[str, typer.Option(help="Comma-separated true CTRs, e.g. 0.05,0.045,0.04.")],
    policies: Annotated[
        str, typer.Option(help="Comma-separated engine policies: ts, uniform, ucb1, egreedy.")
    ] = "ts,uniform,ucb1,egreedy",
    horizon: Annotated[int, typer.Option(help="Impressions per run.")] = 100_000,
    updates: Annotated[int, typer.Option(help="Batched updates per run.")] = 100,
    runs: Annotated[int, typer.Option(help="Seeded runs per policy.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the sweep.")] = 0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the summary JSON here.")
    ] = None,
) -> None:
    """Policy-only simulation of many seeded runs (no storage, no text)."""
    from adloop.sim import SimError, simulate

    try:
        arm_ctr = [float(x) for x in arms.split(",") if x.strip()]
    except ValueError:
        fail(f"--arms must be comma-separated numbers, got {arms!r}", code=2)
    rows = []
    try:
        for name in [p.strip() for p in policies.split(",") if p.strip()]:
            result = simulate(
                arm_ctr, policy=name, horizon=horizon, n_updates=updates, n_runs=runs, seed=seed
            )
            rows.append(result.summary())
    except SimError as error:
        fail(str(error), code=2)
    payload = {"arms": arm_ctr, "policies": rows}
    if json_file is not None:
        _write_json(payload, json_file)
    else:
        print_json(payload)
    for row in rows:
        sys.stderr.write(
            f"{row['policy']:>8}: regret {row['mean_regret']:.1f} ± {row['regret_stderr']:.1f}\n"
        )


def _parse_seeds(text: str) -> list[int]:
    """``0-19`` or ``0,3,7`` (or both, comma-separated) as a list of seeds."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, dash, high = part.partition("-")
        if dash and low.isdigit() and high.isdigit() and int(low) <= int(high):
            seeds.extend(range(int(low), int(high) + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            fail(f"--seeds must look like 0-19 or 0,3,7; got {text!r}", code=2)
    return list(dict.fromkeys(seeds))


@app.command("segments")
def segments(
    scenario: Annotated[
        Path,
        typer.Option(
            "--scenario", help="Scenario whose brief's segments are the world's (see examples/)."
        ),
    ] = Path("examples/scenario_segments.yaml"),
    seeds: Annotated[
        str | None,
        typer.Option(help="Seeds, fixed in advance: 0-19 (the default) or 0,3,7."),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(help="Folder for segments.json and segments.md."),
    ] = Path("out/sim/segments"),
) -> None:
    """Per-segment copy against one shared pool: both through the real engine, same seeds.

    Each seed runs the scenario twice: one pool of generators.pool_size variants for everyone,
    and the same number written for the brief's segments, each targeted to its segment. The
    lift of the targeted arm (clicks, CTR, expected clicks) is reported with a 95 % interval
    over the seeds."""
    from rich.console import Console

    from adloop.sim import ScenarioError, SimError, compare_segment_copy, load_scenario
    from adloop.sim.segments import SEEDS

    console = Console(stderr=True, soft_wrap=True)
    chosen = SEEDS if seeds is None else _parse_seeds(seeds)
    try:
        loaded = load_scenario(scenario)

        def report(seed: int, arm: str, row: dict[str, Any]) -> None:
            console.print(f"seed {seed} {arm:>8}: {row['clicks']:,} clicks, CTR "
                          f"{100 * row['ctr']:.3f} %")  # fmt: skip

        result = compare_segment_copy(loaded, seeds=chosen, on_run=report)
    except ScenarioError as error:
        fail(f"{scenario}: {error}", code=2)
    except SimError as error:
        fail(str(error))
    json_path, markdown_path = result.write(out)
    lift = result.summary["ctr_lift"]
    low, high = lift["low"], lift["high"]
    span = f" (95 % interval {100 * low:+.1f} % to {100 * high:+.1f} %)" if low is not None else ""
    console.print(
        f"per-segment copy vs one shared pool, {len(chosen)} seeds: CTR lift "
        f"{100 * lift['mean']:+.1f} %{span}; wrote {json_path} and {markdown_path}"
    )
