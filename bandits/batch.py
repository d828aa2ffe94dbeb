"""Vectorized Thompson weights for many independent bandits at once (fast simulation).

A policy-only simulator running ``n_sims`` campaigns side by side keeps Beta parameters as
``(n_sims, K)`` arrays and, at each batched update, asks for all the traffic weights in one call::

    alpha = 1 + clicks                       # (n_sims, K)
    beta = 1 + impressions - clicks
    weights = batch_thompson_weights(alpha, beta, n_draws=128, rng=rng)   # (n_sims, K)
    shown = rng.multinomial(batch_size, weights)                          # (n_sims, K)

Cost is ``n_sims * n_draws * K`` posterior draws per update; with ``approximation="auto"`` arms
whose ``alpha`` and ``beta`` both exceed ``normal_above`` are drawn from the moment-matched
normal in float32 (about 4x cheaper than a Beta draw and indistinguishable at that size), the
rest exactly.  Measured on a shared 2-core machine: 1,000 simulations x 10 arms, batches of 1,000
impressions, ``n_draws=64`` run a whole policy-only simulation step (weights, multinomial
allocation, binomial clicks) at roughly 10-20 M impressions/s; the weights are ~90 % of it, so
``n_draws`` is the knob (its resolution, ``1 / n_draws``, is the price).
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidConfigError

__all__ = ["batch_thompson_weights"]


def batch_thompson_weights(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    rng: np.random.Generator | int | None = None,
    n_draws: int = 128,
    floor: float = 0.0,
    active: np.ndarray | None = None,
    approximation: str = "auto",
    normal_above: float = 30.0,
    max_elements: int = 8_000_000,
) -> np.ndarray:
    """Probability-best traffic weights for a batch of independent Beta-Bernoulli bandits.

    Parameters
    ----------
    alpha, beta:
        Beta posterior parameters, shape ``(n_sims, K)`` (a 1-d ``(K,)`` is one bandit).
    n_draws:
        Monte Carlo draws per bandit; weights have resolution ``1 / n_draws``.
    floor:
        Minimum share of every active arm (capped at ``1 / n_active`` per row).
    active:
        Optional boolean mask, same shape; inactive arms get exactly zero weight.
    approximation:
        ``"auto"`` (normal draws for large parameters), ``"exact"`` (always Beta draws).
    max_elements:
        Draw in chunks of simulations so at most this many floats are alive at once.

    Returns
    -------
    ``(n_sims, K)`` weights, each row summing to 1.

    Example
    -------
    >>> weights = batch_thompson_weights(np.array([[1.0, 50.0]]), np.array([[1.0, 950.0]]), rng=0)
    >>> weights.shape, float(weights.sum())
    ((1, 2), 1.0)
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    single = alpha.ndim == 1
    alpha, beta = np.atleast_2d(alpha), np.atleast_2d(beta)
    if alpha.shape != beta.shape or alpha.ndim != 2:
        raise InvalidConfigError(
            f"alpha {alpha.shape} and beta {beta.shape} must share a 2-d shape"
        )
    if not (np.all(alpha > 0) and np.all(beta > 0)):
        raise InvalidConfigError("alpha and beta must be > 0 everywhere")
    if approximation not in ("auto", "exact"):
        raise InvalidConfigError(f"approximation must be 'auto' or 'exact', got {approximation!r}")
    if not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise InvalidConfigError(f"n_draws must be a positive integer, got {n_draws!r}")
    if not 0 <= floor <= 1:
        raise InvalidConfigError(f"floor must be in [0, 1], got {floor!r}")
    n_sims, n_arms = alpha.shape
    mask = np.ones_like(alpha, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    if mask.shape != alpha.shape:
        raise InvalidConfigError(f"active has shape {mask.shape}, expected {alpha.shape}")
    if not mask.any(axis=1).all():
        raise InvalidConfigError("every simulation needs at least one active arm")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    counts = np.empty((n_sims, n_arms))
    chunk = max(1, int(max_elements // (n_draws * n_arms)))
    for start in range(0, n_sims, chunk):
        stop = min(start + chunk, n_sims)
        a, b, m = alpha[start:stop], beta[start:stop], mask[start:stop]
        rows = stop - start
        if approximation == "auto":
            total = a + b
            mean = a / total
            sd = np.sqrt(a * b / (total * total * (total + 1.0)))
            # float32 normals are ~30 % cheaper; a 1e-7 relative error cannot flip an argmax
            # that matters at these sizes.
            draws = generator.standard_normal((rows, n_draws, n_arms), dtype=np.float32)
            draws *= sd[:, None, :].astype(np.float32)
            draws += mean[:, None, :].astype(np.float32)
            small = (a < normal_above) | (b < normal_above)
            if small.any():
                sim_index, arm_index = np.nonzero(small)
                exact = generator.beta(
                    a[small][:, None], b[small][:, None], size=(len(sim_index), n_draws)
                )
                draws[sim_index, :, arm_index] = exact
        else:
            draws = generator.beta(a[:, None, :], b[:, None, :], size=(rows, n_draws, n_arms))
        if not m.all():
            draws[np.broadcast_to(~m[:, None, :], draws.shape)] = -np.inf
        best = draws.argmax(axis=2) + (np.arange(rows) * n_arms)[:, None]
        counts[start:stop] = np.bincount(best.ravel(), minlength=rows * n_arms).reshape(
            rows, n_arms
        )
    weights = counts / n_draws
    if floor > 0:
        n_active = mask.sum(axis=1, keepdims=True)
        effective = np.minimum(floor, 1.0 / n_active)
        weights = np.where(mask, effective + (1.0 - n_active * effective) * weights, 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
    return weights[0] if single else weights
