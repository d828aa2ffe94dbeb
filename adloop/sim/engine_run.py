"""Engine mode: a scenario played through the real engine on a simulated clock.

The run does what an ad server and its audience would do, hour by simulated hour:

1. the engine chooses a variant for every impression (``choose_many`` per segment, from its
   in-memory snapshot; each decision and its impression are logged to the DuckDB store);
2. the :class:`adloop.sim.World` decides who clicks (true CTR per segment, with fatigue and a
   preference shift when the scenario asks for them) and who converts, after an exponential
   delay, inside the attribution window;
3. clicks and due conversions are sent with ``engine.record`` — with duplicate deliveries and
   clicks time-stamped before their impression when the scenario injects invalid traffic;
4. on the scenario's cadences: ``engine.refresh`` (posterior snapshot), ``retire_and_refill``,
   a retraining round (the ``on_retrain(engine, round)`` hook; see :func:`run_scenario`), and
   finally ``declare_winner``.

Every hour yields plain rows (impressions, clicks, expected and oracle clicks per variant) that
the report (:mod:`adloop.sim.report`) draws from.

This module holds the driver (:func:`run_scenario`) and the clock; one step of traffic lives in
:mod:`adloop.sim.engine_traffic`, the result and its assembly in :mod:`adloop.sim.engine_summary`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from adloop.sim.engine_summary import EngineRunResult, assemble_result, diversity
from adloop.sim.engine_traffic import CampaignRun, make_pool
from adloop.sim.scenario import Scenario

__all__ = ["EngineRunResult", "RetrainHook", "SimClock", "diversity", "run_scenario"]


class RetrainHook(Protocol):
    """Called once per retraining round: ``on_retrain(engine, round_index)``.

    Rounds fall every ``retraining.every_hours`` simulated hours (round 1 after the first
    interval; never at the very end). When the hook runs, every event so far has been
    recorded and committed, the hour's refresh and retire-and-refill have happened, and
    ``engine.clock()`` is the simulated time. The hook may fine-tune and promote a new model
    (so that later refills and the round's candidate probe — ``engine.pool.generate`` right
    after the hook — come from it) and may return a JSON-ready dict that the summary keeps
    under ``retraining_rounds[i].detail``.
    """

    def __call__(self, engine: Any, round_index: int) -> dict[str, Any] | None: ...


class SimClock:
    """A settable clock: ``clock()`` returns the simulated "now" (naive UTC).

    Example
    -------
    >>> clock = SimClock(datetime(2026, 1, 5))
    >>> clock.advance(timedelta(hours=2)); clock()
    datetime.datetime(2026, 1, 5, 2, 0)
    """

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        """Move the clock to ``now``."""
        self.now = now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.now = self.now + delta


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    db_path: str | Path | None = None,
    out: str | Path | None = None,
    on_retrain: RetrainHook | None = None,
    progress: bool = False,
    engine_config: dict[str, Any] | None = None,
) -> EngineRunResult:
    """Run ``scenario`` through the real engine on a simulated clock.

    Parameters
    ----------
    scenario:
        A validated :class:`adloop.sim.Scenario` (see :func:`adloop.sim.load_scenario`).
    seed:
        Overrides the scenario's seed (traffic, engine choices, and the world's scorer unless
        ``world.seed`` fixes it).
    db_path:
        DuckDB file to use; default: a fresh file in a temporary folder, removed afterwards.
    out:
        When given, writes ``summary.json``, PNG plots and ``report.html`` there.
    on_retrain:
        Hook called each retraining round when ``retraining.enabled`` (see :class:`RetrainHook`).
    progress:
        Show a progress bar on stderr.
    engine_config:
        Extra :class:`~adloop.optimizer.EngineConfig` fields
        (e.g. ``{"segment_allocation": False}``).

    Example
    -------
    >>> from adloop.sim import load_scenario
    >>> scenario = load_scenario({"variants": ["Bespoke rings", "Shop rings today — 20% off!"],
    ...     "traffic": {"hours": 3, "impressions_per_hour": 200}, "lifecycle":
    ...     {"retire_refill_every_hours": None, "declare_winner": False}})
    >>> result = run_scenario(scenario, seed=1)
    >>> result.summary["impressions"] > 0
    True
    """
    from adloop.optimizer import Engine, EngineConfig

    seed = scenario.seed if seed is None else seed
    world = scenario.build_world(seed)
    world.reset(seed)
    traffic, lifecycle, retraining = scenario.traffic, scenario.lifecycle, scenario.retraining
    refresh_hours = scenario.refresh.every_hours
    # A refresh more often than hourly splits each hour into that many steps.
    steps_per_hour = max(1, round(1.0 / refresh_hours)) if refresh_hours < 1 else 1
    refresh_every_steps = 1 if refresh_hours < 1 else max(1, round(refresh_hours))
    step_length = timedelta(hours=1) / steps_per_hour
    with_rounds = retraining.enabled or retraining.measure_candidates

    temporary: tempfile.TemporaryDirectory[str] | None = None
    if db_path is None:
        temporary = tempfile.TemporaryDirectory(prefix="adloop-sim-")
        db_path = Path(temporary.name) / "sim.duckdb"
    db_path = Path(db_path)
    clock = SimClock(traffic.start)
    half_life = scenario.policy.half_life_hours
    settings: dict[str, Any] = {
        # The scenario's cadence drives refreshes; the engine must not refresh on its own.
        "refresh_interval": 1e12,
        "refresh_events": 2**62,
        # Simulated time drives everything: a wall-clock cap on generation would make the
        # variants a refill gets, and so the whole run, depend on how busy the machine is.
        "generation_time_budget": None,
        "background": False,
        "policy": scenario.policy.name,
        "floor": scenario.policy.floor,
        "top_two": scenario.policy.top_two,
        "n_draws": scenario.policy.n_draws,
        "half_life": timedelta(hours=half_life) if half_life is not None else None,
    }
    config = EngineConfig(**{**settings, **(engine_config or {})})
    started = time.perf_counter()
    engine = Engine(db_path, config=config, clock=clock, seed=seed, pool=make_pool(scenario))
    run = CampaignRun(scenario, seed, engine, world, clock)
    winner: dict[str, Any] | None = None
    try:
        run.create_campaign()
        if with_rounds:
            run.measure_round(0, False, None)
        n_steps = traffic.hours * steps_per_hour
        progress_bar = _Progress(progress, n_steps, scenario.name)
        for step in range(n_steps):
            run.serve(step / steps_per_hour, traffic.start + step * step_length, step_length)
            progress_bar.advance(1)
            if (step + 1) % refresh_every_steps == 0:
                engine.refresh(run.campaign_id)
            if (step + 1) % steps_per_hour:
                continue
            hours_done = (step + 1) // steps_per_hour
            if hours_done >= traffic.hours:
                break
            cadence = lifecycle.retire_refill_every_hours
            if cadence and hours_done % cadence == 0:
                run.retire_and_refill(hours_done)
            if with_rounds and hours_done % retraining.every_hours == 0:
                round_index = hours_done // retraining.every_hours
                hook_runs = retraining.enabled and on_retrain is not None
                with progress_bar.paused():  # the round may draw its own progress
                    detail = on_retrain(engine, round_index) if hook_runs else None
                run.measure_round(round_index, hook_runs, detail)
            if lifecycle.stop_on_winner:
                winner = engine.declare_winner(run.campaign_id)
                if winner is not None:
                    break
        progress_bar.close()
        # Conversions still in flight arrive within the attribution window; then decide.
        clock.set(clock() + timedelta(hours=scenario.conversions.attribution_window_hours))
        run.deliver([], final=True)
        engine.refresh(run.campaign_id)
        if lifecycle.declare_winner and winner is None:
            winner = engine.declare_winner(run.campaign_id)
        final = engine.campaign(run.campaign_id)
        engine.flush()
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    result = assemble_result(
        run, final=final, winner=winner, elapsed=elapsed,
        db_path=None if temporary is not None else db_path,
    )  # fmt: skip
    if temporary is not None:
        temporary.cleanup()
    if out is not None:
        from adloop.sim.report import write_report

        write_report(result, out)
    return result


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} h"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(f"simulating {label}", total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Take the bar off the terminal meanwhile (rich draws one live display at a time)."""
        if self._progress is None:
            yield
            return
        self._progress.stop()
        try:
            yield
        finally:
            self._progress.start()
