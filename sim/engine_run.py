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
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from adloop.sim.features import language_of
from adloop.sim.scenario import Scenario
from adloop.sim.world import World

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


@dataclass
class EngineRunResult:
    """What an engine-mode run produced.

    Attributes
    ----------
    summary:
        Totals and settings (JSON-ready): impressions, clicks, conversions, expected and
        oracle clicks, regret, event outcomes, winner, per-variant truth and posteriors.
    hourly:
        One row per (hour, variant) with impressions, clicks, conversions and expected_clicks
        (sum of the true CTRs of the impressions shown).
    steps:
        One row per simulated step: impressions, expected_clicks, oracle_clicks (the best
        servable variant of each segment shown to all of that segment) and cumulative regret.
    variants:
        Final per-variant rows: text, status, generator, counts, true CTR (segment mix),
        posterior mean and 95 % interval.
    rounds:
        One row per retraining round (round 0 = before any): mean and max true CTR of a fresh
        batch of generated candidates, their diversity, and whether the hook ran.
    db_path:
        The DuckDB file the run used.
    """

    summary: dict[str, Any]
    hourly: pl.DataFrame
    steps: pl.DataFrame
    variants: list[dict[str, Any]]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    db_path: Path | None = None


def _distinct_trigrams(texts: list[str]) -> float:
    """Share of distinct character trigrams among all trigrams (1 = no repetition)."""
    grams: list[str] = []
    for text in texts:
        grams.extend(text[i : i + 3] for i in range(max(0, len(text) - 2)))
    return len(set(grams)) / len(grams) if grams else 0.0


def diversity(texts: list[str], pool_size: int) -> float:
    """Mean distinct-trigram share of pool-sized slices of ``texts`` (1 = no repetition).

    Slicing makes the figure read the same whatever the number of texts: a pool only ever
    shows ``pool_size`` candidates side by side.

    Example
    -------
    >>> diversity(["Bespoke rings", "Bespoke rings"], 2) < diversity(["Bespoke rings", "Shop"], 2)
    True
    """
    slices = [texts[i : i + pool_size] for i in range(0, len(texts), pool_size)]
    # A short last slice has fewer chances to repeat itself; keep it only if it is alone.
    whole = [s for s in slices if len(s) == pool_size] or slices
    return float(np.mean([_distinct_trigrams(s) for s in whole])) if whole else 0.0


