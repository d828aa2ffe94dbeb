"""What the dashboard shows, gathered from the engine's public views and the bandits.

Nothing here re-derives a statistic: counts, posteriors and data quality come from
``Engine.campaign`` (the API's view), the 95 % intervals from ``bandits.posterior_summary``
and probability best, expected loss and value remaining from ``bandits.decide_winner`` run
with the engine's own winner settings, so the stopping rule the page describes is the one
``declare_winner`` applies. Those Monte Carlo draws are seeded from the campaign's counts:
a page polled while no new data arrives shows the same numbers every time.

Example::

    page = campaign_page(engine, "c_1", tenant="acme")
    page["stopping"]["sentence"]  # 'Variant B leads; 1.8 % of its value is still at stake; ...'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from adloop.bandits import decide_winner, posterior_summary
from adloop.optimizer.arm_stats import arm_counts, stats_by_segment, stats_by_variant
from adloop.optimizer.dashboard_words import (
    duration,
    percent,
    probability,
    quality_findings,
    variant_label,
)
from adloop.optimizer.insights import creative_insights, seed_from

__all__ = ["campaign_list", "campaign_page", "share_series", "stopping_state"]

_SERVING = ("active", "winner")
#: Bucket widths tried for the traffic-share chart, smallest first (seconds).
_SPANS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS = 24
_MAX_SEGMENTS = 12
_EPOCH = datetime(1970, 1, 1)


def _recent_impressions(engine: Any, campaign_id: str, created_at: Any) -> tuple[float, float]:
    """Impressions of the last 24 hours (or since creation, when younger) and those seconds."""
    now = engine.clock()
    since = now - timedelta(days=1)
    if isinstance(created_at, datetime) and created_at > since:
        since = created_at
    frame = engine.store.arm_stats(campaign_id, since=since)
    seconds = max((now - since).total_seconds(), 1.0)
    return float(frame["impressions"].sum()), seconds


def stopping_state(
    view: Mapping[str, Any],
    config: Any,
    *,
    recent_impressions: float = 0.0,
    recent_seconds: float = 86400.0,
    decided_at: Any = None,
) -> dict[str, Any]:
    """The winner rule's state for a campaign view, with a sentence a marketer can read.

    Runs ``bandits.decide_winner`` over the serving variants with the engine's settings
    (``winner_threshold``, ``value_remaining``, ``n_draws``) and projects the time to a
    decision: if the leader's gap to the runner-up holds, the evidence needed grows with
    the square of (z needed / z now), so the impressions still needed are the ones so far
    times that factor, minus those; at the last day's pace that takes the time reported.
    It is a rough guide ("about"), and said to be one.
    """
    variants = view["variants"]
    labels = {v["variant_id"]: variant_label(i) for i, v in enumerate(variants)}
    serving = [v for v in variants if v["status"] in _SERVING]
    ids = [v["variant_id"] for v in serving]
    objective = view.get("objective") or "ctr"
    state: dict[str, Any] = {
        "state": "running", "leader": None, "probability_best": {}, "expected_loss": {},
        "value_remaining": None, "target": config.value_remaining, "threshold": None,
        "eta_seconds": None,
    }  # fmt: skip
    total = sum(v["impressions"] for v in serving)
    if view.get("winner"):
        winner = view["winner"]
        when = f" on {decided_at:%Y-%m-%d %H:%M}" if isinstance(decided_at, datetime) else ""
        state.update(state="decided", leader=winner)
        state["sentence"] = (
            f"Variant {labels.get(winner, winner)} won{when}: it now gets all the traffic."
        )
    if len(ids) < 2:
        if state["state"] != "decided":
            state.update(state="one_variant", leader=ids[0] if ids else None)
            state["sentence"] = (
                "Only one variant serves: approve or add variants to start a test."
                if ids
                else "No variant serves yet: approve or add variants."
            )
        return state
    stats = {v["variant_id"]: v for v in serving}
    counts = arm_counts(ids, stats)
    decision = decide_winner(
        counts,
        objective=objective,
        threshold=config.winner_threshold,
        value_remaining=config.value_remaining,
        n_draws=config.n_draws,
        rng=seed_from(view["campaign_id"], counts.impressions.tolist(), counts.clicks.tolist(),
                  counts.conversions.tolist(), counts.value.tolist()),
    )  # fmt: skip
    leader = ids[decision.best]
    threshold = 1 - (1 - config.winner_threshold) / len(ids)  # decide_winner's familywise bar
    state.update(
        leader=leader,
        probability_best=dict(zip(ids, decision.probability_best.tolist(), strict=True)),
        expected_loss=dict(zip(ids, decision.expected_loss.tolist(), strict=True)),
        value_remaining=float(decision.value_remaining),
        threshold=threshold,
    )
    if state["state"] == "decided":
        return state
    if total == 0:
        state.update(state="no_traffic", leader=None)
        state["sentence"] = "No impressions yet: the test starts with the first traffic."
        return state
    name = labels[leader]
    parts = [
        f"Variant {name} leads with probability best "
        f"{probability(decision.probability_best[decision.best])} "
        f"(a winner needs {probability(threshold)})",
        f"{_at_stake(decision, serving)} of its value is still at stake",
    ]
    if decision.winner is not None:
        state["state"] = "ready"
        parts.append("the rule can declare it the winner now")
    else:
        rate = recent_impressions / recent_seconds
        factor = _evidence_factor(serving, leader, threshold, decision.value_remaining, config)
        if factor is None or rate <= 0:
            parts.append(
                "no decision in sight at today's traffic: the leaders look alike"
                if factor is None
                else "no traffic in the last day to project a decision"
            )
        else:
            eta = max(total * (factor - 1), 0.0) / rate
            state["eta_seconds"] = eta
            parts.append(
                f"{duration(eta)} to a decision at today's traffic"
                if eta < 90 * 86400
                else "more than 3 months to a decision at today's traffic"
            )
    state["sentence"] = "; ".join(parts) + "."
    return state


def _at_stake(decision: Any, serving: Sequence[Mapping[str, Any]]) -> str:
    """How much of the leader's value switching could still gain, in words.

    Scott's value remaining (the rule's 95th percentile of the relative loss) when it is
    above zero; once 95 % of the draws favour the leader it is 0, and the mean relative loss
    (expected loss over the leader's mean) says what is left. Early on another variant may
    still be more than twice as good as the leader: "all" of its value is at stake, not "163 %".
    """
    remaining = float(decision.value_remaining)
    if not np.isfinite(remaining) or remaining >= 1:  # another may still be twice as good
        return "all"
    if remaining <= 0:
        mean = serving[decision.best].get("posterior_mean") or 0.0
        loss = float(decision.expected_loss[decision.best])
        remaining = loss / mean if mean > 0 and np.isfinite(loss) else 0.0
    return "less than 0.1 %" if remaining < 0.001 else percent(remaining, 1)


def _evidence_factor(
    serving: Sequence[Mapping[str, Any]],
    leader: str,
    threshold: float,
    remaining: float,
    config: Any,
) -> float | None:
    """How many times today's evidence the rule needs (None: no gap to project from)."""
    from scipy.stats import norm

    ranked = sorted(
        (v for v in serving if v.get("posterior_mean") is not None),
        key=lambda v: (v["variant_id"] != leader, -v["posterior_mean"]),
    )
    if len(ranked) < 2:
        return None
    first, second = ranked[0], ranked[1]
    spread = [(v["interval_95"][1] - v["interval_95"][0]) / (2 * 1.96) for v in (first, second)]
    gap = first["posterior_mean"] - second["posterior_mean"]
    z_now = gap / max(float(np.hypot(*spread)), 1e-12)
    if z_now < 0.25:
        return None
    factor = (float(norm.ppf(threshold)) / z_now) ** 2
    if np.isfinite(remaining) and remaining > config.value_remaining:
        factor = max(factor, (remaining / config.value_remaining) ** 2)
    return max(factor, 1.0)


def share_series(engine: Any, campaign_id: str, created_at: Any) -> dict[str, Any]:
    """Impressions and clicks per variant in up to 24 equal time buckets since creation.

    Each bucket is the difference of two ``Store.arm_stats(since=...)`` reads, so it counts
    exactly what the campaign's totals count (deduplicated, corrupt rows guarded).
    """
    now = engine.clock()
    start = created_at if isinstance(created_at, datetime) else now - timedelta(hours=1)
    age = max((now - start).total_seconds(), 1.0)
    span = next((s for s in _SPANS if age / s <= _MAX_BUCKETS), _SPANS[-1])
    # Buckets start on round times (whole minutes, hours, days) so the axis reads well.
    first = start - timedelta(seconds=(start - _EPOCH).total_seconds() % span)
    starts: list[datetime] = []
    edge = first
    while edge <= now and len(starts) < _MAX_BUCKETS * 2:
        starts.append(edge)
        edge += timedelta(seconds=span)
    suffix = [stats_by_variant(engine.store.arm_stats(campaign_id, since=s)) for s in starts]
    ids = list(suffix[0]) if suffix else []
    impressions: dict[str, list[int]] = {v: [] for v in ids}
    clicks: dict[str, list[int]] = {v: [] for v in ids}
    for i in range(len(starts)):
        later = suffix[i + 1] if i + 1 < len(suffix) else {}
        for v in ids:
            impressions[v].append(int(suffix[i][v]["impressions"] - later.get(v, {}).get(
                "impressions", 0)))  # fmt: skip
            clicks[v].append(int(suffix[i][v]["clicks"] - later.get(v, {}).get("clicks", 0)))
    return {"starts": starts, "span_seconds": span, "impressions": impressions, "clicks": clicks}


def _intervals(variants: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Posterior mean and 95 % interval of CTR and of conversions per impression."""
    if not variants:
        return {}
    ids = [v["variant_id"] for v in variants]
    counts = arm_counts(ids, {v["variant_id"]: v for v in variants})
    out: dict[str, dict[str, list[float]]] = {v: {} for v in ids}
    for objective in ("ctr", "cvr"):
        summary = posterior_summary(counts, objective)
        for i, v in enumerate(ids):
            out[v][objective] = [float(summary[k][i]) for k in ("mean", "low", "high")]
    return out


def _segments(engine: Any, view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per segment (busiest first): impressions and each variant's CTR with its interval."""
    frame = engine.store.arm_stats(view["campaign_id"], by_segment=True)
    by_segment = stats_by_segment(frame, max_segments=_MAX_SEGMENTS)
    rows = []
    for segment, stats in by_segment.items():
        variants = [{**stats.get(v["variant_id"], {}), "variant_id": v["variant_id"]}
                    for v in view["variants"]]  # fmt: skip
        shown = sum(float(s.get("impressions") or 0) for s in stats.values())
        if not shown:
            continue
        rows.append({
            "segment": segment,
            "impressions": int(shown),
            "clicks": int(sum(float(s.get("clicks") or 0) for s in stats.values())),
            "variants": {v: {"impressions": int(stats.get(v, {}).get("impressions") or 0),
                             "clicks": int(stats.get(v, {}).get("clicks") or 0), **i}
                         for v, i in _intervals(variants).items()},
        })  # fmt: skip
    return sorted(rows, key=lambda r: (-r["impressions"], r["segment"]))


def _models(engine: Any, view: Mapping[str, Any]) -> dict[str, Any]:
    """Model versions (deployment-wide) and retraining rounds, each promoted or not and why."""
    store = engine.store
    current = (store.current_model() or {}).get("version")
    used: dict[str, int] = {}
    for v in view["variants"]:
        if v.get("model_version"):
            used[v["model_version"]] = used.get(v["model_version"], 0) + 1
    versions = []
    for row in store.model_versions():
        metrics = row.get("metrics") or {}
        passed = metrics.get("gate_passed")
        if row["version"] == current:
            verdict, why = "serving", "promoted: passed the quality gate"
        elif passed is False:
            verdict = "rejected"
            why = "; ".join(metrics.get("gate_reasons") or []) or "failed the quality gate"
        elif passed:
            verdict, why = "retired", "passed the gate; a later version replaced it"
        else:
            verdict, why = "base", "the base model"
        versions.append({
            "version": row["version"], "created_at": row.get("created_at"),
            "parent": row.get("parent"), "verdict": verdict, "why": why,
            "variants_here": used.get(row["version"], 0),
        })  # fmt: skip
    rounds = [
        {
            "started_at": run["started_at"], "outcome": run["outcome"],
            "version": (run.get("detail") or {}).get("version"),
            "why": run.get("error") or (run.get("detail") or {}).get("reason") or "",
        }
        for run in store.job_runs("retrain")
    ]  # fmt: skip
    return {"current": current, "versions": versions, "rounds": rounds}


def campaign_page(engine: Any, campaign_id: str, *, tenant: str | None) -> dict[str, Any]:
    """Everything the campaign page shows; raises ``CampaignNotFound`` outside ``tenant``."""
    view = engine.campaign(campaign_id, tenant=tenant)
    row = engine.store.campaign(campaign_id) or {}
    labels = {v["variant_id"]: variant_label(i) for i, v in enumerate(view["variants"])}
    recent, seconds = _recent_impressions(engine, campaign_id, row.get("created_at"))
    stopping = stopping_state(
        view,
        engine.config,
        recent_impressions=recent,
        recent_seconds=seconds,
        decided_at=row.get("updated_at") if view.get("winner") else None,
    )
    intervals = _intervals(view["variants"])
    variants = []
    for v in view["variants"]:
        vid = v["variant_id"]
        variants.append({
            **v,
            "label": labels[vid],
            "ctr": intervals[vid]["ctr"],
            "cvr": intervals[vid]["cvr"],
            "probability_best": stopping["probability_best"].get(vid),
            "expected_loss": stopping["expected_loss"].get(vid),
            "share": (view["snapshot"]["weights"] or {}).get(vid, 0.0),
        })  # fmt: skip
    return {
        "view": view,
        "labels": labels,
        "variants": variants,
        "stopping": stopping,
        "findings": quality_findings(view["data_quality"], labels),
        "series": share_series(engine, campaign_id, row.get("created_at")),
        "segments": _segments(engine, view),
        "insights": creative_insights(view["variants"], row.get("brief")),
        "models": _models(engine, view),
        "pending": [v for v in variants if v["status"] == "pending"],
        "now": engine.clock(),
    }


def campaign_list(engine: Any, *, tenant: str | None) -> list[dict[str, Any]]:
    """One row per campaign of ``tenant``: status, traffic, leader, winner and when."""
    rows = {r["campaign_id"]: r for r in engine.store.campaigns(tenant)}
    out = []
    for summary in engine.campaigns(tenant):
        campaign_id = summary["campaign_id"]
        row = rows.get(campaign_id, {})
        view = engine.campaign(campaign_id, tenant=tenant)
        labels = {v["variant_id"]: variant_label(i) for i, v in enumerate(view["variants"])}
        recent, seconds = _recent_impressions(engine, campaign_id, row.get("created_at"))
        stopping = stopping_state(
            view, engine.config, recent_impressions=recent, recent_seconds=seconds,
            decided_at=row.get("updated_at") if view.get("winner") else None,
        )  # fmt: skip
        texts = {v["variant_id"]: v.get("text") or "" for v in view["variants"]}
        leader = stopping.get("leader")
        out.append({
            **summary,
            "impressions": sum(v["impressions"] for v in view["variants"]),
            "clicks": sum(v["clicks"] for v in view["variants"]),
            "conversions": sum(v["conversions"] for v in view["variants"]),
            "impressions_last_day": int(recent),
            "leader": leader, "leader_label": labels.get(leader),
            "leader_text": texts.get(leader),
            "leader_probability": stopping["probability_best"].get(leader),
            "winner_label": labels.get(view.get("winner")),
            "decided_at": row.get("updated_at") if view.get("winner") else None,
            "sentence": stopping["sentence"],
        })  # fmt: skip
    return out
