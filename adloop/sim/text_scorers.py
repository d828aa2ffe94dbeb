"""Text scorers for the replay's ``ts_text``: cross-fitted predictions per arm, by name.

A :data:`TextScorer` takes every arm of an archive (``texts, groups, impressions, clicks``,
``folds=``, ``seed=``) and returns one predicted log-odds offset per arm from a model never
trained on that arm's group (test). Two are known by name (:func:`load_text_scorer`):

``outcome``  :func:`adloop.generators.cross_fitted_predictions`, the outcome scorer (MiniLM and
             SmolLM2 embeddings, cached in the embedding cache; slow the first time).
``words``    :func:`cross_fitted_word_scores`, a plain word-feature ridge (no model, seconds):
             the stand-in, and a floor any learnt scorer should beat.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sparse

from adloop.sim.errors import ReplayError

__all__ = ["TEXT_SCORERS", "TextScorer", "cross_fitted_word_scores", "load_text_scorer"]

#: A cross-fitted copy scorer: ``(texts, groups, impressions, clicks, *, folds, seed)`` to one
#: predicted log-odds offset per arm, from a model never trained on that arm's group (test).
TextScorer = Callable[..., np.ndarray]
#: Text scorers the CLI knows by name (see :func:`load_text_scorer`).
TEXT_SCORERS: tuple[str, ...] = ("auto", "outcome", "words")


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _word_features(text: str) -> set[str]:
    lower = text.lower()
    found = {f"w:{word}" for word in _WORD.findall(lower)}
    for flag, present in (("digit", bool(re.search(r"[0-9]", text))),
                          ("question", "?" in text), ("exclamation", "!" in text)):  # fmt: skip
        if present:
            found.add(f"f:{flag}")
    return found


def cross_fitted_word_scores(
    texts: Sequence[str],
    groups: Sequence[object],
    impressions: Sequence[float],
    clicks: Sequence[float],
    *,
    folds: int = 5,
    seed: int = 0,
    ridge: float = 30.0,
) -> np.ndarray:
    """A plain word-feature :data:`TextScorer`: cross-fitted ridge on words, fast, no model.

    The stand-in for :func:`adloop.generators.cross_fitted_predictions` (same signature and
    meaning): groups are dealt into ``folds``; each fold's arms are predicted by a weighted ridge
    regression (strength ``ridge``) of within-group centred log-odds on words seen in three
    training texts or more, digit / question / exclamation flags and standardised length,
    fitted on the other folds only. Returns offsets centred within each group.
    """
    group_index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    n_groups = int(group_index.max()) + 1
    if folds < 2 or folds > n_groups:
        raise ReplayError(f"folds must be between 2 and the number of groups, got {folds}")
    fold_of = (np.random.default_rng(seed).permutation(n_groups) % folds)[group_index]
    shown = np.asarray(impressions, dtype=np.float64)
    clicked = np.asarray(clicks, dtype=np.float64)
    target = np.log((clicked + 0.5) / (shown - clicked + 0.5))
    weight = 1.0 / (1.0 / (clicked + 0.5) + 1.0 / (shown - clicked + 0.5) + 0.05)
    tokens = [_word_features(text) for text in texts]
    length = np.array([len(text) for text in texts], dtype=np.float64)
    length = (length - length.mean()) / (length.std() or 1.0)
    member = sparse.csr_matrix((np.ones(len(texts)), (np.arange(len(texts)), group_index)))

    def centred(matrix, w):  # subtract each group's w-weighted mean row
        means = sparse.diags(1.0 / (member.T @ w)) @ (member.T @ sparse.diags(w) @ matrix)
        return matrix - member @ means

    out = np.zeros(len(texts))
    for fold in range(folds):
        train = fold_of != fold
        seen: dict[str, int] = {}
        for index in np.flatnonzero(train):
            for token in tokens[index]:
                seen[token] = seen.get(token, 0) + 1
        vocab = {token: j for j, token in enumerate(t for t, n in seen.items() if n >= 3)}
        pairs = [(i, vocab[t]) for i, found in enumerate(tokens) for t in found if t in vocab]
        rows, cols = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
        words = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(vocab))
        )
        x = sparse.hstack([words, sparse.csr_matrix(np.c_[length, length**2])]).tocsr()
        w = np.where(train, weight, 1.0)  # held-out groups' weights only centre their features
        xc = centred(x, w)[train]
        yc = centred(sparse.csr_matrix(target[:, None]), w)[train].toarray()[:, 0]
        gram = (xc.T @ sparse.diags(weight[train]) @ xc).toarray()
        coef = np.linalg.solve(gram + ridge * np.eye(x.shape[1]), xc.T @ (weight[train] * yc))
        held = ~train
        predicted = x[held] @ coef
        means = np.bincount(group_index[held], predicted, n_groups) / np.maximum(
            np.bincount(group_index[held], None, n_groups), 1
        )
        out[held] = predicted - means[group_index[held]]
    return out


def load_text_scorer(name: str = "auto") -> tuple[str, TextScorer]:
    """The text scorer called ``name`` (one of :data:`TEXT_SCORERS`) and its resolved name.

    ``outcome`` is :func:`adloop.generators.cross_fitted_predictions` (MiniLM and SmolLM2
    embeddings, cached under the embedding cache); ``words`` is :func:`cross_fitted_word_scores`
    (no model); ``auto`` is ``outcome`` when it can be imported, else ``words``.

    Raises
    ------
    ReplayError
        For an unknown name, or ``outcome`` when the outcome scorer cannot be imported.
    """
    if name not in TEXT_SCORERS:
        raise ReplayError(f"unknown text scorer {name!r}; choose from {', '.join(TEXT_SCORERS)}")
    if name == "words":
        return "words", cross_fitted_word_scores
    try:
        from adloop.generators.embeddings import default_embedding_cache
        from adloop.generators.outcome_scorer import cross_fitted_predictions
    except ImportError as error:
        if name == "auto":
            return "words", cross_fitted_word_scores
        raise ReplayError(
            f"the outcome text scorer is not available ({error}); use --text-scorer words for "
            f"the word-feature stand-in"
        ) from error

    def outcome(*args: object, **kwargs: object) -> np.ndarray:
        return cross_fitted_predictions(*args, cache_dir=default_embedding_cache(), **kwargs)

    return "outcome", outcome