class _Truth:
    """Cached true rates of each variant text, unshifted and shifted."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._ctr: dict[tuple[str, bool], np.ndarray] = {}
        self._cvr: dict[str, np.ndarray] = {}

    def ctr(self, texts: list[str], shifted: bool) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if (t, shifted) not in self._ctr))
        if missing:
            rates = self.world.true_rates(missing, shifted=shifted)
            for i, text in enumerate(missing):
                self._ctr[(text, shifted)] = rates.ctr[i]
                self._cvr[text] = rates.cvr[i]
        return np.array([self._ctr[(t, shifted)] for t in texts])

    def cvr(self, texts: list[str]) -> np.ndarray:
        self.ctr(texts, False)
        return np.array([self._cvr[t] for t in texts])


def _brief_for(scenario: Scenario) -> dict[str, Any]:
    if scenario.brief is not None:
        return dict(scenario.brief)
    language = language_of(" ".join(scenario.variants or []))
    return {"product": scenario.name, "brand": scenario.name, "language": language}


def _make_pool(scenario: Scenario) -> Any:
    if scenario.variants is not None and scenario.lifecycle.retire_refill_every_hours is None:
        return None  # fixed variants, never refilled: the engine needs no generators
    from adloop.generators import GeneratorPool

    return GeneratorPool(list(scenario.generators.names), model_dir=scenario.generators.model_dir)


class _Run:
    """The state of one engine-mode run: the engine, the world, the clock and the tallies."""

    def __init__(
        self, scenario: Scenario, seed: int, engine: Any, world: World, clock: SimClock
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.engine = engine
        self.world = world
        self.clock = clock
        self.truth = _Truth(world)
        self.rng = np.random.default_rng([seed, 7])
        self.brief = _brief_for(scenario)
        self.campaign_id = ""
        self.text_of: dict[str, str] = {}
        self.born_hour: dict[str, float] = {}
        self.exposure: dict[str, float] = {}
        self.pending_conversions: list[tuple[datetime, dict[str, Any]]] = []
        self.resend: list[dict[str, Any]] = []
        self.event_counter = 0
        self.totals: dict[str, float] = dict.fromkeys(
            ("impressions", "clicks", "conversions", "value", "expected_clicks", "oracle_clicks",
             "duplicates_sent", "out_of_order_sent", "conversions_outside_window"), 0
        )  # fmt: skip
        self.outcomes = {"accepted": 0, "duplicates": 0, "rejected": 0}
        self.rejected_examples: list[dict[str, Any]] = []
        self.hourly_rows: list[dict[str, Any]] = []
        self.step_rows: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.lifecycle_log: list[dict[str, Any]] = []

    # -- campaign ----------------------------------------------------------------------------

    def create_campaign(self) -> None:
        scenario = self.scenario
        view = self.engine.create_campaign(
            self.brief,
            n_candidates=scenario.generators.pool_size,
            objective=scenario.objective,
            variants=[{"text": text} for text in scenario.variants] if scenario.variants else None,
            name=scenario.name,
            seed=self.seed,
        )
        self.campaign_id = view["campaign_id"]
        for variant in view["variants"]:
            self.text_of[variant["variant_id"]] = variant["text"]
            self.born_hour[variant["variant_id"]] = 0.0

    # -- one step of traffic -------------------------------------------------------------------

    def _fatigue(self, variant_ids: list[str]) -> np.ndarray:
        return self.world.fatigue(np.array([self.exposure.get(v, 0.0) for v in variant_ids]))

    def serve(self, hour: float, step_start: datetime, step_length: timedelta) -> None:
        """Choose, show and click for one step; record what was delivered by its end."""
        traffic = self.scenario.traffic
        shift = self.scenario.drift.preference_shift
        shifted = bool(shift.enabled and hour >= shift.at_hour)
        self.clock.set(step_start)
        steps_per_hour = round(timedelta(hours=1) / step_length)
        cycle = 1.0 + traffic.daily_cycle * math.cos(
            2 * math.pi * ((step_start.hour + step_start.minute / 60) - traffic.peak_hour) / 24
        )
        n_impressions = int(self.rng.poisson(traffic.impressions_per_hour * cycle / steps_per_hour))
        per_segment = self.rng.multinomial(n_impressions, self.world.shares)
        servable = [
            v["variant_id"]
            for v in self.engine.store.variants(self.campaign_id, statuses=("active", "winner"))
        ]
        # per variant: impressions, clicks, conversions, expected clicks
        stats: dict[str, list[float]] = {}
        clicks: list[dict[str, Any]] = []
        expected = oracle = 0.0
        for segment_index, count in enumerate(per_segment.tolist()):
            if count == 0:
                continue
            choices = self._choose(count, self.world.segment_names[segment_index])
            variant_ids = [c.variant_id for c in choices]
            shown_ids, inverse = np.unique(np.array(variant_ids), return_inverse=True)
            shown = shown_ids.tolist()
            shown_texts = [self.text_of[v] for v in shown]
            ctr = self.truth.ctr(shown_texts, shifted)[:, segment_index] * self._fatigue(shown)
            ctr = ctr[inverse]
            cvr = self.truth.cvr(shown_texts)[:, segment_index][inverse]
            clicked = self.rng.random(len(choices)) < ctr
            # Oracle: the best servable variant for this segment, shown to all of it.
            best = self.truth.ctr([self.text_of[v] for v in servable], shifted)[:, segment_index]
            oracle += float((best * self._fatigue(servable)).max()) * count if servable else 0.0
            expected += float(ctr.sum())
            for index in np.flatnonzero(clicked).tolist():
                clicks.append(
                    self._click(choices[index], segment_index, step_start, step_length, cvr[index])
                )
            for variant_id, was_clicked, rate in zip(variant_ids, clicked, ctr, strict=True):
                row = stats.setdefault(variant_id, [0, 0, 0, 0.0])
                row[0] += 1
                row[1] += int(was_clicked)
                row[3] += float(rate)
            for variant_id, n_shown in zip(shown, np.bincount(inverse).tolist(), strict=True):
                self.exposure[variant_id] = self.exposure.get(variant_id, 0.0) + n_shown
            self.totals["impressions"] += count
            self.totals["clicks"] += int(clicked.sum())
        # Deliver this step's events just before it ends.
        self.clock.set(step_start + step_length - timedelta(seconds=1))
        for event in self.deliver(clicks, final=False):
            stats.setdefault(event["variant_id"], [0, 0, 0, 0.0])[2] += 1
        for variant_id, (n_shown, n_clicks, n_conversions, rate_sum) in stats.items():
            self.hourly_rows.append(
                {"hour": hour, "variant_id": variant_id, "impressions": int(n_shown),
                 "clicks": int(n_clicks), "conversions": int(n_conversions),
                 "expected_clicks": rate_sum}
            )  # fmt: skip
        self.totals["oracle_clicks"] += oracle
        self.totals["expected_clicks"] += expected
        self.step_rows.append(
            {"hour": hour, "impressions": n_impressions, "expected_clicks": expected,
             "oracle_clicks": oracle}
        )  # fmt: skip

    def _choose(self, count: int, segment: str) -> list[Any]:
        choices: list[Any] = []
        largest = self.engine.config.max_choose_n
        while len(choices) < count:
            take = min(count - len(choices), largest)
            choices.extend(self.engine.choose_many(self.campaign_id, take, segment=segment))
        for choice in choices:
            self.text_of.setdefault(choice.variant_id, choice.text)
        return choices

    def _click(
        self,
        choice: Any,
        segment_index: int,
        step_start: datetime,
        step_length: timedelta,
        cvr: float,
    ) -> dict[str, Any]:
        """The click event of one clicked impression; schedules its conversion, if any."""
        invalid, conversions = self.scenario.invalid_traffic, self.scenario.conversions
        rng = self.rng
        out_of_order = invalid.out_of_order_rate > 0 and rng.random() < invalid.out_of_order_rate
        if out_of_order:  # a click stamped before its impression (clock skew, late logs)
            offset = -rng.uniform(1, 300)
            self.totals["out_of_order_sent"] += 1
        else:
            offset = rng.uniform(1, 0.9 * step_length.total_seconds())
        click_ts = step_start + timedelta(seconds=float(offset))
        self.event_counter += 1
        common = {
            "campaign_id": self.campaign_id,
            "variant_id": choice.variant_id,
            "decision_id": choice.decision_id,
            "segment": self.world.segment_names[segment_index],
        }
        if rng.random() < cvr:
            delay_hours = rng.exponential(conversions.delay_mean_hours)
            if delay_hours > conversions.attribution_window_hours:
                self.totals["conversions_outside_window"] += 1
            else:
                conversion_ts = click_ts + timedelta(hours=float(delay_hours))
                value = float(round(rng.exponential(conversions.value_mean), 2))
                self.pending_conversions.append(
                    (conversion_ts,
                     {"event_id": f"c{self.event_counter:012d}-{choice.decision_id}",
                      "type": "conversion", "ts": conversion_ts, "value": value, **common})
                )  # fmt: skip
        return {"event_id": f"k{self.event_counter:012d}-{choice.decision_id}", "type": "click",
                "ts": click_ts, "value": 0.0, **common}  # fmt: skip

    def deliver(self, clicks: list[dict[str, Any]], *, final: bool) -> list[dict[str, Any]]:
        """Send clicks, due conversions and last step's duplicates; return the conversions."""
        now = self.clock()
        due = [event for ts, event in self.pending_conversions if final or ts <= now]
        self.pending_conversions = [
            (ts, event) for ts, event in self.pending_conversions if not final and ts > now
        ]
        for event in due:
            self.totals["conversions"] += 1
            self.totals["value"] += event["value"]
        batch = clicks + due
        duplicate_rate = self.scenario.invalid_traffic.duplicate_rate
        again: list[dict[str, Any]] = []
        if duplicate_rate > 0 and batch and not final:
            repeat = self.rng.random(len(batch)) < duplicate_rate
            again = [event for event, twice in zip(batch, repeat, strict=True) if twice]
        self.totals["duplicates_sent"] += len(self.resend)
        events = self.resend + batch
        self.resend = again
        if events:
            result = self.engine.record(events)
            self.outcomes["accepted"] += result.accepted
            self.outcomes["duplicates"] += result.duplicates
            self.outcomes["rejected"] += result.rejected
            for error in result.errors[: max(0, 5 - len(self.rejected_examples))]:
                self.rejected_examples.append({"field": error.field, "reason": error.reason})
        return due

    # -- cadences ------------------------------------------------------------------------------

    def retire_and_refill(self, hours_done: int) -> None:
        change = self.engine.retire_and_refill(self.campaign_id, seed=self.seed * 7919 + hours_done)
        for added in change["added"]:
            self.text_of[added["variant_id"]] = added["text"]
            self.born_hour[added["variant_id"]] = float(hours_done)
        self.lifecycle_log.append(
            {"hour": hours_done, "retired": change["retired"],
             "added": [a["variant_id"] for a in change["added"]],
             "notes": change.get("notes", [])}
        )  # fmt: skip

    def measure_round(self, round_index: int, retrained: bool, detail: dict | None) -> None:
        """Score a fresh batch of generated candidates against the hidden audience.

        The batch (``retraining.probe_candidates``, default the pool size) is measurement
        only: it is never added to the campaign. Diversity is the mean distinct-trigram
        share of pool-sized slices of the batch, so it reads the same whatever the probe size.
        """
        if self.scenario.brief is None:
            return
        pool_size = self.scenario.generators.pool_size
        n_probe = self.scenario.retraining.probe_candidates or pool_size
        result = self.engine.pool.generate(self.brief, n_probe, seed=self.seed * 1000 + round_index)
        texts = [c.text for c in result.candidates]
        ctr = self.truth.ctr(texts, False) @ self.world.shares if texts else np.array([])
        self.rounds.append(
            {
                "round": round_index,
                "hour": (self.clock() - self.scenario.traffic.start).total_seconds() / 3600,
                "retrained": retrained,
                "n_candidates": len(texts),
                "mean_true_ctr": float(ctr.mean()) if texts else None,
                "sem_true_ctr": float(ctr.std(ddof=1) / math.sqrt(len(texts)))
                if len(texts) > 1
                else None,
                "max_true_ctr": float(ctr.max()) if texts else None,
                "distinct_trigrams": diversity(texts, pool_size),
                "model_version": getattr(self.engine.pool, "model_version", None),
                "detail": detail or {},
            }
        )


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
    engine = Engine(db_path, config=config, clock=clock, seed=seed, pool=_make_pool(scenario))
    run = _Run(scenario, seed, engine, world, clock)
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
    result = _assemble(
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


def _assemble(
    run: _Run,
    *,
    final: dict[str, Any],
    winner: dict[str, Any] | None,
    elapsed: float,
    db_path: Path | None,
) -> EngineRunResult:
    scenario, world, truth, totals = run.scenario, run.world, run.truth, run.totals
    seed, born_hour, outcomes = run.seed, run.born_hour, run.outcomes
    shares = world.shares
    texts = [v["text"] for v in final["variants"]]
    true_ctr = truth.ctr(texts, False) @ shares if texts else np.array([])
    true_cvr = (truth.ctr(texts, False) * truth.cvr(texts)) @ shares if texts else np.array([])
    served: dict[str, list[float]] = {}
    for row in run.hourly_rows:
        tally = served.setdefault(row["variant_id"], [0.0, 0.0])
        tally[0] += row["impressions"]
        tally[1] += row["expected_clicks"]
    variants = []
    for index, variant in enumerate(final["variants"]):
        shown, expected_clicks = served.get(variant["variant_id"], (0.0, 0.0))
        variants.append(
            {
                "variant_id": variant["variant_id"],
                "text": variant["text"],
                "status": variant["status"],
                "generator": variant.get("generator"),
                "added_at_hour": born_hour.get(variant["variant_id"], 0.0),
                "impressions": variant["impressions"],
                "clicks": variant["clicks"],
                "conversions": variant["conversions"],
                "true_ctr": float(true_ctr[index]),
                # what the impressions it actually got were worth (segments, fatigue, shift)
                "true_ctr_served": expected_clicks / shown if shown else None,
                "true_conversions_per_impression": float(true_cvr[index]),
                "posterior_mean": variant["posterior_mean"],
                "interval_95": variant["interval_95"],
                "probability_best": variant["probability_best"],
            }
        )
    best_index = int(np.argmax(true_ctr)) if texts else None
    winner_summary = None
    if winner is not None:
        winner_id = winner["variant_id"]
        winner_index = next(i for i, v in enumerate(variants) if v["variant_id"] == winner_id)
        winner_summary = {
            **{k: v for k, v in winner.items() if k != "variant_id"},
            "variant_id": winner_id,
            "text": variants[winner_index]["text"],
            "true_ctr": variants[winner_index]["true_ctr"],
            "is_true_best": winner_index == best_index,
        }
    steps = pl.DataFrame(
        run.step_rows,
        schema={"hour": pl.Float64, "impressions": pl.Int64, "expected_clicks": pl.Float64,
                "oracle_clicks": pl.Float64},
    ).with_columns(
        (pl.col("oracle_clicks") - pl.col("expected_clicks")).cum_sum().alias("cumulative_regret")
    )  # fmt: skip
    hourly = pl.DataFrame(
        run.hourly_rows,
        schema={"hour": pl.Float64, "variant_id": pl.String, "impressions": pl.Int64,
                "clicks": pl.Int64, "conversions": pl.Int64, "expected_clicks": pl.Float64},
    )  # fmt: skip
    summary = {
        "scenario": scenario.name,
        "seed": seed,
        "mode": "engine",
        "campaign_id": final["campaign_id"],
        "hours": scenario.traffic.hours,
        "segments": list(world.segment_names),
        "impressions": int(totals["impressions"]),
        "clicks": int(totals["clicks"]),
        "conversions": int(totals["conversions"]),
        "conversion_value": round(float(totals["value"]), 2),
        "expected_clicks": float(totals["expected_clicks"]),
        "oracle_clicks": float(totals["oracle_clicks"]),
        "regret": float(totals["oracle_clicks"] - totals["expected_clicks"]),
        "events": {
            **outcomes,
            "duplicates_sent": int(totals["duplicates_sent"]),
            "out_of_order_clicks_sent": int(totals["out_of_order_sent"]),
            "conversions_outside_window": int(totals["conversions_outside_window"]),
            "rejected_examples": run.rejected_examples,
        },
        "data_quality": final.get("data_quality", {}),
        "winner": winner_summary,
        "true_best_variant_id": variants[best_index]["variant_id"]
        if best_index is not None
        else None,
        "variants": variants,
        "lifecycle": run.lifecycle_log,
        "retraining_rounds": run.rounds,
        "seconds": round(elapsed, 3),
        "impressions_per_second": totals["impressions"] / elapsed if elapsed > 0 else None,
        "db_path": str(db_path) if db_path is not None else None,
        "policy": scenario.policy.model_dump(mode="json"),
    }
    return EngineRunResult(
        summary=summary, hourly=hourly, steps=steps, variants=variants, rounds=run.rounds,
        db_path=db_path,
    )  # fmt: skip
