"""The simulated audience: segments, a hidden scorer from text to true CTR/CVR, and traffic draws.

A :class:`World` is an environment in the Gymnasium sense: :meth:`World.reset` seeds it,
:meth:`World.step` turns impressions into clicks and conversions, and the ground truth
(:meth:`World.true_rates`) is exposed for *scoring only* — a policy under test never sees it.
:func:`check_world` checks the contract (determinism per seed, rates in range, no ties).

The scorer, per segment ``s`` and text ``t``::

    logit CTR(s, t) = logit(base_ctr) + ctr_offset[s] + sum_f ctr_weights[s][f] * x_f(t)
                      + idiosyncratic_sd * z_ctr(t)
    logit CVR(s, t) = logit(base_cvr) + cvr_offset[s] + sum_f cvr_weights[s][f] * x_f(t)
                      + idiosyncratic_sd * z_cvr(t)

where ``x_f`` are :func:`adloop.sim.features` and ``z(t)`` is a standard normal value derived from a
hash of the text and the world seed: deterministic, and different for two different texts, so
no two texts tie exactly. CVR is the probability that a click converts.

Drift (both optional): *ad fatigue* multiplies a text's CTR by
``floor + (1 - floor) * 0.5 ** (exposure / half_life)`` where ``exposure`` is the impressions it
has received; a *preference shift* adds per-segment weight deltas from a point in time on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from types import MappingProxyType
from typing import Any

import numpy as np

from adloop.sim.errors import WorldError
from adloop.sim.features import DEFAULT_LEXICON, feature_names, features

__all__ = ["Segment", "StepResult", "TrueRates", "World", "check_world", "default_segments"]

_NORMAL = NormalDist()
_MIN_RATE, _MAX_RATE = 1e-5, 0.5


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True, kw_only=True)
class Segment:
    """An audience segment: its share of traffic and how it reacts to text features.

    Parameters
    ----------
    name:
        Segment name, as passed to ``Engine.choose(segment=...)``.
    share:
        Fraction of impressions from this segment (all shares sum to 1).
    ctr_weights:
        Log-odds weight per feature name (see :mod:`adloop.sim.features`) on the click rate.
    cvr_weights:
        Log-odds weight per feature name on the conversion rate of a click.
    ctr_offset, cvr_offset:
        Log-odds shift of this segment's base rates.

    Example
    -------
    >>> Segment(name="deal_hunters", share=0.5, ctr_weights={"kw_offer": 0.4}).name
    'deal_hunters'
    """

    name: str
    share: float
    ctr_weights: Mapping[str, float] = field(default_factory=dict)
    cvr_weights: Mapping[str, float] = field(default_factory=dict)
    ctr_offset: float = 0.0
    cvr_offset: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise WorldError("segment name must be non-empty")
        if not (0.0 < self.share <= 1.0) or not math.isfinite(self.share):
            raise WorldError(f"segment {self.name!r}: share must be in (0, 1], got {self.share!r}")


def default_segments() -> list[Segment]:
    """Three segments for the high-end jewellery examples, with readable preferences.

    ``connoisseurs`` like luxury, craft and made-to-measure words and dislike pushy urgency;
    ``trend_followers`` like fashion words, questions and exclamation marks; ``gift_buyers``
    respond to offers, numbers and calls to action and convert best.
    """
    return [
        Segment(
            name="connoisseurs",
            share=0.35,
            ctr_weights={
                "kw_luxury": 0.35,
                "kw_custom": 0.30,
                "kw_trust": 0.20,
                "urgency": -0.25,
                "kw_offer": -0.15,
                "length_deviation": -0.40,
            },
            cvr_weights={"kw_custom": 0.30, "kw_trust": 0.20},
            cvr_offset=0.2,
        ),  # fmt: skip
        Segment(
            name="trend_followers",
            share=0.40,
            ctr_weights={
                "kw_fashion": 0.35,
                "question": 0.20,
                "exclamation": 0.15,
                "cta": 0.10,
                "length_deviation": -0.50,
            },
            cvr_weights={"kw_fashion": 0.15, "kw_offer": 0.15},
            ctr_offset=0.15,
            cvr_offset=-0.2,
        ),  # fmt: skip
        Segment(
            name="gift_buyers",
            share=0.25,
            ctr_weights={
                "kw_offer": 0.35,
                "has_number": 0.25,
                "cta": 0.20,
                "urgency": 0.15,
                "length_deviation": -0.30,
            },
            cvr_weights={"kw_offer": 0.30, "urgency": 0.10},
            cvr_offset=0.3,
        ),  # fmt: skip
    ]


@dataclass(frozen=True)
class TrueRates:
    """Ground truth for scoring: ``ctr`` and ``cvr`` arrays of shape (n_texts, n_segments)."""

    texts: tuple[str, ...]
    segments: tuple[str, ...]
    ctr: np.ndarray
    cvr: np.ndarray

    def mixed_ctr(self, shares: Sequence[float]) -> np.ndarray:
        """CTR per text over a segment mix (weights summing to 1): shape (n_texts,)."""
        return self.ctr @ np.asarray(shares, dtype=float)


@dataclass(frozen=True)
class StepResult:
    """Outcome of one :meth:`World.step`: arrays of shape (n_segments, n_texts)."""

    impressions: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray


class World:
    """Segments plus a hidden scorer; turns impressions into clicks and conversions.

    Parameters
    ----------
    segments:
        Audience segments (shares must sum to 1). Defaults to :func:`default_segments`.
    base_ctr:
        Click-through rate of a neutral text (typical search ads: 0.01 to 0.03).
    base_cvr:
        Conversion rate of a click for a neutral text (a few percent).
    lexicon:
        Keyword categories for the ``kw_*`` features; defaults to the built-in lexicon.
    idiosyncratic_sd:
        Standard deviation (log-odds) of the per-text term that makes every text distinct.
    fatigue_half_life:
        Impressions after which fatigue has taken half of its toll on a text; ``None`` = off.
    fatigue_floor:
        Fraction of the CTR that fatigue never takes away.
    preference_shift:
        ``{segment: {feature: delta}}`` log-odds deltas that apply when ``shifted=True``.
    seed:
        Seeds the idiosyncratic terms (the scorer) and, unless :meth:`reset` is given another,
        the traffic draws.

    Example
    -------
    >>> world = World(seed=3)
    >>> rates = world.true_rates(["Bespoke rings, made to measure", "Shop rings today — 20% off"])
    >>> rates.ctr.shape
    (2, 3)
    >>> _ = world.reset(seed=1)
    >>> world.step(rates.texts, np.full((3, 2), 1000)).clicks.shape
    (3, 2)
    """

    def __init__(
        self,
        *,
        segments: Sequence[Segment] | None = None,
        base_ctr: float = 0.02,
        base_cvr: float = 0.04,
        lexicon: Mapping[str, Sequence[str]] | None = None,
        idiosyncratic_sd: float = 0.15,
        fatigue_half_life: float | None = None,
        fatigue_floor: float = 0.5,
        preference_shift: Mapping[str, Mapping[str, float]] | None = None,
        seed: int = 0,
    ) -> None:
        segments = list(default_segments() if segments is None else segments)
        if not segments:
            raise WorldError("a world needs at least one segment")
        names = [segment.name for segment in segments]
        if len(set(names)) != len(names):
            raise WorldError(f"segment names must be unique, got {names}")
        total = sum(segment.share for segment in segments)
        if abs(total - 1.0) > 1e-6:
            raise WorldError(f"segment shares must sum to 1, got {total:.6g} for {names}")
        for label, rate in (("base_ctr", base_ctr), ("base_cvr", base_cvr)):
            if not (0.0 < rate < 1.0):
                raise WorldError(f"{label} must be in (0, 1), got {rate!r}")
        if idiosyncratic_sd < 0 or not math.isfinite(idiosyncratic_sd):
            raise WorldError(f"idiosyncratic_sd must be >= 0, got {idiosyncratic_sd!r}")
        if fatigue_half_life is not None and not fatigue_half_life > 0:
            raise WorldError(f"fatigue_half_life must be > 0 or None, got {fatigue_half_life!r}")
        if not (0.0 <= fatigue_floor <= 1.0):
            raise WorldError(f"fatigue_floor must be in [0, 1], got {fatigue_floor!r}")
        self.lexicon = MappingProxyType(dict(DEFAULT_LEXICON if lexicon is None else lexicon))
        known = set(feature_names(self.lexicon))
        for segment in segments:
            for kind, weights in (("ctr_weights", segment.ctr_weights),
                                  ("cvr_weights", segment.cvr_weights)):  # fmt: skip
                unknown = sorted(set(weights) - known)
                if unknown:
                    raise WorldError(
                        f"segment {segment.name!r} {kind}: unknown feature(s) {unknown}; "
                        f"known: {sorted(known)}"
                    )
        shift = {name: dict(deltas) for name, deltas in (preference_shift or {}).items()}
        for name, deltas in shift.items():
            if name not in names:
                raise WorldError(f"preference_shift names unknown segment {name!r}; known {names}")
            unknown = sorted(set(deltas) - known)
            if unknown:
                raise WorldError(f"preference_shift[{name!r}]: unknown feature(s) {unknown}")
        self.segments = tuple(segments)
        self.base_ctr = float(base_ctr)
        self.base_cvr = float(base_cvr)
        self.idiosyncratic_sd = float(idiosyncratic_sd)
        self.fatigue_half_life = fatigue_half_life
        self.fatigue_floor = float(fatigue_floor)
        self.preference_shift = MappingProxyType(shift)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    # -- ground truth (scoring only) -------------------------------------------------------

    @property
    def segment_names(self) -> tuple[str, ...]:
        """Segment names in order."""
        return tuple(segment.name for segment in self.segments)

    @property
    def shares(self) -> np.ndarray:
        """Segment shares in order (sum to 1)."""
        return np.array([segment.share for segment in self.segments])

    def idiosyncratic(self, text: str, kind: str = "ctr") -> float:
        """The per-text standard-normal term (``kind`` is ``"ctr"`` or ``"cvr"``)."""
        digest = hashlib.blake2b(f"{self.seed}\x1f{kind}\x1f{text}".encode(), digest_size=8)
        uniform = (int.from_bytes(digest.digest(), "big") + 0.5) / 2.0**64
        return _NORMAL.inv_cdf(uniform)

    def true_rates(self, texts: Sequence[str], *, shifted: bool = False) -> TrueRates:
        """True CTR and CVR of each text in each segment (before fatigue).

        ``shifted=True`` applies the preference shift. For scoring and reports only.
        """
        texts = tuple(texts)
        ctr = np.empty((len(texts), len(self.segments)))
        cvr = np.empty_like(ctr)
        base_ctr, base_cvr = _logit(self.base_ctr), _logit(self.base_cvr)
        for i, text in enumerate(texts):
            x = features(text, self.lexicon)
            z_ctr = self.idiosyncratic_sd * self.idiosyncratic(text, "ctr")
            z_cvr = self.idiosyncratic_sd * self.idiosyncratic(text, "cvr")
            for j, segment in enumerate(self.segments):
                ctr_logit = base_ctr + segment.ctr_offset + z_ctr
                ctr_logit += sum(w * x[f] for f, w in segment.ctr_weights.items())
                if shifted:
                    deltas = self.preference_shift.get(segment.name, {})
                    ctr_logit += sum(w * x[f] for f, w in deltas.items())
                cvr_logit = base_cvr + segment.cvr_offset + z_cvr
                cvr_logit += sum(w * x[f] for f, w in segment.cvr_weights.items())
                ctr[i, j] = 1.0 / (1.0 + math.exp(-ctr_logit))
                cvr[i, j] = 1.0 / (1.0 + math.exp(-cvr_logit))
        np.clip(ctr, _MIN_RATE, _MAX_RATE, out=ctr)
        np.clip(cvr, _MIN_RATE, _MAX_RATE, out=cvr)
        return TrueRates(texts=texts, segments=self.segment_names, ctr=ctr, cvr=cvr)

    def fatigue(self, exposure: np.ndarray) -> np.ndarray:
        """CTR multiplier for texts that have had ``exposure`` impressions (1 when off)."""
        exposure = np.asarray(exposure, dtype=float)
        if self.fatigue_half_life is None:
            return np.ones_like(exposure)
        decay = 0.5 ** (exposure / self.fatigue_half_life)
        return self.fatigue_floor + (1.0 - self.fatigue_floor) * decay

    # -- environment contract --------------------------------------------------------------

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Re-seed the traffic draws; returns the observation (segment names and shares).

        The scorer (true rates) depends only on the constructor seed, so a policy can be
        re-run on the same world with fresh traffic.
        """
        self._rng = np.random.default_rng(self.seed if seed is None else seed)
        return {"segments": self.segment_names, "shares": self.shares.tolist()}

    def step(
        self,
        texts: Sequence[str] | TrueRates,
        impressions: np.ndarray,
        *,
        exposure: np.ndarray | None = None,
        shifted: bool = False,
    ) -> StepResult:
        """Draw clicks and conversions for ``impressions`` (shape (n_segments, n_texts)).

        Parameters
        ----------
        texts:
            The texts shown, or precomputed :class:`TrueRates` (faster in loops).
        impressions:
            Non-negative integer counts per segment and text.
        exposure:
            Impressions each text had before this step (for fatigue), shape (n_texts,).
        shifted:
            Whether the preference shift is in effect.
        """
        rates = texts if isinstance(texts, TrueRates) else self.true_rates(texts, shifted=shifted)
        impressions = np.asarray(impressions)
        expected = (len(self.segments), len(rates.texts))
        if impressions.shape != expected:
            raise WorldError(f"impressions must have shape {expected}, got {impressions.shape}")
        if np.any(impressions < 0):
            raise WorldError("impressions must be non-negative")
        impressions = impressions.astype(np.int64)
        ctr = rates.ctr.T
        if exposure is not None:
            ctr = ctr * self.fatigue(exposure)[None, :]
        clicks = self._rng.binomial(impressions, ctr)
        conversions = self._rng.binomial(clicks, rates.cvr.T)
        return StepResult(impressions=impressions, clicks=clicks, conversions=conversions)


