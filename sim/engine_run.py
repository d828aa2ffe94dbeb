"""Engine mode: a scenario played through the real :class:`optimizer.Engine` on a simulated clock.

The run does what an ad server and its audience would do, hour by simulated hour:

1. the engine chooses a variant for every impression (``choose_many`` per segment, from its
   in-memory snapshot; each decision and its impression are logged to the DuckDB store);
2. the :class:`sim.World` decides who clicks (true CTR per segment, with fatigue and a
   preference shift when the scenario asks for them) and who converts, after an exponential
   delay, inside the attribution window;
3. clicks and due conversions are sent with ``engine.record`` — with duplicate deliveries and
   clicks time-stamped before their impression when the scenario injects invalid traffic;
4. on the scenario's cadences: ``engine.refresh`` (posterior snapshot), ``retire_and_refill``,
   a retraining round (the ``on_retrain(engine, round)`` hook; see :func:`run_scenario`), and
   finally ``declare_winner``.

Every hour yields plain rows (impressions, clicks, expected and oracle clicks per variant) that
the report (:mod:`sim.report`) draws from.
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

from sim.errors import ScenarioError
from sim.features import language_of
from sim.scenario import Scenario
from sim.world import World

__all__ = ["EngineRunResult", "RetrainHook", "SimClock", "run_scenario"]


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
    from generators import GeneratorPool

    return GeneratorPool(list(scenario.generators.names), model_dir=scenario.generators.model_dir)


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
        A validated :class:`sim.Scenario` (see :func:`sim.load_scenario`).
    seed:
        Overrides the scenario's seed (world scorer, traffic, engine choices).
    db_path:
        DuckDB file to use; default: a fresh file in a temporary folder, removed afterwards.
    out:
        When given, writes ``summary.json``, PNG plots and ``report.html`` there.
    on_retrain:
        Hook called each retraining round when ``retraining.enabled`` (see :class:`RetrainHook`).
    progress:
        Show a progress bar on stderr.
    engine_config:
        Extra :class:`optimizer.EngineConfig` fields (e.g. ``{"half_life": ...}``).

    Example
    -------
    >>> from sim import load_scenario
    >>> scenario = load_scenario({"variants": ["Bespoke rings", "Shop rings today — 20% off!"],
    ...     "traffic": {"hours": 3, "impressions_per_hour": 200}, "lifecycle":
    ...     {"retire_refill_every_hours": None, "declare_winner": False}})
    >>> result = run_scenario(scenario, seed=1)
    >>> result.summary["impressions"] > 0
    True
    """
    from optimizer import Engine, EngineConfig

    if scenario.policy.name != "ts":
        raise ScenarioError(
            f"engine mode runs the engine's Thompson sampling; {scenario.policy.name!r} is "
            "available in fast mode (sim.simulate)",
            key_path="policy.name",
        )
    seed = scenario.seed if seed is None else seed
    world = scenario.build_world(seed)
    world.reset(seed)
    truth = _Truth(world)
    rng = np.random.default_rng([seed, 7])
    traffic, conversions, invalid = scenario.traffic, scenario.conversions, scenario.invalid_traffic
    shift = scenario.drift.preference_shift
    segment_names = list(world.segment_names)
    shares = world.shares

    refresh_hours = scenario.refresh.every_hours
    steps_per_hour = max(1, round(1.0 / refresh_hours)) if refresh_hours < 1 else 1
    refresh_every_steps = 1 if refresh_hours < 1 else max(1, round(refresh_hours))
    step_length = timedelta(hours=1) / steps_per_hour

    temporary: tempfile.TemporaryDirectory[str] | None = None
    if db_path is None:
        temporary = tempfile.TemporaryDirectory(prefix="adloop-sim-")
        db_path = Path(temporary.name) / "sim.duckdb"
    db_path = Path(db_path)
    clock = SimClock(traffic.start)
    config = EngineConfig(
        # The scenario's cadence drives refreshes; the engine must not refresh on its own.
        refresh_interval=1e12,
        refresh_events=2**62,
        background=False,
        floor=scenario.policy.floor,
        top_two=scenario.policy.top_two,
        n_draws=scenario.policy.n_draws,
        half_life=(
            timedelta(hours=scenario.policy.half_life_hours)
            if scenario.policy.half_life_hours is not None
            else None
        ),
        **(engine_config or {}),
    )
    started = time.perf_counter()
    engine = Engine(db_path, config=config, clock=clock, seed=seed, pool=_make_pool(scenario))
    try:
        brief = _brief_for(scenario)
        view = engine.create_campaign(
            brief,
            n_candidates=scenario.generators.pool_size,
            objective=scenario.objective,
            variants=[{"text": text} for text in scenario.variants] if scenario.variants else None,
            name=scenario.name,
            seed=seed,
        )
        campaign_id = view["campaign_id"]
        max_batch = engine.config.max_choose_n
        exposure: dict[str, float] = {}
        text_of = {v["variant_id"]: v["text"] for v in view["variants"]}
        born_hour = {v["variant_id"]: 0.0 for v in view["variants"]}
        pending_conversions: list[tuple[datetime, dict[str, Any]]] = []
        resend: list[dict[str, Any]] = []
        totals = {"impressions": 0, "clicks": 0, "conversions": 0, "value": 0.0,
                  "expected_clicks": 0.0, "oracle_clicks": 0.0, "duplicates_sent": 0,
                  "out_of_order_sent": 0, "conversions_outside_window": 0}  # fmt: skip
        outcomes = {"accepted": 0, "duplicates": 0, "rejected": 0}
        rejected_examples: list[dict[str, Any]] = []
        hourly_rows: list[dict[str, Any]] = []
        step_rows: list[dict[str, Any]] = []
        rounds: list[dict[str, Any]] = []
        lifecycle_log: list[dict[str, Any]] = []
        winner: dict[str, Any] | None = None
        event_counter = 0

        def probe_round(round_index: int, hook_ran: bool, detail: dict[str, Any] | None) -> None:
            if scenario.brief is None:
                return
            result = engine.pool.generate(
                brief, scenario.generators.pool_size, seed=seed * 1000 + round_index
            )
            texts = [c.text for c in result.candidates]
            ctr = truth.ctr(texts, False) @ shares if texts else np.array([])
            rounds.append(
                {
                    "round": round_index,
                    "hour": (clock() - traffic.start).total_seconds() / 3600,
                    "retrained": hook_ran,
                    "n_candidates": len(texts),
                    "mean_true_ctr": float(ctr.mean()) if texts else None,
                    "max_true_ctr": float(ctr.max()) if texts else None,
                    "distinct_trigrams": _distinct_trigrams(texts),
                    "model_version": getattr(engine.pool, "model_version", None),
                    "detail": detail or {},
                }
            )

        def send(events: list[dict[str, Any]]) -> None:
            if not events:
                return
            result = engine.record(events)
            outcomes["accepted"] += result.accepted
            outcomes["duplicates"] += result.duplicates
            outcomes["rejected"] += result.rejected
            for error in result.errors[: max(0, 5 - len(rejected_examples))]:
                rejected_examples.append({"field": error.field, "reason": error.reason})

        retraining = scenario.retraining
        with_rounds = retraining.enabled or retraining.measure_candidates
        if with_rounds:
            probe_round(0, False, None)
        n_steps = traffic.hours * steps_per_hour
        progress_bar = _progress(progress, n_steps, scenario.name)
        for step in range(n_steps):
            hour = step / steps_per_hour
            step_start = traffic.start + step * step_length
            clock.set(step_start)
            shifted = bool(shift.enabled and hour >= shift.at_hour)
            cycle = 1.0 + traffic.daily_cycle * math.cos(
                2 * math.pi * ((step_start.hour + step_start.minute / 60) - traffic.peak_hour) / 24
            )
            n_impressions = int(rng.poisson(traffic.impressions_per_hour * cycle / steps_per_hour))
            per_segment = rng.multinomial(n_impressions, shares)
            step_stats: dict[str, list[float]] = {}
            step_oracle = step_expected = 0.0
            click_events: list[dict[str, Any]] = []
            servable = [
                v["variant_id"]
                for v in engine.store.variants(campaign_id, statuses=("active", "winner"))
            ]
            servable_texts = [text_of[v] for v in servable]
            for segment_index, count in enumerate(per_segment.tolist()):
                if count == 0:
                    continue
                segment = segment_names[segment_index]
                choices = []
                remaining = count
                while remaining > 0:
                    take = min(remaining, max_batch)
                    choices.extend(engine.choose_many(campaign_id, take, segment=segment))
                    remaining -= take
                variant_ids = [c.variant_id for c in choices]
                for c in choices:
                    text_of.setdefault(c.variant_id, c.text)
                shown_ids, inverse = np.unique(np.array(variant_ids), return_inverse=True)
                shown_texts = [text_of[v] for v in shown_ids.tolist()]
                shown_fatigue = world.fatigue(
                    np.array([exposure.get(v, 0.0) for v in shown_ids.tolist()])
                )
                ctr = (truth.ctr(shown_texts, shifted)[:, segment_index] * shown_fatigue)[inverse]
                cvr = truth.cvr(shown_texts)[:, segment_index][inverse]
                clicked = rng.random(len(choices)) < ctr
                # Oracle: the best servable variant for this segment, shown to everyone.
                best = float(
                    (truth.ctr(servable_texts, shifted)[:, segment_index]
                     * world.fatigue(np.array([exposure.get(v, 0.0) for v in servable]))).max()
                ) if servable_texts else 0.0  # fmt: skip
                step_oracle += best * count
                step_expected += float(ctr.sum())
                for index in np.flatnonzero(clicked).tolist():
                    choice = choices[index]
                    out_of_order = invalid.out_of_order_rate > 0 and (
                        rng.random() < invalid.out_of_order_rate
                    )
                    offset = (
                        -rng.uniform(1, 300)
                        if out_of_order
                        else rng.uniform(1, 0.9 * step_length.total_seconds())
                    )
                    click_ts = step_start + timedelta(seconds=float(offset))
                    totals["out_of_order_sent"] += int(out_of_order)
                    event_counter += 1
                    click_events.append(
                        {"event_id": f"k{event_counter:012d}-{choice.decision_id}",
                         "type": "click", "campaign_id": campaign_id,
                         "variant_id": choice.variant_id, "decision_id": choice.decision_id,
                         "segment": segment, "ts": click_ts, "value": 0.0}
                    )  # fmt: skip
                    if rng.random() < cvr[index]:
                        delay_hours = rng.exponential(conversions.delay_mean_hours)
                        if delay_hours > conversions.attribution_window_hours:
                            totals["conversions_outside_window"] += 1
                            continue
                        conversion_ts = click_ts + timedelta(hours=float(delay_hours))
                        pending_conversions.append(
                            (conversion_ts,
                             {"event_id": f"c{event_counter:012d}-{choice.decision_id}",
                              "type": "conversion", "campaign_id": campaign_id,
                              "variant_id": choice.variant_id, "decision_id": choice.decision_id,
                              "segment": segment, "ts": conversion_ts,
                              "value": float(round(rng.exponential(conversions.value_mean), 2))})
                        )  # fmt: skip
                for variant_id, was_clicked, rate in zip(variant_ids, clicked, ctr, strict=True):
                    row = step_stats.setdefault(variant_id, [0, 0, 0, 0.0])
                    row[0] += 1
                    row[1] += int(was_clicked)
                    row[3] += float(rate)
                for variant_id, n_shown in zip(
                    shown_ids.tolist(), np.bincount(inverse).tolist(), strict=True
                ):
                    exposure[variant_id] = exposure.get(variant_id, 0.0) + n_shown
                totals["impressions"] += count
                totals["clicks"] += int(clicked.sum())
            # Deliver this step's events just before the step ends.
            clock.set(step_start + step_length - timedelta(seconds=1))
            now = clock()
            due = [event for ts, event in pending_conversions if ts <= now]
            pending_conversions = [(ts, event) for ts, event in pending_conversions if ts > now]
            for event in due:
                totals["conversions"] += 1
                totals["value"] += event["value"]
                row = step_stats.setdefault(event["variant_id"], [0, 0, 0, 0.0])
                row[2] += 1
            batch = click_events + due
            if invalid.duplicate_rate > 0 and batch:
                again = rng.random(len(batch)) < invalid.duplicate_rate
                next_resend = [event for event, repeat in zip(batch, again, strict=True) if repeat]
            else:
                next_resend = []
            totals["duplicates_sent"] += len(resend)
            send(resend + batch)
            resend = next_resend
            for variant_id, (n_shown, n_clicks, n_conversions, expected) in step_stats.items():
                hourly_rows.append(
                    {"hour": hour, "variant_id": variant_id, "impressions": int(n_shown),
                     "clicks": int(n_clicks), "conversions": int(n_conversions),
                     "expected_clicks": expected}
                )  # fmt: skip
            totals["oracle_clicks"] += step_oracle
            totals["expected_clicks"] += step_expected
            step_rows.append(
                {"hour": hour, "impressions": n_impressions, "expected_clicks": step_expected,
                 "oracle_clicks": step_oracle}
            )  # fmt: skip
            step_index = step + 1
            if step_index % refresh_every_steps == 0:
                engine.refresh(campaign_id)
            hour_done = step_index % steps_per_hour == 0
            hours_done = step_index // steps_per_hour
            cadence = scenario.lifecycle.retire_refill_every_hours
            if (
                hour_done and cadence and hours_done % cadence == 0 and hours_done < traffic.hours
                and winner is None
            ):  # fmt: skip
                change = engine.retire_and_refill(campaign_id, seed=seed * 7919 + hours_done)
                for added in change["added"]:
                    text_of[added["variant_id"]] = added["text"]
                    born_hour[added["variant_id"]] = float(hours_done)
                lifecycle_log.append(
                    {"hour": hours_done, "retired": change["retired"],
                     "added": [a["variant_id"] for a in change["added"]],
                     "notes": change.get("notes", [])}
                )  # fmt: skip
            if (
                hour_done and with_rounds and hours_done % retraining.every_hours == 0
                and hours_done < traffic.hours
            ):  # fmt: skip
                round_index = hours_done // retraining.every_hours
                detail = None
                hook_ran = False
                if retraining.enabled and on_retrain is not None:
                    detail = on_retrain(engine, round_index)
                    hook_ran = True
                probe_round(round_index, hook_ran, detail)
            if scenario.lifecycle.stop_on_winner and hour_done and winner is None:
                winner = engine.declare_winner(campaign_id)
                if winner is not None:
                    progress_bar.advance(n_steps - step - 1)
                    break
            progress_bar.advance(1)
        progress_bar.close()
        # Deliver what is still in flight (attribution window permitting), then decide.
        clock.set(clock() + timedelta(hours=conversions.attribution_window_hours))
        late = [event for _, event in pending_conversions]
        for event in late:
            totals["conversions"] += 1
            totals["value"] += event["value"]
        totals["duplicates_sent"] += len(resend)
        send(resend + late)
        engine.refresh(campaign_id)
        if scenario.lifecycle.declare_winner and winner is None:
            winner = engine.declare_winner(campaign_id)
        final = engine.campaign(campaign_id)
        engine.flush()
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    result = _assemble(
        scenario=scenario, seed=seed, world=world, truth=truth, final=final, totals=totals,
        outcomes=outcomes, rejected_examples=rejected_examples, hourly_rows=hourly_rows,
        step_rows=step_rows,
        rounds=rounds, lifecycle_log=lifecycle_log, winner=winner, born_hour=born_hour,
        elapsed=elapsed, db_path=None if temporary is not None else db_path,
    )  # fmt: skip
    if temporary is not None:
        temporary.cleanup()
    if out is not None:
        from sim.report import write_report

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


