"""Winner-driven retraining: from the event log to a new, gated, promoted model version.

One round (:func:`retrain_round`) does, top to bottom:

1. **Data** (:func:`build_dataset`): for every campaign, read deduplicated arm stats from the
   store, put a Beta posterior on each variant's rate (CTR, or conversions per impression
   for ``cvr``/``value`` campaigns) and pick

   * *winners*: the declared winner, or a variant whose probability of being best (overall
     or within one segment, among the variants with ``min_pair_impressions``) is at least
     ``winner_threshold`` with at least ``min_impressions`` impressions; each becomes an SFT
     example (prompt = ``Brief.prompt()``, target = the copy as the LM writes it), weighted
     by lift over the other compared variants times its probability-best;
   * optionally (``above_average_confidence``) *runners-up*: proven variants that beat the
     average of the other proven variants with that probability, as SFT examples at half
     weight, so that a round with one winner still has several good texts to learn from;
   * *confident pairs*: within one campaign and one segment (and overall), variants A and
     B, both with ``min_pair_impressions``, where P(rate_A > rate_B) >= ``pair_confidence``;
     weighted by A's lift over B times that probability. A pair that one segment orders
     A > B and another B > A is dropped (the prompt does not name the segment).

   The dataset is hashed (:func:`adloop.generators.training.dataset_hash`) and the hash recorded
   with the model version.
2. **Split**: a seeded share of the pairs is held out for the gate and never trained on.
3. **Train** (:func:`adloop.generators.training.train_version`) from the current version: SFT on
   winners, DPO on the training pairs, LoRA by default. Runs in the caller's process or in
   an executor (the scheduler passes a process pool so serving never stalls).
4. **Gate** (:func:`evaluate_gate`): the candidate must rank held-out winners above losers
   (log-likelihood) at least as often as the current version, and must still write valid
   copy: its filter pass rate and distinct-2 on the campaigns' briefs may not collapse
   relative to the current version.
5. **Register and promote**: the version is always registered (with its metrics and the
   gate's verdict); only a passing version is promoted. Promotion is one row appended by
   the store, so readers switch from one version to the next between requests
   (:class:`ServingModel`); ``adloop models rollback`` goes back one promotion.

A failure anywhere (bad data, a training crash, a killed worker) leaves the current
version promoted and is reported with ``outcome="failed"``.

Example::

    from adloop.storage import Store
    from adloop.optimizer.retrain import RetrainConfig, retrain_round
    with Store("adloop.duckdb") as store:
        report = retrain_round(store, config=RetrainConfig())
        print(report.outcome, report.version)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from adloop.generators.brief import CJK_RUN
from adloop.generators.training import PreferencePair, SFTExample, TrainingConfig, dataset_hash

__all__ = [
    "DEFAULT_BASE_MODEL",
    "GateResult",
    "RetrainConfig",
    "RetrainDataset",
    "RetrainReport",
    "ServingModel",
    "build_dataset",
    "distinct_n",
    "evaluate_gate",
    "make_retrain_hook",
    "retrain_round",
    "switch_pool_model",
    "train_and_gate",
    "validity",
]

#: Directory name of the default model inside the model cache.
DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _default_training() -> TrainingConfig:
    # Sized for one round on 2 CPU cores with a 135M model (a few minutes): a dozen LoRA
    # steps of SFT and a few of DPO. With a GPU, raise the steps and batch size.
    return TrainingConfig(
        sft_steps=12,
        dpo_steps=8,
        batch_size=2,
        learning_rate=1e-3,
        lora_r=16,
        lora_alpha=32,
        max_length=288,
    )


@dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    """Settings of a retraining round; keyword-only, checked at construction."""

    base_model: str | None = None
    """Model directory the first version starts from; None: the default model in the cache."""
    models_root: str | None = None
    """Where new versions are written; None: ``<model cache>/versions``."""
    winner_threshold: float = 0.95
    """Probability-best needed to count an undeclared variant as a winner."""
    min_impressions: int = 500
    """Impressions a variant needs before it can count as a winner."""
    above_average_confidence: float | None = None
    """Also train (SFT) on proven variants, not winners, whose rate beats the average of the
    other proven variants with at least this probability (None: winners only). A campaign
    has one winner at a time, and a single target is learned by heart; these runners-up give
    the model several good texts to learn from. Weighted like winners, at half strength."""
    pair_confidence: float = 0.95
    """P(A beats B) needed for a training pair."""
    min_pair_impressions: int = 200
    """Impressions both variants of a pair need (in that segment)."""
    max_pairs_per_campaign: int = 64
    """Keep the most confident/lifted pairs per campaign (limits round time)."""
    holdout_fraction: float = 0.25
    """Share of pairs kept out of training for the promotion gate."""
    min_holdout_pairs: int = 1
    """Fewer held-out pairs than this: the round is skipped (nothing to gate on)."""
    n_draws: int = 4000
    """Posterior draws for probability-best and P(A beats B)."""
    gate_candidates: int = 8
    """Candidates per brief generated by each model in the validity check (0 = skip it)."""
    gate_briefs: int = 2
    """How many campaigns' briefs the validity check uses."""
    min_pass_rate_ratio: float = 0.5
    """The candidate's filter pass rate must be >= this x the current version's."""
    min_distinct_ratio: float = 0.7
    """The candidate's distinct-2 must be >= this x the current version's."""
    min_pass_rate_ratio_to_base: float = 0.5
    """... and its pass rate >= this x the base model's (the first version of the lineage):
    each round is compared with the current version, so without a fixed reference the
    ratios above could compound into a collapse over a few rounds."""
    min_distinct_ratio_to_base: float = 0.5
    """... and its distinct-2 >= this x the base model's, for the same reason."""
    accuracy_tolerance: float = 0.0
    """Held-out accuracy may be this much below the current version's and still pass."""
    rerank_oversample: int = 1
    """Above 1, each round also fits a copy scorer on the campaigns' proven variants (see
    :mod:`adloop.generators.scorer`) and saves it with the new version: the LM generator then
    samples
    this many times the candidates it is asked for and keeps a well-scored, varied selection.
    Off by default: it needs many tested variants. In the simulated closed loop it helped some
    campaigns and hurt others when a round had 6 to 13 variants (round-3 lift -13 % to +27 % per
    seed). With losers replaced three times as often it helped (see the README's results)."""
    scorer_min_variants: int = 6
    """Proven variants (``min_pair_impressions`` or more) needed to fit a scorer."""
    scorer_min_spearman: float = 0.2
    """A scorer ships only when its leave-one-variant-out rank correlation with the observed
    rates reaches this; otherwise the version samples plainly."""
    train_from: str = "current"
    """Where each round's training starts: ``"current"`` (the serving version, so rounds
    build on each other) or ``"base"`` (the lineage's first model, trained afresh on all the
    evidence so far). From the base, a round's narrowing of the copy cannot add to the last
    one's: every version is one round's training away from the base model."""
    training: TrainingConfig = field(default_factory=_default_training)
    """How to fine-tune (see :class:`adloop.generators.training.TrainingConfig`)."""
    seed: int = 0
    """Seeds posterior draws, the hold-out split and generation in the gate."""

    def __post_init__(self) -> None:
        for name in ("winner_threshold", "pair_confidence", "holdout_fraction"):
            value = getattr(self, name)
            if not (0.0 < value < 1.0):
                raise ValueError(f"RetrainConfig.{name} must be in (0, 1), got {value!r}")
        if self.train_from not in ("current", "base"):
            raise ValueError(
                f'RetrainConfig.train_from must be "current" or "base", got {self.train_from!r}'
            )
        above = self.above_average_confidence
        if above is not None and not (0.5 <= above < 1.0):
            raise ValueError(
                f"RetrainConfig.above_average_confidence must be in [0.5, 1) or None, got {above!r}"
            )
        for name in (
            "min_impressions",
            "min_pair_impressions",
            "min_holdout_pairs",
            "gate_candidates",
            "gate_briefs",
            "scorer_min_variants",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"RetrainConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("max_pairs_per_campaign", "n_draws", "rerank_oversample"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"RetrainConfig.{name} must be a positive integer, got {value!r}")
        for name in (
            "min_pass_rate_ratio",
            "min_distinct_ratio",
            "min_pass_rate_ratio_to_base",
            "min_distinct_ratio_to_base",
            "accuracy_tolerance",
            "scorer_min_spearman",
        ):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"RetrainConfig.{name} must be in [0, 1], got {value!r}")
        if not isinstance(self.training, TrainingConfig):
            raise ValueError("RetrainConfig.training must be a generators.training.TrainingConfig")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainConfig:
        """Build from plain config (YAML); ``training`` may be a dict of TrainingConfig fields."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"retraining: unknown key(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        training = data.get("training")
        if isinstance(training, dict):
            fields = set(TrainingConfig.__dataclass_fields__)
            bad = sorted(set(training) - fields)
            if bad:
                raise ValueError(
                    f"retraining.training: unknown key(s) {bad}; known: {sorted(fields)}"
                )
            data["training"] = TrainingConfig(**{**asdict(_default_training()), **training})
        return cls(**data)

    def base_model_dir(self) -> Path:
        """The base model directory (resolved against the model cache)."""
        if self.base_model:
            return Path(self.base_model).expanduser()
        from adloop.generators import default_model_dir

        return Path(default_model_dir()) / DEFAULT_BASE_MODEL

    def models_root_dir(self) -> Path:
        """Where versions are written."""
        if self.models_root:
            return Path(self.models_root).expanduser()
        from adloop.generators import default_model_dir

        return Path(default_model_dir()) / "versions"


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


@dataclass(frozen=True)
class GateResult:
    """The promotion gate's verdict and the figures behind it."""

    passed: bool
    reasons: tuple[str, ...]
    metrics: dict[str, float]


