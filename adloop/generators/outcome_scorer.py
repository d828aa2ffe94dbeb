"""An outcome scorer: predicts how a text's click-through log-odds differs from its test's, learnt
from real A/B results.

Each arm of each test (or campaign) is one observation: its empirical CTR log-odds, centred on
its test's weighted mean, so tests with different base rates pool and only the *relative* pull of
the copy is learnt. Weights are inverse variances: the arm's sampling variance plus a text-level
variance (what no text feature explains, estimated from the data), so an arm with a million
impressions counts about as much as one with ten thousand rather than a hundred times more.

Three blocks of text features, each fitted as its own weighted ridge (closed form, numpy):

- ``features``: a handful of interpretable ones (length, numbers, question, "you", quotes...);
  :meth:`OutcomeScorer.explain` reports them;
- ``sentence``: all-MiniLM-L6-v2 sentence vectors (:class:`~.embeddings.SentenceEmbedder`);
- ``lm``: mean-pooled middle-layer states of a causal LM, SmolLM2 by default
  (:class:`~.embeddings.CausalLMEmbedder`).

Features are centred within each test too, so a block only explains differences between arms
of one test. Each block's ridge strength is chosen by grouped cross-validation (whole tests held
out), and the blocks' out-of-fold predictions are combined with non-negative least-squares
weights, which also calibrates the scale: the prediction is an expected log-odds offset, usable
as a prior mean, not just a ranking. On the Upworthy archive this ranks the winner of held-out
significant pairs right about 70 % of the time (``adloop bench scorer``).

Example
-------
>>> scorer = OutcomeScorer(OutcomeScorerConfig(blocks=("features",)))
>>> scorer.fit(texts, groups, impressions, clicks)  # doctest: +SKIP
>>> scorer.predict(["Why you need this?", "A report"])  # doctest: +SKIP
array([ 0.031, -0.027])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adloop.generators.embeddings import CausalLMEmbedder, SentenceEmbedder, embedder_from_spec
from adloop.generators.errors import ConfigError, ScorerError
from adloop.generators.outcome_features import FEATURE_NAMES, text_features
from adloop.generators.outcome_ridge import (
    ArmData,
    block_scaling,
    centre_within_groups,
    choose_ridge,
    fit_ridge,
    group_folds,
    stack_weights,
)

__all__ = [
    "BLOCKS",
    "OUTCOME_SCORER_FILES",
    "OutcomeScorer",
    "OutcomeScorerConfig",
    "cross_fitted_predictions",
]

#: Blocks a scorer can use, in the order they are fitted and saved.
BLOCKS = ("features", "sentence", "lm")
#: Files :meth:`OutcomeScorer.save` writes into a directory.
OUTCOME_SCORER_FILES = ("outcome_scorer.json", "outcome_scorer.npz")
FORMAT_VERSION = 1
_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


@dataclass(frozen=True)
class OutcomeScorerConfig:
    """How an :class:`OutcomeScorer` is built; checked at construction.

    Example
    -------
    >>> OutcomeScorerConfig(blocks=("features", "sentence")).blocks
    ('features', 'sentence')
    """

    blocks: tuple[str, ...] = BLOCKS
    """Feature blocks to fit, any of ``features``, ``sentence`` (MiniLM) and ``lm``."""
    lm_dir: str | None = None
    """Causal LM directory for the ``lm`` block; None is the installed SmolLM2."""
    lm_layers: tuple[float, ...] = (0.5, 0.6, 0.7)
    """Layers pooled by the ``lm`` block, as fractions of the model's depth."""
    alphas: tuple[float, ...] = _ALPHAS
    """Ridge strengths tried per block (in units of an average arm's weight)."""
    inner_folds: int = 5
    """Grouped cross-validation folds used to pick each block's strength and the block weights."""
    text_variance: float | None = None
    """Log-odds variance between texts beyond sampling noise; None estimates it from the data."""
    seed: int = 0
    """Seed of the inner folds' assignment of groups."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "lm_layers", tuple(float(f) for f in self.lm_layers))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        unknown = [b for b in self.blocks if b not in BLOCKS]
        if not self.blocks or unknown or len(set(self.blocks)) != len(self.blocks):
            raise ConfigError(
                f"OutcomeScorerConfig.blocks must be distinct names from {BLOCKS}, "
                f"got {self.blocks}"
            )
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"OutcomeScorerConfig.alphas must be positive, got {self.alphas}")
        if self.inner_folds < 2:
            raise ConfigError(
                f"OutcomeScorerConfig.inner_folds must be >= 2, got {self.inner_folds}"
            )
        if self.text_variance is not None and self.text_variance < 0:
            raise ConfigError(
                f"OutcomeScorerConfig.text_variance must be >= 0 or None, got {self.text_variance}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _embedder(
    block: str, config: OutcomeScorerConfig, cache_dir: str | Path | None
) -> CausalLMEmbedder | SentenceEmbedder:
    if block == "lm":
        return CausalLMEmbedder(config.lm_dir, layers=config.lm_layers, cache_dir=cache_dir)
    return SentenceEmbedder(cache_dir=cache_dir)


def _check_arms(
    texts: Sequence[str],
    groups: Sequence[Any],
    impressions: Sequence[float],
    clicks: Sequence[float],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(texts, str):
        raise ConfigError("texts must be a list of strings, one per arm, not one string")
    texts = [str(t) for t in texts]
    n = len(texts)
    if not (len(groups) == len(impressions) == len(clicks) == n):
        raise ConfigError(
            "texts, groups, impressions and clicks differ in length "
            f"({n}, {len(groups)}, {len(impressions)}, {len(clicks)}); pass one of each per arm"
        )
    shown = np.asarray(impressions, dtype=float)
    clicked = np.asarray(clicks, dtype=float)
    if np.any(~np.isfinite(shown)) or np.any(shown <= 0):
        raise ConfigError("impressions must be finite and > 0; leave out arms never shown")
    if np.any(~np.isfinite(clicked)) or np.any(clicked < 0) or np.any(clicked > shown):
        raise ConfigError("clicks must satisfy 0 <= clicks <= impressions for every arm")
    if any(not t.strip() for t in texts):
        raise ConfigError("every text must be non-empty; drop arms without copy")
    labels = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    group_index = np.array([labels[g] for g in groups], dtype=np.int64)
    if np.bincount(group_index).max(initial=0) < 2:
        raise ConfigError("no group has two arms or more: the scorer learns differences within a "
                          "test; pass the test (or campaign) of each arm as its group")  # fmt: skip
    return texts, group_index, shown, clicked


def _fingerprint(texts: list[str], groups: np.ndarray, shown: np.ndarray, clicked: np.ndarray):
    digest = hashlib.sha256()
    for row in sorted(zip(groups.tolist(), texts, shown.tolist(), clicked.tolist(), strict=True)):
        digest.update(repr(row).encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass
class _Block:
    """One fitted block: centring, scaling and coefficients in scaled units."""

    mean: np.ndarray
    scale: np.ndarray
    beta: np.ndarray
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.beta


@dataclass
class OutcomeScorer:
    """Predicts a text's CTR log-odds offset from its test's mean; higher wins more often.

    ``cache_dir`` keeps embeddings on disk between runs (see :mod:`.embeddings`); it is not part
    of the configuration and is not saved.
    """

    config: OutcomeScorerConfig = field(default_factory=OutcomeScorerConfig)
    cache_dir: str | Path | None = None
    _blocks: dict[str, _Block] = field(default_factory=dict, init=False, repr=False)
    _weights: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _record: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    # -- matrices ------------------------------------------------------------------------------
    def block_matrices(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The raw feature matrix of each configured block for ``texts`` (embeds them)."""
        texts = list(texts)
        out: dict[str, np.ndarray] = {}
        for block in self.config.blocks:
            if block == "features":
                out[block] = text_features(texts)
            else:
                out[block] = _embedder(block, self.config, self.cache_dir).embed(texts)
        return out

    # -- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        groups: Sequence[Any],
        impressions: Sequence[float],
        clicks: Sequence[float],
    ) -> OutcomeScorer:
        """Fit on arms' results: one text, group (test or campaign), impressions, clicks each.

        Raises :class:`ConfigError` on mismatched lengths, impossible counts, empty texts, or
        when no group has two arms. Returns the scorer itself.
        """
        texts, group_index, shown, clicked = _check_arms(texts, groups, impressions, clicks)
        matrices = self.block_matrices(texts)
        self.fit_matrices(matrices, group_index, shown, clicked)
        self._record["data_fingerprint"] = _fingerprint(texts, group_index, shown, clicked)
        self._record["embedders"] = {
            b: _embedder(b, self.config, self.cache_dir).spec()
            for b in self.config.blocks
            if b != "features"
        }
        return self

    def fit_matrices(
        self,
        matrices: dict[str, np.ndarray],
        groups: np.ndarray,
        impressions: np.ndarray,
        clicks: np.ndarray,
    ) -> OutcomeScorer:
        """Fit on precomputed :meth:`block_matrices` (rows = arms; ``groups`` integer labels)."""
        config = self.config
        arms = ArmData.from_counts(impressions, clicks, groups, config.text_variance)
        folds = group_folds(arms.groups, config.inner_folds, config.seed)
        out_of_fold: dict[str, np.ndarray] = {}
        self._blocks = {}
        for block in config.blocks:
            x = np.asarray(matrices[block], dtype=float)
            mean, scale = block_scaling(x, arms.weights, per_column=block == "features")
            xc = centre_within_groups((x - mean) / scale, arms)
            alpha, predictions = choose_ridge(xc, arms, folds, config.alphas)
            beta = fit_ridge(xc, arms, alpha)
            self._blocks[block] = _Block(mean=mean, scale=scale, beta=beta, alpha=alpha)
            out_of_fold[block] = predictions
        self._weights = stack_weights(out_of_fold, arms)
        combined = sum(self._weights[b] * out_of_fold[b] for b in config.blocks)
        self._record = {
            "arms": int(len(arms.y)),
            "groups": int(len(np.unique(arms.groups))),
            "text_variance": arms.text_variance,
            "alphas": {b: self._blocks[b].alpha for b in config.blocks},
            "block_weights": dict(self._weights),
            "validation": arms.validation(combined, config.inner_folds),
        }
        return self

    # -- using it ------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return bool(self._blocks)

    @property
    def record(self) -> dict[str, Any]:
        """What the fit measured: arms, groups, strengths, block weights, validation figures."""
        return dict(self._record)

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ScorerError("the outcome scorer is not fitted; call fit() or load() first")

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Expected CTR log-odds offset of each text from its test's average arm."""
        self._require_fitted()
        return self.predict_matrices(self.block_matrices(texts))

    def predict_matrices(self, matrices: dict[str, np.ndarray]) -> np.ndarray:
        """:meth:`predict` on precomputed :meth:`block_matrices`."""
        self._require_fitted()
        total = None
        for block, fitted in self._blocks.items():
            part = self._weights[block] * fitted.predict(np.asarray(matrices[block], dtype=float))
            total = part if total is None else total + part
        assert total is not None
        return total

    def explain(self, texts: Sequence[str], top: int = 3) -> list[list[dict[str, Any]]]:
        """Per text, the ``top`` interpretable features that move its score most, with effects.

        Each item: ``feature``, ``value`` (the text's), ``coefficient`` (log-odds per unit of
        the feature, from the ``features`` block fitted on its own) and ``effect`` (coefficient
        x the value's distance from the training average). Needs the ``features`` block.
        """
        self._require_fitted()
        if "features" not in self._blocks:
            raise ScorerError("explain needs the 'features' block; fit with it in config.blocks")
        if top < 1:
            raise ConfigError(f"explain: top must be >= 1, got {top}")
        fitted = self._blocks["features"]
        coefficients = fitted.beta / fitted.scale
        values = text_features(list(texts))
        effects = (values - fitted.mean) * coefficients
        out = []
        for row, effect in zip(values, effects, strict=True):
            order = np.argsort(-np.abs(effect), kind="stable")[:top]
            out.append(
                [
                    {
                        "feature": FEATURE_NAMES[j],
                        "value": float(row[j]),
                        "coefficient": float(coefficients[j]),
                        "effect": float(effect[j]),
                    }
                    for j in order
                ]
            )
        return out

    def feature_coefficients(self) -> dict[str, float]:
        """Log-odds per unit of each interpretable feature, largest magnitude first."""
        self._require_fitted()
        if "features" not in self._blocks:
            raise ScorerError("the scorer has no 'features' block; fit with it in config.blocks")
        fitted = self._blocks["features"]
        pairs = zip(FEATURE_NAMES, (fitted.beta / fitted.scale).tolist(), strict=True)
        return dict(sorted(pairs, key=lambda kv: -abs(kv[1])))

    # -- files ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``outcome_scorer.json`` (settings, record) and ``.npz`` (coefficients)."""
        self._require_fitted()
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for block, fitted in self._blocks.items():
            arrays.update(
                {f"{block}.mean": fitted.mean, f"{block}.scale": fitted.scale,
                 f"{block}.beta": fitted.beta}
            )  # fmt: skip
        np.savez(folder / OUTCOME_SCORER_FILES[1], **arrays)
        meta = {
            "kind": "outcome-scorer",
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "features": list(FEATURE_NAMES),
            **self._record,
        }
        path = folder / OUTCOME_SCORER_FILES[0]
        path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(
        cls, directory: str | Path, *, cache_dir: str | Path | None = None, check: bool = True
    ) -> OutcomeScorer:
        """A scorer saved by :meth:`save`; ``check`` refuses one whose embedding models differ
        from the installed ones (its coefficients would be meaningless)."""
        folder = Path(directory)
        paths = [folder / name for name in OUTCOME_SCORER_FILES]
        if not all(p.is_file() for p in paths):
            raise ScorerError(f"no saved outcome scorer in {folder} (needs {OUTCOME_SCORER_FILES})")
        try:
            meta = json.loads(paths[0].read_text(encoding="utf-8"))
            with np.load(paths[1]) as data:
                arrays = {k: data[k] for k in data.files}
            settings = dict(meta["config"])
        except (OSError, ValueError, KeyError) as exc:
            raise ScorerError(
                f"the outcome scorer in {folder} is unreadable ({exc}); refit it"
            ) from exc
        if meta.get("format_version") != FORMAT_VERSION or meta.get("features") != list(
            FEATURE_NAMES
        ):
            raise ScorerError(
                f"the outcome scorer in {folder} was written by another adloop version "
                f"(format {meta.get('format_version')}); refit it"
            )
        scorer = cls(OutcomeScorerConfig(**settings), cache_dir=cache_dir)
        record = {k: v for k, v in meta.items() if k not in ("kind", "format_version", "config")}
        record.pop("features", None)
        for block, spec in record.get("embedders", {}).items():
            installed = embedder_from_spec(spec).key
            if check and installed != spec.get("key"):
                raise ScorerError(
                    f"the {block} embedder of the scorer in {folder} was {spec.get('key')}, but "
                    f"the installed model gives {installed}; refit the scorer on this model"
                )
        scorer._blocks = {
            b: _Block(arrays[f"{b}.mean"], arrays[f"{b}.scale"], arrays[f"{b}.beta"],
                      float(record["alphas"][b]))
            for b in scorer.config.blocks
        }  # fmt: skip
        scorer._weights = {b: float(w) for b, w in record["block_weights"].items()}
        scorer._record = record
        return scorer


