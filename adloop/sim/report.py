"""Reports of simulated runs: ``summary.json``, PNG plots and a self-contained ``report.html``.

The HTML report shares the live dashboard's wording, names and colours
(:mod:`adloop.optimizer.dashboard_words`, :mod:`adloop.optimizer.dashboard_charts`):
variants are named A, B, C ... in one colour each, rates read as percentages with their
95 % intervals, probabilities never read "0", data quality is explained in sentences with
what to do, and retraining rounds say whether they were promoted or rejected. The winner's
probability of being best is the one the stopping rule declared it with, the number the
terminal prints too.

Figures are PNG files (matplotlib, Agg backend, imported only here), embedded in the page:

* ``cumulative_regret.png`` — expected clicks lost against the best servable variant per segment;
* ``traffic_share.png`` — share of impressions per variant over simulated time;
* ``posterior_intervals.png`` — final CTR estimate and 95 % interval per variant, with the
  true CTR of the impressions it was served marked;
* ``retraining_rounds.png`` — mean true CTR of freshly generated candidates per retraining round,
  rejected rounds marked (only when the run had rounds).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import polars as pl

from adloop.optimizer.dashboard_charts import colour
from adloop.optimizer.dashboard_pages import insights_table
from adloop.optimizer.dashboard_words import (
    percent,
    probability,
    quality_findings,
    rate_with_interval,
    variant_label,
)
from adloop.optimizer.insights import creative_insights

__all__ = ["write_report"]

_TOP_VARIANTS = 8
_CAPTIONS = {
    "cumulative_regret": "Clicks lost against always showing the best variant, as the run goes",
    "traffic_share": "Share of impressions per variant over simulated time",
    "posterior_intervals": "Click-through rate of each variant at the end: estimate, 95 % "
    "interval and true CTR",
    "retraining_rounds": "True CTR of the new candidates written after each retraining round",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _labels(variants: list[dict[str, Any]]) -> dict[str, str]:
    return {v["variant_id"]: variant_label(i) for i, v in enumerate(variants)}


def _hourly_shares(
    hourly: pl.DataFrame, labels: dict[str, str]
) -> tuple[list[float], list[tuple[str, list[float]]]]:
    """Impressions per whole simulated hour for the busiest variants (the rest as 'others')."""
    if not hourly.height:
        return [], []
    per_hour = (
        hourly.with_columns(pl.col("hour").floor().alias("hour"))
        .group_by(["hour", "variant_id"])
        .agg(pl.col("impressions").sum())
    )
    totals = per_hour.group_by("variant_id").agg(pl.col("impressions").sum())
    top = totals.sort("impressions", descending=True)["variant_id"].head(_TOP_VARIANTS).to_list()
    wide = (
        per_hour.with_columns(
            pl.when(pl.col("variant_id").is_in(top))
            .then(pl.col("variant_id"))
            .otherwise(pl.lit("others"))
            .alias("variant_id")
        )
        .group_by(["hour", "variant_id"])
        .agg(pl.col("impressions").sum())
        .pivot(on="variant_id", index="hour", values="impressions")
        .fill_null(0)
        .sort("hour")
    )
    # variants in creation order (their letters), "others" last
    order = sorted((c for c in wide.columns if c != "hour"), key=lambda c: (c == "others",
                   labels.get(c, "").rjust(3)))  # fmt: skip
    series = [(labels.get(c, c), [float(x) for x in wide[c].to_list()]) for c in order]
    return wide["hour"].to_list(), series


def _plot_regret(plt: Any, steps: pl.DataFrame, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(7, 3.6))
    axis.plot(steps["hour"].to_list(), steps["cumulative_regret"].to_list(), color=colour(5))
    axis.set_xlabel("simulated hour")
    axis.set_ylabel("clicks lost (expected)")
    axis.set_title(_CAPTIONS["cumulative_regret"], fontsize=10)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_shares(
    plt: Any, hours: list[float], series: list[tuple[str, list[float]]], path: Path
) -> None:
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    figure, axis = plt.subplots(figsize=(7, 3.8))
    if hours:
        import numpy as np

        matrix = np.array([values for _, values in series], dtype=float)
        matrix /= matrix.sum(axis=0, keepdims=True).clip(min=1)
        axis.stackplot(hours, matrix, labels=[label for label, _ in series],
                       colors=[colour(i) for i in range(len(series))], alpha=0.9,
                       step="post")  # fmt: skip
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(series),
                    fontsize=8, frameon=False)  # fmt: skip
    axis.set_ylim(0, 1)
    axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("simulated hour")
    axis.set_title(_CAPTIONS["traffic_share"], fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _interval_rows(variants: list[dict[str, Any]]) -> list[tuple]:
    rows = []
    for index, variant in enumerate(variants):
        if not variant["impressions"] or variant.get("interval_95") is None:
            continue
        truth = variant.get("true_ctr_served") or variant["true_ctr"]
        rows.append((variant_label(index), variant["posterior_mean"], *variant["interval_95"],
                     truth))  # fmt: skip
    return rows


def _plot_intervals(plt: Any, rows: list[tuple], path: Path) -> None:
    from matplotlib.ticker import PercentFormatter

    figure, axis = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.5))
    for row, (_label, mean, low, high, truth) in enumerate(rows):
        axis.plot([low, high], [row, row], color=colour(row), linewidth=2.5)
        axis.plot([mean], [row], "o", color=colour(row))
        axis.plot([truth], [row], "x", color="#222222")
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels([r[0] for r in rows], fontsize=8)
    axis.invert_yaxis()
    axis.xaxis.set_major_formatter(PercentFormatter(1.0))
    axis.set_xlabel("CTR: dot = estimate, bar = 95 % interval, × = true CTR served")
    axis.set_title(_CAPTIONS["posterior_intervals"], fontsize=10)
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _round_bars(rounds: list[dict[str, Any]]) -> list[tuple[str, float | None, str]]:
    """One bar per round: its label, the candidates' mean true CTR, and what the round did."""
    bars = []
    for r in rounds:
        outcome = (r.get("detail") or {}).get("outcome") or ("before any" if r["round"] == 0
                                                             else "not run")  # fmt: skip
        bars.append((f"round {r['round']}", r.get("mean_true_ctr"), str(outcome)))
    return bars


