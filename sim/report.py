"""Reports of simulated runs: ``summary.json``, PNG plots and a self-contained ``report.html``.

Plots are drawn from the run's plain rows with matplotlib's non-interactive Agg backend
(imported only here, when a report is written):

* ``cumulative_regret.png`` — expected clicks lost against the best servable variant per segment;
* ``traffic_share.png`` — share of impressions per variant over simulated time;
* ``posterior_intervals.png`` — final posterior mean and 95 % interval per variant, with the
  true CTR of the impressions it was served marked;
* ``retraining_rounds.png`` — mean true CTR of freshly generated candidates per retraining round
  (only when the run had rounds).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["write_report"]

_TOP_VARIANTS = 8


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _short(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _plot_regret(plt: Any, steps: pl.DataFrame, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 3.6))
    axis.plot(steps["hour"].to_list(), steps["cumulative_regret"].to_list(), color="#c0392b")
    axis.set_xlabel("simulated hour")
    axis.set_ylabel("cumulative regret (expected clicks)")
    axis.set_title("Clicks lost against the best servable variant")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_shares(plt: Any, hourly: pl.DataFrame, labels: dict[str, str], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 3.8))
    if hourly.height:
        per_hour = (
            hourly.with_columns(pl.col("hour").floor().alias("hour"))
            .group_by(["hour", "variant_id"])
            .agg(pl.col("impressions").sum())
        )
        totals = per_hour.group_by("variant_id").agg(pl.col("impressions").sum())
        top = totals.sort("impressions", descending=True)["variant_id"].head(_TOP_VARIANTS)
        wide = (
            per_hour.with_columns(
                pl.when(pl.col("variant_id").is_in(top.to_list()))
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
        hours = wide["hour"].to_list()
        names = [c for c in wide.columns if c != "hour"]
        matrix = wide.select(names).to_numpy().astype(float)
        matrix /= matrix.sum(axis=1, keepdims=True).clip(min=1)
        axis.stackplot(
            hours, matrix.T, labels=[labels.get(n, n) for n in names], alpha=0.85, step="post"
        )
        axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.set_ylim(0, 1)
    axis.set_xlabel("simulated hour")
    axis.set_ylabel("share of impressions")
    axis.set_title("Traffic share per variant")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_intervals(plt: Any, variants: list[dict[str, Any]], path: Path) -> None:
    shown = [v for v in variants if v["impressions"] > 0] or variants
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(shown) + 1.4))
    for row, variant in enumerate(shown):
        low, high = variant["interval_95"]
        mean = variant["posterior_mean"]
        color = (
            "#27ae60"
            if variant["status"] == "winner"
            else ("#7f8c8d" if variant["status"] == "retired" else "#2c3e50")
        )
        axis.plot([low, high], [row, row], color=color, linewidth=2)
        axis.plot([mean], [row], "o", color=color)
        truth = variant.get("true_ctr_served") or variant["true_ctr"]
        axis.plot([truth], [row], "x", color="#c0392b")
    axis.set_yticks(range(len(shown)))
    axis.set_yticklabels([_short(v["text"]) for v in shown], fontsize=7)
    axis.set_xlabel("CTR: posterior mean, 95 % interval; x = true CTR served")
    axis.set_title("Posteriors at the end of the run")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_rounds(plt: Any, rounds: list[dict[str, Any]], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.4))
    xs = [r["round"] for r in rounds if r["mean_true_ctr"] is not None]
    axis.plot(xs, [r["mean_true_ctr"] for r in rounds if r["mean_true_ctr"] is not None],
              "o-", label="mean true CTR")  # fmt: skip
    axis.plot(xs, [r["max_true_ctr"] for r in rounds if r["max_true_ctr"] is not None],
              "s--", alpha=0.6, label="best true CTR")  # fmt: skip
    axis.set_xlabel("retraining round (0 = before any)")
    axis.set_ylabel("true CTR of new candidates")
    axis.set_title("New candidates per retraining round")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _html(summary: dict[str, Any], images: list[Path]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape(str(value))

    headline = [
        ("scenario", summary.get("scenario")),
        ("seed", summary.get("seed")),
        ("impressions", summary.get("impressions")),
        ("clicks", summary.get("clicks")),
        ("conversions", summary.get("conversions")),
        ("expected clicks", summary.get("expected_clicks")),
        ("oracle clicks", summary.get("oracle_clicks")),
        ("regret", summary.get("regret")),
        ("winner", (summary.get("winner") or {}).get("text", "none declared")),
        ("seconds", summary.get("seconds")),
    ]
    rows = "".join(f"<tr><th>{cell(k)}</th><td>{cell(v)}</td></tr>" for k, v in headline)
    variant_rows = "".join(
        "<tr>" + "".join(
            f"<td>{cell(v.get(key))}</td>"
            for key in ("text", "status", "generator", "impressions", "clicks", "true_ctr",
                        "posterior_mean", "probability_best")
        ) + "</tr>"
        for v in summary.get("variants", [])
    )  # fmt: skip
    figures = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.stem)}'
        "</figcaption></figure>"
        for p in images
    )
    events = html.escape(json.dumps(summary.get("events", {}), indent=2, default=str))
    quality = html.escape(json.dumps(summary.get("data_quality", {}), indent=2, default=str))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>adloop simulation: {cell(summary.get("scenario"))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 0.75rem; font-size: 0.8rem; }}
</style></head><body>
<h1>Simulation report: {cell(summary.get("scenario"))}</h1>
<table>{rows}</table>
{figures}
<h2>Variants</h2>
<table><tr><th>text</th><th>status</th><th>generator</th><th>impressions</th><th>clicks</th>
<th>true CTR</th><th>posterior mean</th><th>P(best)</th></tr>{variant_rows}</table>
<h2>Events</h2><pre>{events}</pre>
<h2>Data quality</h2><pre>{quality}</pre>
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
    labels = {v["variant_id"]: _short(v["text"], 30) for v in result.variants}
    images = []
    regret_path = out / "cumulative_regret.png"
    _plot_regret(plt, result.steps, regret_path)
    images.append(regret_path)
    shares_path = out / "traffic_share.png"
    _plot_shares(plt, result.hourly, labels, shares_path)
    images.append(shares_path)
    intervals_path = out / "posterior_intervals.png"
    _plot_intervals(plt, result.variants, intervals_path)
    images.append(intervals_path)
    if result.rounds:
        rounds_path = out / "retraining_rounds.png"
        _plot_rounds(plt, result.rounds, rounds_path)
        images.append(rounds_path)
    for image in images:
        paths[image.stem] = image
    result.hourly.write_parquet(out / "hourly.parquet")
    paths["hourly"] = out / "hourly.parquet"
    report_path = out / "report.html"
    report_path.write_text(_html(result.summary, images), encoding="utf-8")
    paths["report"] = report_path
    return paths