def cross_fitted_predictions(
    texts: Sequence[str],
    groups: Sequence[Any],
    impressions: Sequence[float],
    clicks: Sequence[float],
    *,
    folds: int = 5,
    seed: int = 0,
    config: OutcomeScorerConfig | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Each arm's predicted log-odds offset from a scorer that never saw its own group.

    The groups (tests) are dealt into ``folds`` folds with a seeded shuffle; the arms of each
    fold are predicted by an :class:`OutcomeScorer` fitted on the other folds' arms only. So the
    prediction for an arm carries no information from its own test's clicks: use it as a
    text-informed prior (e.g. a Thompson-sampling prior mean on the log-odds scale, relative to
    the test's average arm) when replaying that test.

    Parameters
    ----------
    texts, groups, impressions, clicks
        One per arm, as for :meth:`OutcomeScorer.fit` (any archive with ``test_id``,
        ``headline``, ``impressions``, ``clicks`` columns: pass them in that order).
    folds
        Number of folds (>= 2); each group lies wholly in one.
    seed
        Seed of the fold assignment (and of the scorer's inner folds unless ``config`` sets it).
    config
        Scorer settings; default :class:`OutcomeScorerConfig` (all three blocks).
    cache_dir
        Folder for the embedding cache (strongly advised for the ``lm`` block).

    Returns
    -------
    numpy.ndarray
        ``len(texts)`` float offsets in log-odds; within one group, a higher value predicts a
        higher CTR. Stable signature: the replay's ``ts_text`` policy relies on it.

    Example
    -------
    >>> prior = cross_fitted_predictions(df["headline"], df["test_id"], df["impressions"],
    ...                                  df["clicks"], cache_dir="/tmp/emb")  # doctest: +SKIP
    """
    config = config or OutcomeScorerConfig(seed=seed)
    texts, group_index, shown, clicked = _check_arms(texts, groups, impressions, clicks)
    if folds < 2 or folds > len(np.unique(group_index)):
        raise ConfigError(
            f"cross_fitted_predictions: folds must be between 2 and the number of groups "
            f"({len(np.unique(group_index))}), got {folds}"
        )
    template = OutcomeScorer(config, cache_dir=cache_dir)
    matrices = template.block_matrices(texts)
    fold_of = group_folds(group_index, folds, seed)
    out = np.zeros(len(texts))
    for fold in range(folds):
        held = fold_of == fold
        scorer = OutcomeScorer(config, cache_dir=cache_dir)
        scorer.fit_matrices(
            {b: m[~held] for b, m in matrices.items()},
            group_index[~held],
            shown[~held],
            clicked[~held],
        )
        out[held] = scorer.predict_matrices({b: m[held] for b, m in matrices.items()})
    return out