def _plot_rounds(plt: Any, bars: list[tuple[str, float | None, str]], path: Path) -> None:
    from matplotlib.ticker import PercentFormatter

    figure, axis = plt.subplots(figsize=(6.5, 3.6))
    for i, (_label, value, note) in enumerate(bars):
        rejected = note.startswith(("rejected", "failed", "skipped"))
        if value is not None:
            axis.bar(i, value, width=0.6, color="#bbbbbb" if rejected else colour(0),
                     edgecolor=colour(5) if rejected else colour(0),
                     hatch="//" if rejected else None)  # fmt: skip
    axis.set_xticks(range(len(bars)))
    axis.set_xticklabels([f"{label}\n{note}" for label, _, note in bars], fontsize=8)
    axis.yaxis.set_major_formatter(PercentFormatter(1.0))
    axis.set_ylabel("mean true CTR of new candidates")
    axis.set_title(_CAPTIONS["retraining_rounds"], fontsize=10)
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _count(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else "–"


def _headline(summary: dict[str, Any], labels: dict[str, str]) -> list[tuple[str, str]]:
    impressions = summary.get("impressions") or 0
    clicks = summary.get("clicks") or 0
    oracle = summary.get("oracle_clicks") or 0.0
    regret = summary.get("regret") or 0.0
    winner = summary.get("winner") or {}
    if winner.get("variant_id"):
        truth = "it is" if winner.get("is_true_best") else "it is not"
        won = (
            f"Variant {labels.get(winner['variant_id'], '?')}, “{winner.get('text')}”: "
            f"probability best {probability(winner.get('probability_best'))} when declared; "
            f"{truth} the truly best variant"
        )
    else:
        won = "none declared: the stopping rule wanted more evidence"
    seconds = summary.get("seconds")
    return [
        ("Scenario", str(summary.get("scenario"))),
        ("Seed", str(summary.get("seed"))),
        ("Simulated", f"{summary.get('hours', '?')} hours"),
        ("Impressions", _count(impressions)),
        ("Clicks", f"{_count(clicks)} (CTR {percent(clicks / impressions if impressions else 0)})"),
        ("Conversions", _count(summary.get("conversions"))),
        ("Clicks lost against the best variant",
         f"{regret:,.1f} of {oracle:,.1f} possible ({percent(regret / oracle if oracle else 0)})"),
        ("Winner", won),
        ("Run time", f"{seconds:.1f} s" if isinstance(seconds, int | float) else "–"),
    ]  # fmt: skip


def _variant_rows(summary: dict[str, Any], labels: dict[str, str]) -> str:
    winner = summary.get("winner") or {}
    rows = []
    for index, v in enumerate(summary.get("variants", [])):
        interval = v.get("interval_95") or [None, None]
        chance = v.get("probability_best")
        if v["variant_id"] == winner.get("variant_id"):
            chance = winner.get("probability_best", chance)  # the declared value, as printed
        served = v.get("true_ctr_served")
        rows.append(
            f"<tr><td><b style='color:{colour(index)}'>{labels[v['variant_id']]}</b></td>"
            f"<td>{html.escape(v.get('text') or '')}</td><td>{html.escape(v['status'])}</td>"
            f"<td>{html.escape(str(v.get('generator') or ''))}</td>"
            f"<td class=num>{_count(v['impressions'])}</td><td class=num>{_count(v['clicks'])}"
            f"</td><td class=num>"
            + (rate_with_interval(v["posterior_mean"], *interval) if v["impressions"] else
               "no data")
            + f"</td><td class=num>{percent(served if served is not None else v['true_ctr'])}"
            f"</td><td class=num>{probability(chance) if v['status'] != 'retired' else '–'}"
            "</td></tr>"
        )  # fmt: skip
    return "".join(rows)


_EVENT_WORDS = {
    "accepted": "events stored",
    "duplicates": "duplicates recognised and counted once",
    "rejected": "rows rejected",
    "duplicates_sent": "duplicates the simulated ad server sent on purpose",
    "out_of_order_clicks_sent": "clicks sent before their impression",
    "conversions_outside_window": "conversions after the attribution window (not sent)",
}


def _events(events: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(_EVENT_WORDS.get(key, key.replace('_', ' ')))}</th>"
        f"<td class=num>{_count(value)}</td></tr>"
        for key, value in events.items()
        if key != "rejected_examples" and isinstance(value, int | float)
    )
    examples = events.get("rejected_examples") or []
    listed = "".join(f"<li>{html.escape(json.dumps(e, default=str))}</li>" for e in examples[:5])
    return f"<table>{rows}</table>" + (
        f"<p>Examples of rejected rows:</p><ul class=small>{listed}</ul>" if listed else ""
    )


