"""The retraining data set: winners, runners-up and confident pairs from the event log.

:func:`build_dataset` reads deduplicated arm stats for every campaign, puts a Beta posterior
on each variant's rate (CTR, or conversions per impression for ``cvr``/``value`` campaigns)
and picks

* *winners*: the declared winner, or a variant whose probability of being best (overall or
  within one segment, among the variants with ``min_pair_impressions``) is at least
  ``winner_threshold`` with at least ``min_impressions`` impressions; each becomes an SFT
  example (prompt = ``Brief.prompt()``, target = the copy as the LM writes it), weighted by
  lift over the other compared variants times its probability-best;
* optionally (``above_average_confidence``) *runners-up*: proven variants that beat the
  average of the other proven variants with that probability, as SFT examples at half
  weight, so that a round with one winner still has several good texts to learn from;
* *confident pairs*: within one campaign and one segment (and overall), variants A and B,
  both with ``min_pair_impressions``, where P(rate_A > rate_B) >= ``pair_confidence``;
  weighted by A's lift over B times that probability. A pair that one segment orders
  A > B and another B > A is dropped (the prompt does not name the segment).

A seeded share of the pairs is held out for the promotion gate and never trained on. The
data set is hashed (:func:`adloop.generators.dataset_hash`) so every version records what
it learnt from.

Example::

    data = build_dataset(store, config=RetrainConfig(min_impressions=100))
    print(data.summary())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adloop.bandits import ArmCounts, ThompsonSampling
from adloop.generators import (
    PreferencePair,
    SFTExample,
    dataset_hash,
    format_completion,
    load_brief,
)
from adloop.optimizer.errors import CampaignNotFound
from adloop.optimizer.retrain_config import RetrainConfig

__all__ = ["RetrainDataset", "build_dataset", "completion_text"]


@dataclass(frozen=True)
class RetrainDataset:
    """Winners (SFT), confident pairs (DPO, split into train and held-out) and provenance rows."""

    winners: tuple[SFTExample, ...]
    pairs: tuple[PreferencePair, ...]
    heldout_pairs: tuple[PreferencePair, ...]
    briefs: tuple[Any, ...]
    rows: tuple[dict[str, Any], ...]
    data_hash: str
    variants: tuple[dict[str, Any], ...] = ()
    """Proven variants (text, trials, successes, campaign_id): what the copy scorer fits."""

    def summary(self) -> dict[str, Any]:
        """Counts and hash, for reports and job records."""
        return {
            "winners": len(self.winners),
            "train_pairs": len(self.pairs),
            "heldout_pairs": len(self.heldout_pairs),
            "campaigns": len(self.briefs),
            "variants": len(self.variants),
            "data_hash": self.data_hash,
        }


def completion_text(headline: str, description: str) -> str:
    """The copy written the way the LM generator writes (and parses) it."""
    return format_completion(headline, description)


def _rate_columns(objective: str) -> tuple[str, str]:
    # value campaigns: a per-impression conversion rate is the closest Beta-shaped signal.
    return ("impressions", "clicks") if objective == "ctr" else ("impressions", "conversions")


def _posterior_draws(
    trials: np.ndarray, successes: np.ndarray, n_draws: int, rng: np.random.Generator
) -> np.ndarray:
    """Beta(1 + s, 1 + n - s) draws, shape (n_draws, n_arms)."""
    successes = np.minimum(successes, trials)
    return rng.beta(1.0 + successes, 1.0 + trials - successes, size=(n_draws, len(trials)))


def _probability_best(
    ids: list[str],
    trials: np.ndarray,
    successes: np.ndarray,
    objective: str,
    n_draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Each variant's posterior probability of being best, from the bandits package.

    Flat priors on purpose: a winner for training must win on its own evidence.
    """
    zeros = np.zeros(len(ids))
    if objective == "ctr":
        counts = ArmCounts(ids, trials, successes, zeros, zeros)
    else:
        counts = ArmCounts(ids, trials, zeros, successes, zeros)
    policy = ThompsonSampling(
        "ctr" if objective == "ctr" else "cvr",
        n_draws=n_draws,
        prior=(1.0, 1.0),
        empirical_bayes=False,
    )
    return np.asarray(policy.probability_best(counts, rng), dtype=float)