@dataclass(frozen=True)
class RetrainReport:
    """What one round did; ``outcome`` is promoted / rejected / skipped / failed."""

    outcome: str
    version: str | None = None
    current_version: str | None = None
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    model_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


# ----------------------------------------------------------------------------- data


def completion_text(headline: str, description: str) -> str:
    """The copy written the way the LM generator writes (and parses) it."""
    from adloop.generators import format_completion

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
    from adloop.bandits import ArmCounts, ThompsonSampling

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


def build_dataset(
    store: Any,
    *,
    config: RetrainConfig | None = None,
    campaign_ids: Sequence[str] | None = None,
) -> RetrainDataset:
    """Winners and confident pairs from the store, with a seeded hold-out split of the pairs.

    Example::

        data = build_dataset(store, config=RetrainConfig(min_impressions=100))
        print(data.summary())
    """
    from adloop.generators import load_brief

    config = config or RetrainConfig()
    rng = np.random.default_rng(config.seed)
    if campaign_ids is None:
        campaigns = store.campaigns()
    else:
        campaigns = []
        for campaign_id in campaign_ids:
            row = store.campaign(campaign_id)
            if row is None:
                raise ValueError(f"unknown campaign {campaign_id!r}")
            campaigns.append(row)
    winners: list[SFTExample] = []
    proven_variants: list[dict[str, Any]] = []
    all_pairs: list[tuple[PreferencePair, dict[str, Any]]] = []
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


