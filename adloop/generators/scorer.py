"""A copy scorer learnt from market results, to rank new candidates before they are served.

A retraining round fits one on the store's variants (their text, impressions and clicks or
conversions) and saves it as ``scorer.json`` in the new model version's directory, so a
promoted version brings its scorer with it and a rollback restores both. The LM generator
then samples ``oversample`` times more candidates than asked for and keeps ones the scorer
ranks high and that differ from each other (:meth:`CopyScorer.select`), so what the market
rewarded shapes the copy at once, while the candidates still come from the model's own samples.

The model is a weighted ridge regression of each variant's empirical log-odds on features any
ad text has: its words (CJK character pairs for Chinese; English function words left out, and
only words that occur in two variants or more), whether it has a digit, a question
or an exclamation mark, and its length (linear and squared, standardised). Each campaign is
centred on its own mean, so campaigns with different base rates can be pooled and the scorer
only ranks. Weights are the inverse of the sampling variance plus a text-level variance
(``TEXT_VARIANCE``): a variant with a million impressions is not worth a thousand with ten
thousand. The ridge strength is picked by leave-one-out error (closed form), and the
leave-one-out rank correlation is kept as the scorer's honest validation figure.

Example
-------
>>> scorer = fit_scorer(["Bespoke rings", "Cheap stuff here", "Bespoke gold"],
...                     trials=[1000, 1000, 1000], successes=[30, 10, 25])
>>> scorer.rank(["Bespoke bands", "Cheap stuff"])
[0, 1]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adloop.generators.brief import CJK_RUN
from adloop.generators.errors import ConfigError

__all__ = [
    "SCORER_FILE",
    "TEXT_VARIANCE",
    "CopyScorer",
    "fit_scorer",
    "load_scorer",
    "out_of_sample_spearman",
    "text_digest",
]

SCORER_FILE = "scorer.json"
#: Score (in standard deviations) a candidate loses per unit of the share of its character
#: trigrams that the picks before it in its window already hold (see :meth:`CopyScorer.select`).
#: On simulated dog-food copy, 8 kept a pool's distinct-trigram share near 0.53, 12 near 0.55
#: for about a point less of true CTR; a floor on the share instead (pick the best text that
#: keeps it) cost a third of the gain for the same variety.
DEFAULT_REDUNDANCY_PENALTY = 12.0
#: Picks a window holds: the number of ads a pool shows side by side.
DEFAULT_GROUP = 6
#: How the selection measures redundancy; saved with the scorer. A file with another measure
#: (an older one, whose penalty is on another scale) loads with the defaults above.
REDUNDANCY = "repeated-char-trigrams-in-window"
#: Variance of the log-odds between texts that no feature explains; bounds any variant's weight.
TEXT_VARIANCE = 0.05
_ALPHAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
#: English function words: with a dozen variants, "the" in two losers is a pattern to a
#: regression but says nothing about the copy.
STOP_WORDS = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "its",
     "of", "on", "or", "our", "s", "that", "the", "this", "to", "with", "you", "your")
)  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _tokens(text: str) -> set[str]:
    """Words, CJK character pairs and punctuation flags of one text."""
    lower = text.lower()
    tokens = {f"w:{w}" for w in _WORD.findall(lower) if w not in STOP_WORDS}
    for run in CJK_RUN.findall(text):
        tokens.update(f"c:{run[i : i + 2]}" for i in range(max(len(run) - 1, 1)))
    if re.search(r"[0-9０-９%％]", text):
        tokens.add("f:digit")
    if "?" in text or "？" in text:
        tokens.add("f:question")
    if "!" in text or "！" in text:
        tokens.add("f:exclamation")
    return tokens


def _repeated_share(grams: list[str], before: set[str]) -> float:
    """Share of ``grams`` that a reader has seen already: in ``before`` or earlier in the list."""
    seen = set(before)
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams) if grams else 0.0


def _trigram_list(text: str) -> list[str]:
    """Character trigrams of ``text`` as written, repeats kept (what a reader sees twice)."""
    return [text[i : i + 3] for i in range(max(0, len(text) - 2))]


@dataclass(frozen=True)
class CopyScorer:
    """Predicted log-odds (up to a per-campaign constant) of an ad text; higher is better."""

    weights: dict[str, float]
    length_coef: tuple[float, float]
    length_mean: float
    length_sd: float
    oversample: int = 4
    redundancy_penalty: float = DEFAULT_REDUNDANCY_PENALTY
    group: int = DEFAULT_GROUP
    metrics: dict[str, float] = field(default_factory=dict)
    fitted: frozenset[str] = frozenset()
    """Digests (:func:`text_digest`) of the texts it was fitted on: any other text's result
    tests it out of sample (:func:`out_of_sample_spearman`)."""

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """One score per text (comparable within one brief)."""
        out = np.empty(len(texts))
        for i, text in enumerate(texts):
            z = (len(text.strip()) - self.length_mean) / self.length_sd
            value = self.length_coef[0] * z + self.length_coef[1] * z * z
            out[i] = value + sum(self.weights.get(t, 0.0) for t in _tokens(text))
        return out

    def phrase_scores(self, phrases: Sequence[str]) -> np.ndarray:
        """What each phrase adds to any ad holding it: its words' weights, no length term."""
        return np.array([sum(self.weights.get(t, 0.0) for t in _tokens(p)) for p in phrases])

    def rank(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts``, best first (ties keep their order)."""
        scores = self.score(texts)
        return sorted(range(len(texts)), key=lambda i: -scores[i])

    def select(self, texts: Sequence[str], n: int, *, eligible: Sequence[bool] = ()) -> list[int]:
        """Indices of ``n`` distinct texts that score well and differ from each other.

        Greedy: each pick maximises its standardised score minus ``redundancy_penalty`` x the
        share of its character trigrams that the ``group`` - 1 picks before it already hold
        (a pool's worth of ads side by side). The window slides, so any ``group`` consecutive
        picks are varied however a caller slices them (a pool that drops one for its filters
        shifts every later slice). Best-of-n by score alone gathers near-copies of one
        winning pattern, and the served pool loses its variety. ``eligible`` (optional, one
        flag per text) puts the ineligible after all eligible ones.
        """
        scores = self.score(texts)
        z = (scores - scores.mean()) / (scores.std() or 1.0)
        flags = list(eligible) if len(eligible) else [True] * len(texts)
        grams = [_trigram_list(text) for text in texts]
        chosen: list[int] = []
        seen: set[str] = set()
        remaining = list(range(len(texts)))
        while remaining and len(chosen) < n:
            window = chosen[max(0, len(chosen) - self.group + 1) :]
            held = {gram for j in window for gram in grams[j]}
            merits = [
                (flags[i], z[i] - self.redundancy_penalty * _repeated_share(grams[i], held), -i)
                for i in remaining
            ]
            best = remaining.pop(max(range(len(remaining)), key=merits.__getitem__))
            if texts[best] in seen:
                continue
            seen.add(texts[best])
            chosen.append(best)
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "ridge-logodds",
            "oversample": self.oversample,
            "redundancy": REDUNDANCY,
            "redundancy_penalty": self.redundancy_penalty,
            "group": self.group,
            "length": {"coef": list(self.length_coef), "mean": self.length_mean,
                       "sd": self.length_sd},
            "metrics": self.metrics,
            "weights": dict(sorted(self.weights.items(), key=lambda kv: -abs(kv[1]))),
            "fitted": sorted(self.fitted),
        }  # fmt: skip

    def save(self, directory: str | Path) -> Path:
        """Write ``scorer.json`` into ``directory``; returns its path."""
        path = Path(directory) / SCORER_FILE
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")
        return path


def load_scorer(directory: str | Path) -> CopyScorer | None:
    """The scorer saved in a model directory, or None when it has none."""
    path = Path(directory) / SCORER_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    length = data["length"]
    same = data.get("redundancy") == REDUNDANCY
    return CopyScorer(
        weights={k: float(v) for k, v in data["weights"].items()},
        length_coef=(float(length["coef"][0]), float(length["coef"][1])),
        length_mean=float(length["mean"]),
        length_sd=float(length["sd"]),
        oversample=int(data.get("oversample", 4)),
        redundancy_penalty=(
            float(data["redundancy_penalty"]) if same else DEFAULT_REDUNDANCY_PENALTY
        ),
        group=int(data["group"]) if same else DEFAULT_GROUP,
        metrics=dict(data.get("metrics", {})),
        fitted=frozenset(data.get("fitted", ())),
    )


def text_digest(text: str) -> str:
    """A short digest of one text, as a scorer records what it was fitted on."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _log_odds(trials: np.ndarray, successes: np.ndarray) -> np.ndarray:
    """Observed log-odds of each variant, with half a success and half a failure added."""
    return np.log((successes + 0.5) / (trials - successes + 0.5))


def _group_rows(groups: Sequence[str]) -> list[np.ndarray]:
    """The row indices of each campaign (``groups``: the campaign of each variant)."""
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(groups):
        rows.setdefault(name, []).append(i)
    return [np.array(r) for r in rows.values()]


def out_of_sample_spearman(
    scorer: CopyScorer,
    texts: Sequence[str],
    trials: Sequence[float],
    successes: Sequence[float],
    groups: Sequence[str] | None = None,
) -> tuple[int, float]:
    """How many of ``texts`` ``scorer`` was not fitted on, and its rank correlation with their
    observed log-odds (within each campaign, ``groups``): a test on data it never saw."""
    groups = list(groups) if groups is not None else ["*"] * len(texts)
    new = [i for i, text in enumerate(texts) if text_digest(text) not in scorer.fitted]
    if not new:
        return 0, 0.0
    y = _log_odds(np.asarray(trials, dtype=float)[new], np.asarray(successes, dtype=float)[new])
    for rows in _group_rows([groups[i] for i in new]):
        y[rows] -= y[rows].mean()  # only ranking within a campaign counts
    return len(new), _spearman(scorer.score([texts[i] for i in new]), y)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def fit_scorer(
    texts: Sequence[str],
    trials: Sequence[float],
    successes: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    oversample: int = 4,
) -> CopyScorer:
    """Fit a :class:`CopyScorer` on variants' results (``groups``: campaign of each variant).

    Raises :class:`~adloop.generators.errors.ConfigError` (a ``ValueError``) on fewer than
    three variants, mismatched lengths, or successes outside ``[0, trials]``.
    """
    n = len(texts)
    groups = list(groups) if groups is not None else ["*"] * n
    if not (len(trials) == len(successes) == len(groups) == n):
        raise ConfigError(
            "fit_scorer: texts, trials, successes and groups differ in length; pass one of each "
            "per variant"
        )
    if n < 3:
        raise ConfigError(f"fit_scorer needs at least 3 variants, got {n}; test more variants")
    if oversample < 1:
        raise ConfigError(f"fit_scorer: oversample must be >= 1, got {oversample!r}")
    t = np.asarray(trials, dtype=float)
    s = np.asarray(successes, dtype=float)
    if np.any(t <= 0) or np.any(s < 0) or np.any(s > t):
        raise ConfigError(
            "fit_scorer: every variant needs trials > 0 and 0 <= successes <= trials; "
            "leave out variants without impressions"
        )
    y = _log_odds(t, s)
    p = (s + 0.5) / (t + 1.0)
    w = 1.0 / (1.0 / (t * p * (1.0 - p)) + TEXT_VARIANCE)

    token_sets = [_tokens(text) for text in texts]
    counts: dict[str, int] = {}
    for tokens in token_sets:
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    vocab = sorted(tok for tok, c in counts.items() if c >= 2)  # a word seen once fits noise
    index = {tok: i for i, tok in enumerate(vocab)}
    lengths = np.array([len(text.strip()) for text in texts], dtype=float)
    length_mean, length_sd = float(lengths.mean()), float(lengths.std() or 1.0)
    z = (lengths - length_mean) / length_sd
    x = np.zeros((n, len(vocab) + 2))
    for row, tokens in enumerate(token_sets):
        for token in tokens:
            if token in index:
                x[row, index[token]] = 1.0
    x[:, -2], x[:, -1] = z, z * z

    # Centre features and target within each campaign (weighted), so only ranking is learnt.
    xc, yc = x.copy(), y.copy()
    for rows in _group_rows(groups):
        gw = w[rows] / w[rows].sum()
        xc[rows] -= gw @ x[rows]
        yc[rows] -= gw @ y[rows]
    sw = np.sqrt(w)
    xt, yt = xc * sw[:, None], yc * sw
    kernel = xt @ xt.T
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in _ALPHAS:
        inverse = np.linalg.inv(kernel + alpha * np.eye(n))
        hat = kernel @ inverse
        residual = (yt - hat @ yt) / np.clip(1.0 - np.diag(hat), 1e-9, None)
        loo_pred = yc - residual / sw
        error = float(np.mean(residual**2))
        if best is None or error < best[0]:
            best = (error, alpha, loo_pred)
    assert best is not None
    _, alpha, loo_pred = best
    beta = xt.T @ np.linalg.solve(kernel + alpha * np.eye(n), yt)
    metrics = {
        "variants": float(n),
        "features": float(len(vocab) + 2),
        "alpha": alpha,
        "loo_spearman": _spearman(loo_pred, yc),
    }
    return CopyScorer(
        weights={tok: float(beta[i]) for tok, i in index.items() if beta[i] != 0.0},
        length_coef=(float(beta[-2]), float(beta[-1])),
        length_mean=length_mean,
        length_sd=length_sd,
        oversample=oversample,
        metrics=metrics,
        fitted=frozenset(text_digest(text) for text in texts),
    )