def _lift(a: float, b: float) -> float:
    """Relative lift of rate ``a`` over ``b``, clipped to [0.05, 3] so no example dominates."""
    return float(np.clip((a - b) / max(b, 1e-9), 0.05, 3.0))


def _winner(
    campaign_id: str,
    prompt: str,
    variant: dict[str, Any],
    weight: float,
    p_best: float,
    segment: str,
    declared: bool,
) -> tuple[SFTExample, dict[str, Any]]:
    """A winner's SFT example and its provenance row."""
    headline = variant.get("headline") or variant["text"]
    completion = completion_text(headline, variant.get("description") or "")
    row = {
        "kind": "winner",
        "campaign_id": campaign_id,
        "variant_id": variant["variant_id"],
        "segment": segment,
        "probability_best": p_best,
        "weight": weight,
        "declared": declared,
    }
    return SFTExample(prompt=prompt, completion=completion, weight=weight), row


def _scorer_pairs(
    campaign_id: str,
    prompt: str,
    variants: dict[str, dict[str, Any]],
    confident: dict[tuple[str, str], Any],
    scorer: Any,
    config: RetrainConfig,
) -> list[tuple[PreferencePair, dict[str, Any]]]:
    """The ``config.scorer_pairs`` pairs of a campaign's variants that ``scorer`` ranks
    furthest apart, leaving out any pair a confident comparison already holds."""
    # Copy a reviewer rejected, or has not approved yet, is never the one to prefer.
    ids = sorted(i for i, v in variants.items() if v.get("status") not in ("pending", "rejected"))
    texts = [
        completion_text(
            variants[i].get("headline") or variants[i]["text"], variants[i].get("description") or ""
        )
        for i in ids
    ]
    plain = [str(variants[i].get("text") or "") for i in ids]
    predicted = np.asarray(scorer.predict(plain), dtype=float)
    candidates = []
    for a in range(len(ids)):
        for b in range(len(ids)):
            if predicted[a] <= predicted[b] or texts[a] == texts[b]:
                continue
            if (ids[a], ids[b]) in confident or (ids[b], ids[a]) in confident:
                continue
            candidates.append((predicted[a] - predicted[b], ids[a], ids[b], texts[a], texts[b]))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [
        (
            PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, weight=0.5),
            {
                "kind": "scorer_pair",
                "campaign_id": campaign_id,
                "chosen": a,
                "rejected": b,
                "predicted_margin": float(margin),
                "weight": 0.5,
            },
        )
        for margin, a, b, chosen, rejected in candidates[: config.scorer_pairs]
    ]


