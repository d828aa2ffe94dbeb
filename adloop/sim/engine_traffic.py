"""One engine-mode run's traffic: choose, show, click, convert and deliver, step by step.

A :class:`CampaignRun` holds the engine, the world, the simulated clock and the tallies of one
run; :func:`adloop.sim.engine_run.run_scenario` drives it hour by hour (``serve`` each step, then
the cadences: ``retire_and_refill`` and ``measure_round``).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from adloop.sim.engine_summary import diversity
from adloop.sim.features import language_of
from adloop.sim.scenario import Scenario
from adloop.sim.world import World

if TYPE_CHECKING:
    from adloop.sim.engine_run import SimClock

__all__ = ["CampaignRun", "TrueRateCache", "make_pool"]


class TrueRateCache:
    """Cached true rates of each variant text, unshifted and shifted."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._ctr: dict[tuple[str, bool], np.ndarray] = {}
        self._cvr: dict[str, np.ndarray] = {}

    def ctr(self, texts: list[str], shifted: bool) -> np.ndarray:
        """True CTR per text and segment, shape (texts, segments)."""
        missing = list(dict.fromkeys(t for t in texts if (t, shifted) not in self._ctr))
        if missing:
            rates = self.world.true_rates(missing, shifted=shifted)
            for i, text in enumerate(missing):
                self._ctr[(text, shifted)] = rates.ctr[i]
                self._cvr[text] = rates.cvr[i]
        return np.array([self._ctr[(t, shifted)] for t in texts])

    def cvr(self, texts: list[str]) -> np.ndarray:
        """True conversion rate per click, per text and segment."""
        self.ctr(texts, False)
        return np.array([self._cvr[t] for t in texts])


def _brief_for(scenario: Scenario) -> dict[str, Any]:
    """The scenario's brief, or one made from its name and its variants' language."""
    if scenario.brief is not None:
        return dict(scenario.brief)
    language = language_of(" ".join(scenario.variants or []))
    return {"product": scenario.name, "brand": scenario.name, "language": language}


def make_pool(scenario: Scenario) -> Any:
    """The generator pool a scenario's campaign draws variants from (``None`` if fixed)."""
    if scenario.variants is not None and scenario.lifecycle.retire_refill_every_hours is None:
        return None  # fixed variants, never refilled: the engine needs no generators
    from adloop.generators import GeneratorPool

    return GeneratorPool(list(scenario.generators.names), model_dir=scenario.generators.model_dir)


class CampaignRun:
    """The state of one engine-mode run: the engine, the world, the clock and the tallies."""

    def __init__(
        self, scenario: Scenario, seed: int, engine: Any, world: World, clock: SimClock
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.engine = engine
        self.world = world
        self.clock = clock
        self.truth = TrueRateCache(world)
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
        # per segment: impressions, clicks, expected clicks, oracle clicks
        self.segment_totals: dict[str, list[float]] = {
            name: [0, 0, 0.0, 0.0] for name in world.segment_names
        }
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
            # The simulator has no person to review generated copy: it serves as written.
            auto_approve=True,
            per_segment=scenario.generators.per_segment,
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
        servable_rows = self.engine.store.variants(self.campaign_id, statuses=("active", "winner"))
        # per variant: impressions, clicks, conversions, expected clicks
        stats: dict[str, list[float]] = {}
        clicks: list[dict[str, Any]] = []
        expected = oracle = 0.0
        for segment_index, count in enumerate(per_segment.tolist()):
            if count == 0:
                continue
            segment = self.world.segment_names[segment_index]
            choices = self._choose(count, segment)
            variant_ids = [c.variant_id for c in choices]
            shown_ids, inverse = np.unique(np.array(variant_ids), return_inverse=True)
            shown = shown_ids.tolist()
            shown_texts = [self.text_of[v] for v in shown]
            ctr = self.truth.ctr(shown_texts, shifted)[:, segment_index] * self._fatigue(shown)
            ctr = ctr[inverse]
            cvr = self.truth.cvr(shown_texts)[:, segment_index][inverse]
            clicked = self.rng.random(len(choices)) < ctr
            # Oracle: the best variant this segment may be shown (its targeting allows it),
            # shown to all of it.
            servable = [
                v["variant_id"]
                for v in servable_rows
                if not v.get("segments") or segment in v["segments"]
            ]
            best = self.truth.ctr([self.text_of[v] for v in servable], shifted)[:, segment_index]
            segment_oracle = (
                float((best * self._fatigue(servable)).max()) * count if servable else 0.0
            )
            oracle += segment_oracle
            expected += float(ctr.sum())
            tally = self.segment_totals[segment]
            tally[0] += count
            tally[1] += int(clicked.sum())
            tally[2] += float(ctr.sum())
            tally[3] += segment_oracle
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
                "texts": texts,
                "model_version": getattr(self.engine.pool, "model_version", None),
                "detail": detail or {},
            }
        )