def check_world(world: World, texts: Sequence[str] | None = None) -> None:
    """Check the environment contract; raise :class:`adloop.sim.errors.WorldError` on a breach.

    Checks: true rates are finite and inside (0, 0.5]; different texts never tie exactly;
    the scorer is deterministic; :meth:`World.reset` with one seed replays the same traffic
    and another seed gives different traffic; step outputs are consistent
    (clicks <= impressions, conversions <= clicks).

    Example
    -------
    >>> check_world(World(seed=1))
    """
    texts = list(texts or ["Bespoke rings, made to measure", "Shop rings today — 20% off!",
                           "Timeless elegance, handcrafted", "臻品钻戒 限时礼遇"])  # fmt: skip
    rates = world.true_rates(texts)
    if not (np.all(np.isfinite(rates.ctr)) and np.all((rates.ctr > 0) & (rates.ctr <= _MAX_RATE))):
        raise WorldError("true CTRs must be finite and in (0, 0.5]")
    if not (np.all(np.isfinite(rates.cvr)) and np.all((rates.cvr > 0) & (rates.cvr <= _MAX_RATE))):
        raise WorldError("true CVRs must be finite and in (0, 0.5]")
    distinct = len(set(texts))
    for j in range(rates.ctr.shape[1]):
        if len(set(rates.ctr[:, j].tolist())) < distinct:
            raise WorldError("two different texts have exactly the same true CTR")
    if not np.array_equal(rates.ctr, world.true_rates(texts).ctr):
        raise WorldError("the scorer is not deterministic")
    impressions = np.full((len(world.segments), len(texts)), 5000)
    world.reset(seed=123)
    first = world.step(rates, impressions)
    world.reset(seed=123)
    again = world.step(rates, impressions)
    world.reset(seed=124)
    other = world.step(rates, impressions)
    if not np.array_equal(first.clicks, again.clicks):
        raise WorldError("reset(seed) does not replay the same traffic")
    if np.array_equal(first.clicks, other.clicks) and first.clicks.sum() > 0:
        raise WorldError("different seeds gave identical traffic")
    if np.any(first.clicks > first.impressions) or np.any(first.conversions > first.clicks):
        raise WorldError("step returned more clicks than impressions or conversions than clicks")
    world.reset()