def build_dataset(
    store: Any,
    *,
    config: RetrainConfig | None = None,
    campaign_ids: Sequence[str] | None = None,
    scorer_of: Callable[[str], Any] | None = None,
) -> RetrainDataset:
    """Winners and confident pairs from the store, with a seeded hold-out split of the pairs.

    ``scorer_of``: tenant -> its outcome scorer (``predict(texts)``) or None; with
    ``config.scorer_pairs`` above 0, each campaign also gives that many pairs its tenant's
    scorer ranks furthest apart (training only, never held out).

    Example::

        data = build_dataset(store, config=RetrainConfig(min_impressions=100))
        print(data.summary())
    """
    config = config or RetrainConfig()
    rng = np.random.default_rng(config.seed)
    if campaign_ids is None:
        campaigns = store.campaigns()
    else:
        campaigns = []
        for campaign_id in campaign_ids:
            row = store.campaign(campaign_id)
            if row is None:
                raise CampaignNotFound(campaign_id)
            campaigns.append(row)
    winners: list[SFTExample] = []
    proven_variants: list[dict[str, Any]] = []
    all_pairs: list[tuple[PreferencePair, dict[str, Any]]] = []
    scorer_ranked: list[tuple[PreferencePair, dict[str, Any]]] = []
    briefs = []
    rows: list[dict[str, Any]] = []
    for campaign in sorted(campaigns, key=lambda c: c["campaign_id"]):
        campaign_id = campaign["campaign_id"]
        if not campaign.get("brief"):
            continue
        brief = load_brief(campaign["brief"])
        prompt = brief.prompt()
        variants = {v["variant_id"]: v for v in store.variants(campaign_id)}
        if len(variants) < 2:
            continue
        trials_col, success_col = _rate_columns(campaign.get("objective", "ctr"))
        overall = store.arm_stats(campaign_id)
        ids = [i for i in overall["variant_id"].to_list() if i in variants]
        if len(ids) < 2:
            continue
        frame = overall.filter(overall["variant_id"].is_in(ids))
        ids = frame["variant_id"].to_list()
        trials = frame[trials_col].to_numpy().astype(float)
        successes = frame[success_col].to_numpy().astype(float)
        # Only variants with evidence compete for "best": one just added (no impressions yet)
        # has a flat posterior over [0, 1] and would take probability-best from every proven
        # variant, so a clear winner could never reach the threshold right after a refill.
        proven = np.flatnonzero(trials >= config.min_pair_impressions)
        proven_variants.extend(
            {
                "campaign_id": campaign_id,
                "text": variants[ids[i]]["text"],
                "trials": float(trials[i]),
                "successes": float(successes[i]),
            }
            for i in proven
        )
        best = np.zeros(len(ids))
        if len(proven) >= 2:
            best[proven] = _probability_best(
                [ids[i] for i in proven],
                trials[proven],
                successes[proven],
                campaign.get("objective", "ctr"),
                config.n_draws,
                rng,
            )
        means = (1.0 + successes) / (2.0 + trials)
        declared = {campaign.get("winner_variant_id")} | {
            i for i in ids if variants[i].get("status") == "winner"
        }
        winner_ids: set[str] = set()
        above_average = np.zeros(len(ids))
        if config.above_average_confidence is not None and len(proven) >= 3:
            draws = _posterior_draws(trials[proven], successes[proven], config.n_draws, rng)
            # each proven variant against the mean rate of the other proven ones
            others_mean = (draws.sum(axis=1, keepdims=True) - draws) / (len(proven) - 1)
            above_average[proven] = (draws > others_mean).mean(axis=0)

        for index, variant_id in enumerate(ids):
            is_declared = variant_id in declared
            enough = trials[index] >= config.min_impressions
            confident = best[index] >= config.winner_threshold and enough
            runner_up = (
                not (is_declared or confident)
                and enough
                and config.above_average_confidence is not None
                and above_average[index] >= config.above_average_confidence
            )
            if not (is_declared or confident or runner_up):
                continue
            others = means[[i for i in proven if i != index]]
            baseline = float(others.mean()) if len(others) else float(means[index])
            weight = _lift(means[index], baseline) * max(float(best[index]), 0.5)
            if runner_up:
                weight = 0.5 * _lift(means[index], baseline) * float(above_average[index])
            example, row = _winner(
                campaign_id,
                prompt,
                variants[variant_id],
                weight,
                float(best[index]),
                "*",
                is_declared,
            )
            if runner_up:
                row = {**row, "kind": "above_average", "p_above_average": above_average[index]}
            winners.append(example)
            rows.append(row)
            winner_ids.add(variant_id)

        # Pairs per segment and overall; a pair seen in several keeps its strongest evidence.
        segment_frames = [("*", frame)]
        by_segment = store.arm_stats(campaign_id, by_segment=True)
        if by_segment.height and "segment" in by_segment.columns:
            for segment in sorted(s for s in by_segment["segment"].unique().to_list() if s):
                part = by_segment.filter(by_segment["segment"] == segment)
                segment_frames.append((segment, part.filter(part["variant_id"].is_in(ids))))
        strongest: dict[tuple[str, str], tuple[PreferencePair, dict[str, Any]]] = {}
        for segment, part in segment_frames:
            if part.height < 2:
                continue
            seg_ids = part["variant_id"].to_list()
            seg_trials = part[trials_col].to_numpy().astype(float)
            seg_successes = part[success_col].to_numpy().astype(float)
            enough = seg_trials >= config.min_pair_impressions
            if enough.sum() < 2:
                continue
            seg_draws = _posterior_draws(seg_trials, seg_successes, config.n_draws, rng)
            seg_means = (1.0 + seg_successes) / (2.0 + seg_trials)
            if segment != "*":
                # A variant that clearly wins one segment is a winner too (the audience of
                # that segment is real traffic), once it has the evidence.
                # As overall: only variants with evidence in this segment compete.
                compared = np.flatnonzero(enough)
                seg_best = np.zeros(len(seg_ids))
                seg_best[compared] = (
                    np.bincount(seg_draws[:, compared].argmax(axis=1), minlength=len(compared))
                    / config.n_draws
                )
                top = int(np.argmax(seg_best))
                if (
                    seg_best[top] >= config.winner_threshold
                    and seg_trials[top] >= config.min_impressions
                    and seg_ids[top] not in winner_ids
                ):
                    others = float(seg_means[[i for i in compared if i != top]].mean())
                    weight = _lift(seg_means[top], others) * float(seg_best[top])
                    example, row = _winner(
                        campaign_id,
                        prompt,
                        variants[seg_ids[top]],
                        weight,
                        float(seg_best[top]),
                        segment,
                        False,
                    )
                    winners.append(example)
                    rows.append(row)
                    winner_ids.add(seg_ids[top])
            for a in np.flatnonzero(enough):
                for b in np.flatnonzero(enough):
                    if a == b or seg_means[a] <= seg_means[b]:
                        continue
                    p_beats = float((seg_draws[:, a] > seg_draws[:, b]).mean())
                    if p_beats < config.pair_confidence:
                        continue
                    chosen, rejected = variants[seg_ids[a]], variants[seg_ids[b]]
                    chosen_text = completion_text(
                        chosen.get("headline") or chosen["text"], chosen.get("description") or ""
                    )
                    rejected_text = completion_text(
                        rejected.get("headline") or rejected["text"],
                        rejected.get("description") or "",
                    )
                    if chosen_text == rejected_text:
                        continue
                    weight = _lift(seg_means[a], seg_means[b]) * p_beats
                    key = (seg_ids[a], seg_ids[b])
                    if key in strongest and strongest[key][1]["weight"] >= weight:
                        continue
                    strongest[key] = (
                        PreferencePair(
                            prompt=prompt, chosen=chosen_text, rejected=rejected_text, weight=weight
                        ),
                        {
                            "kind": "pair",
                            "campaign_id": campaign_id,
                            "segment": segment,
                            "chosen": seg_ids[a],
                            "rejected": seg_ids[b],
                            "p_beats": p_beats,
                            "weight": weight,
                        },
                    )
        # One segment may prefer A to B and another B to A; the prompt does not name the
        # segment, so such a pair would teach both directions: drop it.
        conflicting = {key for key in strongest if (key[1], key[0]) in strongest}
        for key in conflicting:
            del strongest[key]
        ranked = sorted(
            strongest.values(),
            key=lambda item: (-item[1]["weight"], item[1]["chosen"], item[1]["rejected"]),
        )
        all_pairs.extend(ranked[: config.max_pairs_per_campaign])
        scorer = scorer_of(campaign.get("tenant") or "default") if scorer_of else None
        if config.scorer_pairs and scorer is not None:
            scored = _scorer_pairs(campaign_id, prompt, variants, strongest, scorer, config)
            scorer_ranked.extend(scored)
        if winner_ids or strongest:
            briefs.append(brief)

    # Seeded hold-out split over pairs (order fixed by campaign and weight above).
    n_holdout = int(round(config.holdout_fraction * len(all_pairs)))
    if len(all_pairs) >= 2:
        n_holdout = max(n_holdout, 1)
    order = rng.permutation(len(all_pairs))
    heldout_index = set(order[:n_holdout].tolist())
    train_pairs, heldout_pairs = [], []
    for index, (pair, row) in enumerate(all_pairs):
        row = {**row, "heldout": index in heldout_index}
        rows.append(row)
        (heldout_pairs if row["heldout"] else train_pairs).append(pair)
    for pair, row in scorer_ranked:
        rows.append({**row, "heldout": False})
        train_pairs.append(pair)
    # Held-out pairs are pairs the model never trains on; their texts may still occur in
    # other training pairs or as winners (one campaign has few variants). Splitting by
    # campaign is stricter and is what the offline evaluation on real tests does.
    data_hash = dataset_hash(winners, [*train_pairs, *heldout_pairs])
    return RetrainDataset(
        winners=tuple(winners),
        pairs=tuple(train_pairs),
        heldout_pairs=tuple(heldout_pairs),
        briefs=tuple(briefs),
        rows=tuple(rows),
        data_hash=data_hash,
        variants=tuple(proven_variants),
    )
