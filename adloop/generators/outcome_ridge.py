"""Weighted ridge regression of arms' CTR log-odds within groups: the outcome scorer's numerics.

Plain numpy, closed form. An arm's target is its empirical log-odds minus its group's weighted
mean; its weight is the inverse of (sampling variance + text variance), scaled to average 1 so
a ridge strength reads as "this many average arms". Strengths are chosen by grouped
cross-validation through one eigendecomposition per fold, so trying many costs little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArmData",
    "block_scaling",
    "centre_within_groups",
    "choose_ridge",
    "fit_ridge",
    "group_folds",
    "stack_weights",
]

#: Floor of the estimated text variance: a little shrinkage of noisy arms always helps.
MIN_TEXT_VARIANCE = 1e-3
#: |z| above which two arms of one group count as a significant pair in validation (p < 0.05).
PAIR_Z = 1.959964


def _group_sums(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    if values.ndim == 1:
        return np.bincount(groups, weights=values, minlength=n_groups)
    out = np.zeros((n_groups, values.shape[1]))
    np.add.at(out, groups, values)
    return out


@dataclass(frozen=True)
class ArmData:
    """Targets, weights and groups of the arms a scorer is fitted on."""

    y: np.ndarray
    """Empirical log-odds of each arm, centred on its group's weighted mean."""
    variance: np.ndarray
    """Sampling variance of each arm's log-odds."""
    weights: np.ndarray
    """Inverse of (sampling + text variance), scaled to mean 1."""
    groups: np.ndarray
    """Group of each arm as integers 0..G-1."""
    text_variance: float

    @classmethod
    def from_counts(
        cls,
        impressions: np.ndarray,
        clicks: np.ndarray,
        groups: np.ndarray,
        text_variance: float | None = None,
    ) -> ArmData:
        """Log-odds (with half a click of smoothing), variances, and the text variance.

        When ``text_variance`` is None it is estimated by the method of moments: within a group,
        the spread of arms' log-odds beyond their sampling variances.
        """
        shown = np.asarray(impressions, dtype=float)
        clicked = np.asarray(clicks, dtype=float)
        _, labels = np.unique(np.asarray(groups), return_inverse=True)
        n_groups = int(labels.max()) + 1 if len(labels) else 0
        rate = (clicked + 0.5) / (shown + 1.0)
        raw = np.log(rate / (1.0 - rate))
        variance = 1.0 / ((shown + 1.0) * rate * (1.0 - rate))
        if text_variance is None:
            size = np.bincount(labels, minlength=n_groups).astype(float)
            mean = _group_sums(raw, labels, n_groups) / size
            spread = _group_sums((raw - mean[labels]) ** 2, labels, n_groups)
            noise = _group_sums(variance, labels, n_groups) * (size - 1) / size
            several = size >= 2
            excess = (spread[several].sum() - noise[several].sum()) / max(
                (size[several] - 1).sum(), 1.0
            )
            text_variance = float(max(excess, MIN_TEXT_VARIANCE))
        weights = 1.0 / (variance + text_variance)
        weights = weights / weights.mean()
        group_weight = _group_sums(weights, labels, n_groups)
        centre = _group_sums(weights * raw, labels, n_groups) / group_weight
        return cls(
            y=raw - centre[labels],
            variance=variance,
            weights=weights,
            groups=labels,
            text_variance=float(text_variance),
        )

    def validation(self, predictions: np.ndarray, folds: int) -> dict[str, float]:
        """Honest figures for out-of-fold ``predictions``: weighted R² and pair accuracy.

        Pair accuracy is over pairs of arms of one group whose log-odds differ significantly
        (|z| > 1.96); ties count one half.
        """
        w = self.weights
        residual = float(np.sum(w * (self.y - predictions) ** 2))
        total = float(np.sum(w * self.y**2)) or 1.0
        correct = pairs = 0.0
        order = np.argsort(self.groups, kind="stable")
        bounds = np.flatnonzero(np.diff(self.groups[order])) + 1
        for members in np.split(order, bounds):
            if len(members) < 2:
                continue
            i, j = np.triu_indices(len(members), 1)
            a, b = members[i], members[j]
            z = (self.y[a] - self.y[b]) / np.sqrt(self.variance[a] + self.variance[b])
            keep = np.abs(z) > PAIR_Z
            agree = np.sign(predictions[a] - predictions[b])[keep] * np.sign(z[keep])
            correct += float(np.sum(agree > 0) + 0.5 * np.sum(agree == 0))
            pairs += float(keep.sum())
        return {
            "cv_folds": float(folds),
            "cv_weighted_r2": 1.0 - residual / total,
            "cv_pair_accuracy": correct / pairs if pairs else float("nan"),
            "cv_pairs": pairs,
        }