def _quality(quality: dict[str, Any], labels: dict[str, str]) -> str:
    return (
        "<ul class=findings>"
        + "".join(
            f"<li class='{f.level}'><b>{html.escape(f.title)}</b> {html.escape(f.detail)}"
            + (f"<br><i>What to do:</i> {html.escape(f.action)}" if f.action else "")
            + "</li>"
            for f in quality_findings(quality, labels)
        )
        + "</ul>"
    )


def _insights(summary: dict[str, Any]) -> str:
    """The dashboard's creative insights, worded as there (empty when too few variants)."""
    rows = creative_insights(summary.get("variants", []), summary.get("brief"))
    if not rows:
        return ""
    return f"""<h2>Creative insights</h2>
{insights_table(rows)}
<p class=small>CTR pooled over the variants that have the element and over those that do not;
95 % intervals resample the variants. These go together in this run; they are not proven
causes.</p>"""


def _html(summary: dict[str, Any], figures: list[tuple[str, str]], labels: dict[str, str]) -> str:
    headline = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _headline(summary, labels)
    )
    shown = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, png in figures
    )
    title = html.escape(str(summary.get("scenario")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>adloop simulation: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #222;
       padding: 0 1rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left;
         vertical-align: top; }}
.num {{ text-align: right; white-space: nowrap; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.9rem; }}
.findings {{ list-style: none; padding: 0; }} .findings li {{ border-left: 4px solid #ccc;
  padding: 0.3rem 0.6rem; margin: 0.3rem 0; }}
.findings .ok {{ border-color: #1b7f4d; }} .findings .warn {{ border-color: #a66300; }}
.findings .bad {{ border-color: #b3261e; }} .findings .info {{ border-color: #56b4e9; }}
.small {{ font-size: 0.8rem; }}
</style></head><body>
<h1>Simulation report: {title}</h1>
<table>{headline}</table>
{shown}
<h2>Variants</h2>
<table><tr><th></th><th>Text</th><th>Status</th><th>Written by</th>
<th class=num>Impressions</th><th class=num>Clicks</th><th class=num>CTR (95 % interval)</th>
<th class=num>True CTR</th><th class=num>Probability best</th></tr>
{_variant_rows(summary, labels)}</table>
<p class=small>Probability best compares the variants still serving at the end; the winner's
is the value the stopping rule declared it with. True CTR is that of the impressions each
variant was actually served (segments, fatigue and drift included).</p>
{_insights(summary)}
<h2>Events</h2>{_events(summary.get("events", {}))}
<h2>Data quality</h2>{_quality(summary.get("data_quality", {}), labels)}
</body></html>
"""


def write_report(result: Any, out: str | Path) -> dict[str, Path]:
    """Write ``summary.json``, the PNG plots and ``report.html`` for an engine-mode run.

    Parameters
    ----------
    result:
        A :class:`adloop.sim.engine_run.EngineRunResult`.
    out:
        Folder to write into (created when missing).

    Returns
    -------
    dict
        Name to path of every file written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    paths: dict[str, Path] = {}
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(result.summary, indent=2, default=str) + "\n")
    paths["summary"] = summary_path
    labels = _labels(result.variants)
    steps = result.steps
    hours, series = _hourly_shares(result.hourly, labels)
    intervals = _interval_rows(result.variants)
    _plot_regret(plt, steps, out / "cumulative_regret.png")
    _plot_shares(plt, hours, series, out / "traffic_share.png")
    _plot_intervals(plt, intervals, out / "posterior_intervals.png")
    names = ["cumulative_regret", "traffic_share", "posterior_intervals"]
    if result.rounds:
        _plot_rounds(plt, _round_bars(result.rounds), out / "retraining_rounds.png")
        names.append("retraining_rounds")
    figures = [
        (_CAPTIONS[name], base64.b64encode((out / f"{name}.png").read_bytes()).decode())
        for name in names
    ]
    for name in names:
        paths[name] = out / f"{name}.png"
    result.hourly.write_parquet(out / "hourly.parquet")
    paths["hourly"] = out / "hourly.parquet"
    report_path = out / "report.html"
    report_path.write_text(_html(result.summary, figures, labels), encoding="utf-8")
    paths["report"] = report_path
    return paths