# ----------------------------------------------------------------------------- gate


_CJK_PIECES = re.compile(f"({CJK_RUN.pattern})")


def _gram_tokens(text: str) -> list[str]:
    """Whitespace-separated words, with every CJK ideograph a token of its own.

    Chinese puts no spaces between words, so its runs of ideographs count character by
    character, whether or not the copy spaces its phrases; Latin words stay whole.
    """
    tokens: list[str] = []
    for word in text.lower().split():
        # split with a capturing group: odd pieces are CJK runs, even ones the rest
        for i, piece in enumerate(_CJK_PIECES.split(word)):
            if i % 2:
                tokens.extend(piece)
            elif piece:
                tokens.append(piece)
    return tokens


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n: unique n-grams / all n-grams over ``texts``, of words (characters for CJK).

    1.0 means no n-gram repeats anywhere; a model that writes the same line again and
    again tends to 0. Returns 0.0 for no n-grams at all.

    Example
    -------
    >>> distinct_n(["rings made to measure", "rings made to order"], 2)
    0.6666666666666666
    """
    grams: list[tuple[str, ...]] = []
    for text in texts:
        tokens = _gram_tokens(text)
        grams.extend(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def _load_for_scoring(model_dir: Path) -> tuple[Any, Any]:
    from adloop.generators import load_causal_lm

    return load_causal_lm(model_dir)


def validity(model_dir: Path, briefs: Sequence[Any], *, n: int, seed: int) -> dict[str, float]:
    """Generate ``n`` candidates per brief; filter pass rate and distinct-2 of what came out.

    The promotion gate's validity check, for one model directory. It samples the model
    plainly, without the copy scorer a version may ship: reranking puts copy that passes the
    filters first, so a reranked version's pass rate would be measured on a selection and a
    plain one's on raw samples, and a version without a scorer would look collapsed next to
    one with.
    """
    from adloop.generators import LMGenerator
    from adloop.generators.filters import NearDuplicateIndex, check_candidate

    generator = LMGenerator(model_dir, rerank=False)
    produced = passed = 0
    texts: list[str] = []
    for brief in briefs:
        candidates = generator.generate(brief, n, seed=seed)
        accepted = NearDuplicateIndex(brief.language)
        produced += max(n, len(candidates))  # a model that returns nothing fails the check
        for candidate in candidates:
            texts.append(candidate.text)
            if check_candidate(candidate, brief, accepted=accepted) is None:
                accepted.add(candidate.text)
                passed += 1
    return {
        "pass_rate": passed / produced if produced else 0.0,
        "distinct_2": distinct_n(texts, 2),
        "n_generated": float(len(texts)),
    }


def evaluate_gate(
    candidate_dir: str | Path,
    current_dir: str | Path | None,
    heldout_pairs: Sequence[PreferencePair],
    *,
    briefs: Sequence[Any] = (),
    config: RetrainConfig | None = None,
    base_dir: str | Path | None = None,
) -> GateResult:
    """Compare a trained version with the current one on held-out pairs and on validity.

    Passes when (1) held-out pairwise accuracy >= the current version's minus
    ``accuracy_tolerance``; (2) with ``gate_candidates`` > 0 and briefs given, the filter pass
    rate >= ``min_pass_rate_ratio`` x the current one and distinct-2 >= ``min_distinct_ratio``
    x the current one, and, when ``base_dir`` (the lineage's first version) is given and is
    not the current one, both >= the ``..._to_base`` ratios x the base model's, so that
    small losses round after round cannot add up to a collapse. ``current_dir=None``
    compares against nothing (first version).

    Example::

        gate = evaluate_gate("models/v0003", "models/v0002", data.heldout_pairs,
                             briefs=data.briefs)
        print(gate.passed, gate.reasons)
    """
    from adloop.generators.training import preference_accuracy

    config = config or RetrainConfig()
    max_length = config.training.max_length
    metrics: dict[str, float] = {"heldout_pairs": float(len(heldout_pairs))}
    reasons: list[str] = []
    candidate_dir = Path(candidate_dir)
    model, tokenizer = _load_for_scoring(candidate_dir)
    if heldout_pairs:
        metrics["heldout_accuracy"] = preference_accuracy(
            model, tokenizer, heldout_pairs, max_length=max_length
        )
    del model
    if current_dir is not None and heldout_pairs:
        current_model, current_tokenizer = _load_for_scoring(Path(current_dir))
        metrics["current_heldout_accuracy"] = preference_accuracy(
            current_model, current_tokenizer, heldout_pairs, max_length=max_length
        )
        del current_model
        if (
            metrics["heldout_accuracy"]
            < metrics["current_heldout_accuracy"] - config.accuracy_tolerance
        ):
            reasons.append(
                f"held-out accuracy {metrics['heldout_accuracy']:.3f} is below the current "
                f"version's {metrics['current_heldout_accuracy']:.3f}"
            )
    if config.gate_candidates and briefs:
        chosen_briefs = list(briefs)[: config.gate_briefs]
        new = validity(candidate_dir, chosen_briefs, n=config.gate_candidates, seed=config.seed)
        metrics.update({f"{k}": v for k, v in new.items()})
        if current_dir is not None:
            old = validity(
                Path(current_dir), chosen_briefs, n=config.gate_candidates, seed=config.seed
            )
            metrics.update({f"current_{k}": v for k, v in old.items()})
            if new["pass_rate"] < config.min_pass_rate_ratio * old["pass_rate"]:
                reasons.append(
                    f"filter pass rate collapsed: {new['pass_rate']:.2f} vs {old['pass_rate']:.2f}"
                )
            if new["distinct_2"] < config.min_distinct_ratio * old["distinct_2"]:
                reasons.append(
                    f"distinct-2 collapsed: {new['distinct_2']:.2f} vs {old['distinct_2']:.2f}"
                )
            if base_dir is not None and Path(base_dir) != Path(current_dir):
                base = validity(
                    Path(base_dir), chosen_briefs, n=config.gate_candidates, seed=config.seed
                )
                metrics.update({f"base_{k}": v for k, v in base.items()})
                for key, label, ratio in (
                    ("pass_rate", "filter pass rate", config.min_pass_rate_ratio_to_base),
                    ("distinct_2", "distinct-2", config.min_distinct_ratio_to_base),
                ):
                    if new[key] < ratio * base[key]:
                        reasons.append(
                            f"{label} drifted down since the base model: {new[key]:.2f} vs "
                            f"{base[key]:.2f} (floor {ratio:g} x the base's)"
                        )
        elif new["n_generated"] == 0:
            reasons.append("the model produced no candidates")
    return GateResult(passed=not reasons, reasons=tuple(reasons), metrics=metrics)


def fit_version_scorer(
    model_dir: str | Path, variants: Sequence[dict[str, Any]], config: RetrainConfig
) -> dict[str, Any]:
    """Fit a copy scorer on proven variants and save it in ``model_dir`` when it validates.

    Returns what happened (``shipped``, the reason when not, and the fit's metrics), for the
    version's record. A scorer that does not rank left-out variants better than
    ``scorer_min_spearman`` is not saved: the version then samples plainly.
    """
    from adloop.generators.scorer import fit_scorer

    if config.rerank_oversample <= 1:
        return {"shipped": False, "reason": "reranking is off (rerank_oversample 1)"}
    variants = [v for v in variants if v["trials"] > 0]  # min_pair_impressions may be 0
    if len(variants) < config.scorer_min_variants:
        return {
            "shipped": False,
            "reason": f"{len(variants)} proven variants; a scorer needs "
            f"{config.scorer_min_variants}",
        }
    scorer = fit_scorer(
        [v["text"] for v in variants],
        [v["trials"] for v in variants],
        [v["successes"] for v in variants],
        [v["campaign_id"] for v in variants],
        oversample=config.rerank_oversample,
    )
    report: dict[str, Any] = {"shipped": False, "metrics": scorer.metrics}
    if scorer.metrics["loo_spearman"] < config.scorer_min_spearman:
        report["reason"] = (
            f"leave-one-out rank correlation {scorer.metrics['loo_spearman']:.2f} is below "
            f"{config.scorer_min_spearman:g}"
        )
        return report
    scorer.save(model_dir)
    report["shipped"] = True
    return report


def train_and_gate(job: dict[str, Any]) -> dict[str, Any]:
    """Train one version and run the gate; a top-level function so a process pool can run it.

    ``job`` holds plain data (paths, examples as dicts, config as dicts) so it pickles
    cheaply; the store is never touched here (DuckDB allows one writer process).
    """
    from adloop.generators.training import train_version

    config = RetrainConfig.from_dict(job["config"])
    if config.training.threads:
        import torch

        torch.set_num_threads(config.training.threads)
    winners = [SFTExample(**e) for e in job["winners"]]
    pairs = [PreferencePair(**p) for p in job["pairs"]]
    heldout = [PreferencePair(**p) for p in job["heldout_pairs"]]
    from adloop.generators import load_brief

    briefs = [load_brief(b) for b in job["briefs"]]
    started = time.perf_counter()
    result = train_version(
        job["from_dir"],
        job["out_dir"],
        sft_examples=winners,
        pairs=pairs,
        config=config.training,
        version=job["version"],
        parent=job["parent"],
        base=job["base"],
        data_hash=job["data_hash"],
    )
    scorer = fit_version_scorer(result.model_dir, job.get("variants", []), config)
    trained = time.perf_counter()
    gate = evaluate_gate(
        result.model_dir,
        job["current_dir"],
        heldout,
        briefs=briefs,
        config=config,
        base_dir=job["base"],
    )
    gated = time.perf_counter()
    return {
        "model_dir": str(result.model_dir),
        "training_metrics": result.metrics,
        "steps": result.steps,
        "scorer": scorer,
        "gate": {"passed": gate.passed, "reasons": list(gate.reasons), "metrics": gate.metrics},
        "seconds": {"train": trained - started, "gate": gated - trained},
    }


# ----------------------------------------------------------------------------- round


def _config_dict(config: RetrainConfig) -> dict[str, Any]:
    data = asdict(config)
    data["training"] = config.training.to_dict()
    if isinstance(data["training"].get("lora_target_modules"), list):
        data["training"]["lora_target_modules"] = tuple(data["training"]["lora_target_modules"])
    return data


def _ensure_current(store: Any, config: RetrainConfig, clock: Callable[[], datetime]) -> dict:
    """The promoted version; registers and promotes the base model on first use."""
    current = store.current_model()
    if current is not None:
        return current
    base_dir = config.base_model_dir()
    if not (base_dir / "config.json").exists():
        from adloop.generators.errors import ModelNotFoundError

        raise ModelNotFoundError(
            f"no model at {base_dir}; install the default with `adloop models pull smollm2` "
            "or set retraining.base_model to a local causal LM directory"
        )
    version = "base-" + hashlib.sha256(str(base_dir.resolve()).encode()).hexdigest()[:8]
    if not any(v["version"] == version for v in store.model_versions()):
        store.add_model_version(
            {
                "version": version,
                "path": str(base_dir),
                "base": str(base_dir),
                "parent": None,
                "data_hash": None,
                "metrics": {},
                "created_at": clock(),
            }
        )
    store.promote_model(version)
    return store.current_model()


def _remove_stale_partials(root: Path) -> None:
    """Delete half-written version folders left by a training process that was killed."""
    import os
    import shutil

    for path in root.glob(".*.partial-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # still running: another round is writing it
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _next_version(store: Any, root: Path) -> str:
    n = sum(1 for v in store.model_versions() if not str(v["version"]).startswith("base-")) + 1
    while (root / f"v{n:04d}").exists():
        n += 1
    return f"v{n:04d}"


def retrain_round(
    store: Any,
    *,
    config: RetrainConfig | None = None,
    campaign_ids: Sequence[str] | None = None,
    executor: Executor | None = None,
    clock: Callable[[], datetime] | None = None,
    on_promote: Callable[[dict[str, Any]], None] | None = None,
) -> RetrainReport:
    """Run one retraining round now and return what it did (never raises for training failures).

    ``executor``: where training and the gate run (e.g. a ``ProcessPoolExecutor``); None runs
    them in this process. ``on_promote`` is called with the new current-version record after a
    promotion (a serving process uses it to switch models).

    Example::

        report = retrain_round(store, config=RetrainConfig(base_model="models/tiny"))
        assert report.outcome in {"promoted", "rejected", "skipped", "failed"}
    """
    config = config or RetrainConfig()
    clock = clock or _utcnow
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    current = _ensure_current(store, config, clock)
    data = build_dataset(store, config=config, campaign_ids=campaign_ids)
    seconds["data"] = time.perf_counter() - started
    summary = data.summary()
    if not data.winners and not data.pairs:
        return RetrainReport(
            outcome="skipped",
            current_version=current["version"],
            reason="no winners and no confident pairs yet",
            data=summary,
            seconds=seconds,
        )
    if len(data.heldout_pairs) < config.min_holdout_pairs:
        return RetrainReport(
            outcome="skipped",
            current_version=current["version"],
            data=summary,
            seconds=seconds,
            reason=f"{len(data.heldout_pairs)} held-out pairs; the gate needs "
            f"{config.min_holdout_pairs}",
        )
    root = config.models_root_dir()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    version = _next_version(store, root)
    base = current.get("base") or current["path"]
    job = {
        "config": _config_dict(config),
        "winners": [asdict(w) for w in data.winners],
        "pairs": [asdict(p) for p in data.pairs],
        "heldout_pairs": [asdict(p) for p in data.heldout_pairs],
        "briefs": [b.model_dump(mode="json") for b in data.briefs],
        "from_dir": base if config.train_from == "base" else current["path"],
        "current_dir": current["path"],
        "out_dir": str(root / version),
        "version": version,
        "parent": current["version"],
        "base": base,
        "data_hash": data.data_hash,
        "variants": list(data.variants),
    }
    try:
        if executor is None:
            outcome = train_and_gate(job)
        else:
            outcome = executor.submit(train_and_gate, job).result()
    except Exception as exc:  # noqa: BLE001 - any training failure must leave serving untouched
        seconds["total"] = time.perf_counter() - started
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return RetrainReport(
            outcome="failed",
            version=version,
            current_version=current["version"],
            reason=f"training failed: {detail}",
            data=summary,
            seconds=seconds,
        )
    seconds.update(outcome["seconds"])
    gate = outcome["gate"]
    metrics = {
        "training": outcome["training_metrics"],
        "gate": gate["metrics"],
        "gate_passed": gate["passed"],
        "gate_reasons": gate["reasons"],
        "steps": outcome["steps"],
        "scorer": outcome.get("scorer"),
        "trained_from": job["from_dir"],
        "data": summary,
    }
    store.add_model_version(
        {
            "version": version,
            "path": outcome["model_dir"],
            "base": job["base"],
            "parent": current["version"],
            "data_hash": data.data_hash,
            "metrics": metrics,
            "created_at": clock(),
        }
    )
    (Path(outcome["model_dir"]) / "dataset.json").write_text(
        json.dumps(
            {"data_hash": data.data_hash, "rows": list(data.rows), "variants": list(data.variants)},
            indent=1,
            default=str,
        )
    )
    seconds["total"] = time.perf_counter() - started
    if not gate["passed"]:
        return RetrainReport(
            outcome="rejected",
            version=version,
            current_version=current["version"],
            reason="; ".join(gate["reasons"]),
            data=summary,
            metrics=metrics,
            seconds=seconds,
            model_dir=outcome["model_dir"],
        )
    store.promote_model(version)
    promoted = store.current_model()
    if on_promote is not None:
        on_promote(promoted)
    return RetrainReport(
        outcome="promoted",
        version=version,
        current_version=version,
        data=summary,
        metrics=metrics,
        seconds=seconds,
        model_dir=outcome["model_dir"],
    )


# ----------------------------------------------------------------------------- serving


class ServingModel:
    """The generator for the promoted version, switched atomically between requests.

    :meth:`sync` reads the promoted version from the store; when it changed, it loads the
    new model *first* and then replaces the (version, generator) pair in one assignment,
    so a request always sees one whole version, old or new, never a mix.

    Example::

        serving = ServingModel(store)
        serving.sync()
        version, generator = serving.current
    """

    def __init__(self, store: Any, *, loader: Callable[[str], Any] | None = None) -> None:
        self.store = store
        self.loader = loader
        self._current: tuple[str | None, Any] = (None, None)

    @property
    def current(self) -> tuple[str | None, Any]:
        """(version, generator) in use; (None, None) before the first sync."""
        return self._current

    def sync(self) -> bool:
        """Switch to the promoted version if it changed; True when a switch happened."""
        record = self.store.current_model()
        if record is None or record["version"] == self._current[0]:
            return False
        loader = self.loader
        if loader is None:
            from adloop.generators import LMGenerator

            loader = LMGenerator
        generator = loader(record["path"])
        self._current = (record["version"], generator)
        return True


def switch_pool_model(pool: Any, model_dir: str | Path) -> bool:
    """Point a ``GeneratorPool``'s language-model generator at ``model_dir``; True if it had one.

    The new model is loaded *before* the swap, and the swap is one list-item assignment, so
    a concurrent ``pool.generate`` uses either the old or the new model, never a half-loaded
    one. Sampling settings (temperature, top-p, batch size, ...) carry over.

    Example::

        retrain_round(engine.store, on_promote=lambda m: switch_pool_model(engine.pool, m["path"]))
    """
    from adloop.generators import LMGenerator

    generators = getattr(pool, "generators", None)
    if generators is None:
        return False
    switched = False
    for index, old in enumerate(list(generators)):
        if not isinstance(old, LMGenerator):
            continue
        new = LMGenerator(
            model_dir,
            temperature=old.temperature,
            top_p=old.top_p,
            batch_size=old.batch_size,
            max_new_tokens=old.max_new_tokens,
            device=old.device,
            num_threads=old.num_threads,
            rerank=old.rerank,
        )
        new.load()
        generators[index] = new
        switched = True
    return switched


def _pool_model_dir(pool: Any) -> Path | None:
    from adloop.generators import LMGenerator

    for generator in getattr(pool, "generators", None) or ():
        if isinstance(generator, LMGenerator):
            return Path(generator.model_dir)
    return None


def make_retrain_hook(
    config: RetrainConfig | Mapping[str, Any] | None = None,
) -> Callable[[Any, int], dict[str, Any]]:
    """A retraining hook for the simulator (``on_retrain(engine, round_index)``).

    Each call runs :func:`retrain_round` on the engine's store and, after a promotion,
    switches the engine's generator pool to the new version. ``config`` may be plain
    settings (a scenario's ``retraining.config``; checked here, so a bad key fails before
    the simulation starts). Unless ``config`` says otherwise, the first version starts from
    the pool's own language model and versions are written next to the database file
    (``<db folder>/models``), so a simulation never fills the user's model cache.

    Example::

        from adloop.sim import load_scenario, run_scenario
        scenario = load_scenario("examples/scenario_retraining_refresh.yaml")
        run_scenario(scenario, on_retrain=make_retrain_hook(scenario.retraining.config))
    """

    if config is not None and not isinstance(config, RetrainConfig):
        config = RetrainConfig.from_dict(dict(config))

    def hook(engine: Any, round_index: int) -> dict[str, Any]:
        settings = config or RetrainConfig()
        overrides: dict[str, Any] = {}
        pool_dir = _pool_model_dir(engine.pool)
        if settings.base_model is None and pool_dir is not None:
            overrides["base_model"] = str(pool_dir)
        if settings.models_root is None:
            overrides["models_root"] = str(Path(engine.store.path).parent / "models")
        if overrides:
            settings = RetrainConfig(**{**settings.__dict__, **overrides})
        report = retrain_round(
            engine.store,
            config=settings,
            clock=engine.clock,
            on_promote=lambda model: switch_pool_model(engine.pool, model["path"]),
        )
        gate = report.metrics.get("gate", {})
        scorer = report.metrics.get("scorer") or {}
        return {
            "round": round_index,
            "outcome": report.outcome,
            "version": report.current_version,
            "reason": report.reason,
            **{k: v for k, v in report.data.items() if k != "data_hash"},
            "data_hash": report.data.get("data_hash"),
            **{f"gate_{k}": v for k, v in gate.items()},
            "scorer_shipped": scorer.get("shipped", False),
            "scorer_loo_spearman": (scorer.get("metrics") or {}).get("loo_spearman"),
            "seconds": round(report.seconds.get("total", 0.0), 1),
        }

    return hook
