"""Bandits benchmark: the engine's chooser side by side with MABWiser, on the same evidence.

``adloop bench bandits [--quick]``. Everything timed on our side is what an ad server runs:

* single decisions: ``Engine.choose`` on a live campaign of 10 and 1,000 variants (a real DuckDB
  store, decision logging running); MABWiser: ``MAB.predict()``;
* batch decisions: ``Engine.choose_many(campaign, 1000)`` (each decision logged); MABWiser:
  ``predict(contexts)``;
* ingest plus posterior refresh: ``Engine.record`` of a batch of impression and click events
  (committed to the append-only log) followed by ``Engine.refresh`` (arm statistics re-read and
  the allocation rebuilt); MABWiser: ``partial_fit`` on the same events.

Regret is its own suite (``adloop bench regret``). MABWiser is a benchmark-only dependency
(``pip install adloop[bench]``).
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench._common import best_of, max_rss_mb, write_results

#: Impressions per variant already in the log when decisions are timed.
PRIOR_IMPRESSIONS = 400
START = datetime(2026, 1, 1)


def _click_rates(n_arms: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.01, 0.05, n_arms)


def _events(
    campaign_id: str, variant_ids: list[str], shown: np.ndarray, clicked: np.ndarray, first: int
) -> pa.Table:
    """``shown[i]`` impressions and ``clicked[i]`` clicks of arm ``i``, with ids ``first ..``."""
    arm_index = np.arange(len(variant_ids))
    arms = np.concatenate([np.repeat(arm_index, shown), np.repeat(arm_index, clicked)])
    kinds = np.repeat(["impression", "click"], [int(shown.sum()), int(clicked.sum())])
    n = len(arms)
    ts = np.datetime64(START, "us") + (first + np.arange(n)).astype("timedelta64[ms]")
    return pa.table(
        {
            "event_id": pa.array(np.char.add("e", np.arange(first, first + n).astype(str))),
            "type": pa.array(kinds),
            "campaign_id": pa.array(np.full(n, campaign_id)),
            "variant_id": pa.array(np.asarray(variant_ids)[arms]),
            "ts": pa.array(ts),
        }
    )


class _Live:
    """A real engine over a fresh DuckDB file, with one campaign of ``n_arms`` variants."""

    def __init__(self, folder: Path, n_arms: int) -> None:
        from adloop.optimizer import Engine, EngineConfig

        self.engine = Engine(
            folder / f"arms{n_arms}.duckdb",
            config=EngineConfig(
                refresh_interval=3600.0,
                refresh_events=10**9,
                max_variants_per_campaign=1000,
            ),
            seed=0,
        )
        brief = {
            "product": "bespoke rings",
            "language": "en",
            "variants": [{"text": f"Bespoke rings, design {i}"} for i in range(n_arms)],
        }
        view = self.engine.create_campaign(brief)
        self.campaign_id = view["campaign_id"]
        self.variant_ids = [variant["variant_id"] for variant in view["variants"]]
        self.n_events = 0
        rates = _click_rates(n_arms)
        shown = np.full(n_arms, PRIOR_IMPRESSIONS)
        clicked = np.random.default_rng(1).binomial(shown, rates)
        self.record(shown, clicked)
        self.engine.refresh(self.campaign_id)
        self.shown, self.clicked = shown, clicked

    def record(self, shown: np.ndarray, clicked: np.ndarray) -> int:
        batch = _events(self.campaign_id, self.variant_ids, shown, clicked, self.n_events)
        self.n_events += batch.num_rows
        result = self.engine.record(batch)
        assert result.accepted == batch.num_rows, result
        return batch.num_rows

    def close(self) -> None:
        self.engine.close()


def mabwiser(n_arms: int, seed: int, shown=None, clicked=None):
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(
        arms=list(range(n_arms)), learning_policy=LearningPolicy.ThompsonSampling(), seed=seed
    )
    if shown is None:
        mab.fit(decisions=np.array([], dtype=int), rewards=np.array([]))
    else:  # the same evidence as the engine's log, as individual events
        decisions = np.repeat(np.arange(n_arms), shown)
        rewards = np.concatenate(
            [np.arange(s) < c for s, c in zip(shown, clicked, strict=True)]
        ).astype(int)
        mab.fit(decisions=decisions, rewards=rewards)
    return mab


def _row(measure: str, system: str, n_arms: int, value: float, unit: str, **extra) -> dict:
    return {
        "measure": measure,
        "system": system,
        "arms": n_arms,
        "value": value,
        "unit": unit,
        **extra,
    }


def _engine_rows(quick: bool) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        return [
            row for n_arms in (10, 1000) for row in _engine_rows_for(Path(folder), n_arms, quick)
        ]


def _engine_rows_for(folder: Path, n_arms: int, quick: bool) -> list[dict]:
    rows = []
    live = _Live(folder, n_arms)
    engine, campaign_id = live.engine, live.campaign_id
    mab = mabwiser(n_arms, 0, live.shown, live.clicked)

    n_calls = 20_000 if quick else 100_000

    def choose(n=n_calls):
        for _ in range(n):
            engine.choose(campaign_id)

    rows.append(
        _row(
            "single decision",
            "adloop Engine.choose",
            n_arms,
            best_of(choose, 3) / n_calls * 1e6,
            "us",
        )
    )
    n_mab = (200 if quick else 2000) if n_arms == 10 else (5 if quick else 40)

    def predict(n=n_mab):
        for _ in range(n):
            mab.predict()

    rows.append(
        _row(
            "single decision",
            "MABWiser TS predict()",
            n_arms,
            best_of(predict, 3) / n_mab * 1e6,
            "us",
        )
    )

    n_batches = 20 if quick else 100

    def choose_many(n=n_batches):
        for _ in range(n):
            engine.choose_many(campaign_id, 1000)

    rows.append(
        _row(
            "batch decisions",
            "adloop Engine.choose_many(n=1000)",
            n_arms,
            n_batches * 1000 / best_of(choose_many, 3) / 1e6,
            "M decisions/s",
        )
    )
    n_mab = 10_000 if n_arms == 10 else 200
    seconds = best_of(lambda mab=mab, n=n_mab: mab.predict(np.zeros((n, 1))), 2)
    rows.append(
        _row(
            "batch decisions",
            "MABWiser TS predict(contexts)",
            n_arms,
            n_mab / seconds / 1e6,
            "M decisions/s",
        )
    )
    engine.flush()

    # ingest + refresh: 100,000 impressions (and their clicks) per round, as the engine's
    # background refresh sees them; counted as impressions, the unit MABWiser's partial_fit takes
    rng = np.random.default_rng(2)
    rates = _click_rates(n_arms)
    n_rounds = 2 if quick else 5
    batches = []
    for _ in range(n_rounds):
        shown = rng.multinomial(100_000, np.full(n_arms, 1 / n_arms))
        batches.append((shown, rng.binomial(shown, rates)))
    events, refresh_seconds = 0, 0.0
    start = time.perf_counter()
    for shown, clicked in batches:
        live.record(shown, clicked)
        events += int(shown.sum())
        refresh_start = time.perf_counter()
        engine.refresh(campaign_id)
        refresh_seconds += time.perf_counter() - refresh_start
    seconds = time.perf_counter() - start
    rows.append(
        _row(
            "ingest + posterior refresh",
            "adloop Engine.record + refresh",
            n_arms,
            events / seconds / 1e6,
            "M impressions/s",
            refresh_ms=refresh_seconds / n_rounds * 1e3,
            impressions_per_round=events // n_rounds,
        )
    )
    arms = np.concatenate([np.repeat(np.arange(n_arms), s) for s, _ in batches])
    rewards = np.concatenate(
        [
            np.arange(s) < c
            for shown, clicked in batches
            for s, c in zip(shown, clicked, strict=True)
        ]
    ).astype(int)
    n_mab_events = len(arms) if n_arms == 10 else min(len(arms), 20_000)
    seconds = best_of(lambda: mab.partial_fit(arms[:n_mab_events], rewards[:n_mab_events]), 1)
    rows.append(
        _row(
            "ingest + posterior refresh",
            "MABWiser TS partial_fit",
            n_arms,
            n_mab_events / seconds / 1e6,
            "M impressions/s",
        )
    )
    live.close()
    return rows


def main(out: Path, quick: bool) -> None:
    """Run the suite and write ``bandits.json`` / ``bandits.md`` under ``out``."""
    start = time.perf_counter()
    rows = _engine_rows(quick)
    notes = (
        "Engine rows run on a real DuckDB file with the default EngineConfig (background flush "
        "and refresh threads on); MABWiser holds the same evidence (400 impressions per arm, "
        "clicks at fixed rates between 1 and 5 %) as individual events. "
        "Timings are best-of-N. "
        f"Total wall time {time.perf_counter() - start:.0f} s; peak RSS {max_rss_mb():.0f} MiB."
    )
    write_results("bandits", rows, out, notes)
