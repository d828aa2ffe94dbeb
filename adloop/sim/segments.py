"""Per-segment copy against one shared pool: the same scenario, seeds and variant budget.

:func:`compare_segment_copy` plays a scenario through the real engine twice per seed:

``shared``     one pool of ``generators.pool_size`` variants written for the whole audience and
               served to every segment (the engine still allocates per segment);
``targeted``   the same number of variants written for the brief's segments in turn
               (``Brief.for_segment``), each targeted to its segment, so a segment is only
               shown the copy written for it.

Both arms of a seed share the world (its hidden scorer) and the traffic seed. Each seed gives
one paired difference; the summary reports the mean lift of ``targeted`` over ``shared`` in
clicks, CTR and expected clicks (the sum of the true CTRs of the impressions served: the same
comparison without the click noise), with a 95 % t-interval over the seeds, overall and per
segment. The seeds are fixed before running (:data:`SEEDS` unless others are given).

Example
-------
>>> from adloop.sim import load_scenario
>>> scenario = load_scenario("examples/scenario_segments.yaml")  # doctest: +SKIP
>>> comparison = compare_segment_copy(scenario, seeds=range(3))  # doctest: +SKIP
>>> comparison.summary["ctr_lift"]["mean"] > 0  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adloop.sim.engine_run import run_scenario
from adloop.sim.errors import ScenarioError
from adloop.sim.scenario import Scenario

__all__ = ["SEEDS", "SegmentCopyComparison", "compare_segment_copy", "interval"]

#: The seeds of the study, fixed in advance: every published figure uses these.
SEEDS: tuple[int, ...] = tuple(range(20))

_ARMS = ("shared", "targeted")


def interval(values: list[float], confidence: float = 0.95) -> dict[str, float | int | None]:
    """Mean of ``values`` and its two-sided t-interval (``low``/``high`` None for one value).

    Example
    -------
    >>> round(interval([1.0, 2.0, 3.0])["low"], 3)
    -0.484
    """
    from scipy import stats

    n = len(values)
    mean = sum(values) / n if n else math.nan
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "sd": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": n}


@dataclass(frozen=True)
class SegmentCopyComparison:
    """The study's result: one row per (seed, arm), and the summary of the paired lifts."""

    scenario: str
    seeds: tuple[int, ...]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: scenario, seeds, rows and summary."""
        return {"scenario": self.scenario, "seeds": list(self.seeds), "rows": self.rows,
                "summary": self.summary}  # fmt: skip

    def to_markdown(self) -> str:
        """The summary and the per-seed rows as a markdown report."""
        s = self.summary
        lines = [
            f"# Per-segment copy vs one shared pool ({self.scenario})",
            "",
            f"Seeds {_seed_range(self.seeds)} (fixed in advance); both arms of a seed share the "
            f"world and the traffic seed; {s['pool_size']} variants per campaign "
            f"({s['variants_per_segment']} per segment in the targeted arm).",
            "",
            "| measure | shared | targeted | lift of targeted (mean) | 95 % interval |",
            "|---|---:|---:|---:|---|",
        ]
        for key, label, unit in (
            ("clicks", "clicks", 1.0),
            ("ctr", "CTR (%)", 100.0),
            ("expected_clicks", "expected clicks", 1.0),
        ):
            lift = s[f"{key}_lift"]
            lines.append(
                f"| {label} | {s['shared'][key] * unit:,.3f} | {s['targeted'][key] * unit:,.3f} "
                f"| {100 * lift['mean']:+.1f} % | {_percent_interval(lift)} |"
            )
        lines += ["", "Per segment (CTR lift of targeted over shared):", "",
                  "| segment | shared CTR (%) | targeted CTR (%) | lift (mean) | 95 % interval |",
                  "|---|---:|---:|---:|---|"]  # fmt: skip
        for name, row in s["by_segment"].items():
            lift = row["ctr_lift"]
            lines.append(
                f"| {name} | {100 * row['shared_ctr']:.3f} | {100 * row['targeted_ctr']:.3f} | "
                f"{100 * lift['mean']:+.1f} % | {_percent_interval(lift)} |"
            )
        lines += ["", "Per seed:", "",
                  "| seed | arm | impressions | clicks | CTR (%) | expected clicks |",
                  "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
        for row in self.rows:
            lines.append(
                f"| {row['seed']} | {row['arm']} | {row['impressions']:,} | {row['clicks']:,} | "
                f"{100 * row['ctr']:.3f} | {row['expected_clicks']:,.1f} |"
            )
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write ``segments.json`` and ``segments.md`` into folder ``out``; return their paths."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = folder / "segments.json", folder / "segments.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        markdown_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, markdown_path


def _arm(scenario: Scenario, per_segment: bool) -> Scenario:
    """``scenario`` with ``generators.per_segment`` set, validated again (its checks apply)."""
    data = scenario.model_dump()
    data["generators"]["per_segment"] = per_segment
    try:
        return Scenario.model_validate(data)
    except ValueError as error:  # pydantic wraps the scenario's own ScenarioError
        raise ScenarioError(
            f"the per-segment arm is not valid: {error}", key_path="generators.per_segment"
        ) from error


def _row(seed: int, arm: str, summary: dict[str, Any]) -> dict[str, Any]:
    impressions = summary["impressions"]
    return {
        "seed": seed,
        "arm": arm,
        "impressions": impressions,
        "clicks": summary["clicks"],
        "ctr": summary["clicks"] / impressions if impressions else 0.0,
        "expected_clicks": summary["expected_clicks"],
        "oracle_clicks": summary["oracle_clicks"],
        "n_variants": len(summary["variants"]),
        "by_segment": summary["by_segment"],
    }


def compare_segment_copy(
    scenario: Scenario,
    *,
    seeds: Iterable[int] = SEEDS,
    on_run: Callable[[int, str, dict[str, Any]], None] | None = None,
) -> SegmentCopyComparison:
    """Play ``scenario`` with one shared pool and with per-segment copy, for each seed.

    Parameters
    ----------
    scenario:
        A scenario with a brief whose ``segments`` are the world's segments (see
        ``examples/scenario_segments.yaml``); its ``generators.per_segment`` is set per arm.
    seeds:
        The seeds, fixed before running (default :data:`SEEDS`, 0..19).
    on_run:
        Called after each run with ``(seed, arm, row)`` (progress reports).

    Raises
    ------
    ScenarioError
        The scenario cannot write per-segment copy (no brief segments, or ones the world
        does not have); ``key_path`` is ``generators.per_segment``.
    """
    seeds = tuple(int(seed) for seed in seeds)
    if not seeds:
        raise ScenarioError("give at least one seed", key_path="seeds")
    arms = {"shared": _arm(scenario, False), "targeted": _arm(scenario, True)}
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for name in _ARMS:
            row = _row(seed, name, run_scenario(arms[name], seed=seed).summary)
            rows.append(row)
            if on_run is not None:
                on_run(seed, name, row)
    return SegmentCopyComparison(scenario.name, seeds, rows, _summary(scenario, seeds, rows))


def _summary(scenario: Scenario, seeds: tuple[int, ...], rows: list[dict[str, Any]]) -> dict:
    """Means per arm and paired lifts (targeted / shared - 1) with 95 % intervals over seeds."""
    by = {(row["seed"], row["arm"]): row for row in rows}
    pairs = [(by[(seed, "shared")], by[(seed, "targeted")]) for seed in seeds]

    def mean(arm: int, key: str) -> float:
        return sum(pair[arm][key] for pair in pairs) / len(pairs)

    def lifts(key: str) -> list[float]:
        return [b[key] / a[key] - 1.0 if a[key] else math.nan for a, b in pairs]

    segments: dict[str, Any] = {}
    for name in pairs[0][0]["by_segment"]:

        def ctr(row: dict[str, Any], name: str = name) -> float:
            cell = row["by_segment"][name]
            return cell["clicks"] / cell["impressions"] if cell["impressions"] else 0.0

        segments[name] = {
            "shared_ctr": sum(ctr(a) for a, _ in pairs) / len(pairs),
            "targeted_ctr": sum(ctr(b) for _, b in pairs) / len(pairs),
            "ctr_lift": interval(
                [ctr(b) / ctr(a) - 1.0 if ctr(a) else math.nan for a, b in pairs]
            ),  # fmt: skip
        }
    pool_size = scenario.generators.pool_size
    n_segments = len((scenario.brief or {}).get("segments") or []) or 1
    return {
        "seeds": list(seeds),
        "pool_size": pool_size,
        "variants_per_segment": pool_size / n_segments,
        "shared": {k: mean(0, k) for k in ("impressions", "clicks", "ctr", "expected_clicks")},
        "targeted": {k: mean(1, k) for k in ("impressions", "clicks", "ctr", "expected_clicks")},
        "clicks_lift": interval(lifts("clicks")),
        "ctr_lift": interval(lifts("ctr")),
        "expected_clicks_lift": interval(lifts("expected_clicks")),
        "ctr_difference": interval([b["ctr"] - a["ctr"] for a, b in pairs]),
        "seeds_targeted_ahead": sum(b["ctr"] > a["ctr"] for a, b in pairs),
        "by_segment": segments,
    }


def _percent_interval(lift: dict[str, Any]) -> str:
    if lift["low"] is None:
        return "n/a (one seed)"
    return f"[{100 * lift['low']:+.1f} %, {100 * lift['high']:+.1f} %]"


def _seed_range(seeds: tuple[int, ...]) -> str:
    if seeds == tuple(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))