def group_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each row: whole groups dealt round-robin after a seeded shuffle."""
    unique, labels = np.unique(np.asarray(groups), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    return fold_of_group[labels]


def block_scaling(
    x: np.ndarray, weights: np.ndarray, *, per_column: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and scales: per column (features) or one for the block (vectors).

    One scale for an embedding block keeps its geometry (a direction with little variance stays
    small), which is what a ridge on embeddings wants.
    """
    w = weights / weights.sum()
    mean = w @ x
    variance = w @ (x - mean) ** 2
    if per_column:
        scale = np.sqrt(variance)
        scale[scale < 1e-12] = 1.0
    else:
        scale = np.full(x.shape[1], float(np.sqrt(variance.mean())) or 1.0)
    return mean, scale


def centre_within_groups(x: np.ndarray, arms: ArmData) -> np.ndarray:
    """``x`` minus its group's weighted mean row, so only within-group differences remain."""
    n_groups = int(arms.groups.max()) + 1
    group_weight = _group_sums(arms.weights, arms.groups, n_groups)
    centre = _group_sums(arms.weights[:, None] * x, arms.groups, n_groups) / group_weight[:, None]
    return x - centre[arms.groups]


def fit_ridge(x: np.ndarray, arms: ArmData, alpha: float) -> np.ndarray:
    """Coefficients minimising sum w (y - x b)^2 + alpha |b|^2."""
    xw = x * arms.weights[:, None]
    gram = x.T @ xw + alpha * np.eye(x.shape[1])
    return np.linalg.solve(gram, xw.T @ arms.y)


def choose_ridge(
    x: np.ndarray, arms: ArmData, folds: np.ndarray, alphas: tuple[float, ...]
) -> tuple[float, np.ndarray]:
    """The strength with the least held-out weighted squared error, and its out-of-fold
    predictions (every row predicted by a fit that did not see its group)."""
    predictions = np.zeros((len(alphas), len(arms.y)))
    for fold in np.unique(folds):
        train, held = folds != fold, folds == fold
        xw = x[train] * arms.weights[train, None]
        values, vectors = np.linalg.eigh(x[train].T @ xw)
        projected = vectors.T @ (xw.T @ arms.y[train])
        held_basis = x[held] @ vectors
        for k, alpha in enumerate(alphas):
            predictions[k, held] = held_basis @ (projected / (np.clip(values, 0, None) + alpha))
    errors = ((predictions - arms.y) ** 2) @ arms.weights
    best = int(np.argmin(errors))
    return float(alphas[best]), predictions[best]


def stack_weights(out_of_fold: dict[str, np.ndarray], arms: ArmData) -> dict[str, float]:
    """Non-negative weights of the blocks' out-of-fold predictions (weighted least squares)."""
    from scipy.optimize import nnls

    names = list(out_of_fold)
    root = np.sqrt(arms.weights)
    design = np.column_stack([out_of_fold[n] for n in names]) * root[:, None]
    solution, _ = nnls(design, arms.y * root)
    return {name: float(value) for name, value in zip(names, solution, strict=True)}
