"""What an engine-mode run produced: :class:`EngineRunResult`, assembled from the run's tallies.

:func:`assemble_result` turns the rows and totals a :class:`~adloop.sim.engine_traffic.CampaignRun`
collected, and the engine's final view of the campaign, into the JSON-ready summary and the
frames the report (:mod:`adloop.sim.report`) draws; :func:`diversity` scores generated texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from adloop.sim.engine_traffic import CampaignRun

__all__ = ["EngineRunResult", "assemble_result", "diversity"]


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


def assemble_result(
    run: CampaignRun,
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
                "segments": list(variant.get("segments") or []),
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
        "per_segment_copy": scenario.generators.per_segment,
        "brief": scenario.brief,
        "by_segment": {
            name: {
                "impressions": int(tally[0]),
                "clicks": int(tally[1]),
                "expected_clicks": float(tally[2]),
                "oracle_clicks": float(tally[3]),
            }
            for name, tally in run.segment_totals.items()
        },
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