def _progress(enabled: bool, total: int, label: str) -> _Progress:
    return _Progress(enabled, total, label)


def _assemble(
    *,
    scenario: Scenario,
    seed: int,
    world: World,
    truth: _Truth,
    final: dict[str, Any],
    totals: dict[str, Any],
    outcomes: dict[str, int],
    rejected_examples: list[dict[str, Any]],
    hourly_rows: list[dict[str, Any]],
    step_rows: list[dict[str, Any]],
    rounds: list[dict[str, Any]],
    lifecycle_log: list[dict[str, Any]],
    winner: dict[str, Any] | None,
    born_hour: dict[str, float],
    elapsed: float,
    db_path: Path | None,
) -> EngineRunResult:
    shares = world.shares
    texts = [v["text"] for v in final["variants"]]
    true_ctr = truth.ctr(texts, False) @ shares if texts else np.array([])
    true_cvr = (truth.ctr(texts, False) * truth.cvr(texts)) @ shares if texts else np.array([])
    variants = []
    for index, variant in enumerate(final["variants"]):
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
        step_rows,
        schema={"hour": pl.Float64, "impressions": pl.Int64, "expected_clicks": pl.Float64,
                "oracle_clicks": pl.Float64},
    ).with_columns(
        (pl.col("oracle_clicks") - pl.col("expected_clicks")).cum_sum().alias("cumulative_regret")
    )  # fmt: skip
    hourly = pl.DataFrame(
        hourly_rows,
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
            "rejected_examples": rejected_examples,
        },
        "data_quality": final.get("data_quality", {}),
        "winner": winner_summary,
        "true_best_variant_id": variants[best_index]["variant_id"]
        if best_index is not None
        else None,
        "variants": variants,
        "lifecycle": lifecycle_log,
        "retraining_rounds": rounds,
        "seconds": round(elapsed, 3),
        "impressions_per_second": totals["impressions"] / elapsed if elapsed > 0 else None,
        "db_path": str(db_path) if db_path is not None else None,
        "policy": scenario.policy.model_dump(mode="json"),
    }
    return EngineRunResult(
        summary=summary, hourly=hourly, steps=steps, variants=variants, rounds=rounds,
        db_path=db_path,
    )  # fmt: skip
