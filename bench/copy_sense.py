"""Can a classifier on sentence embeddings see English nonsense made of real words?

A trial of a second fluency judge, independent of the generating model: logistic regression on
all-MiniLM-L6-v2 sentence vectors (:class:`adloop.generators.embeddings.SentenceEmbedder`).

* Trained on: fluent: the template generator's ads for the English briefs (six seeds) and the
  handwritten fluent ads of ``bench/copy_data/fluency_labels.jsonl``; not fluent: one corruption
  of each (words shuffled, or some swapped for words of other ads, or two ads spliced) and the
  labelled set's not-fluent English texts.
* Tested on: the reader's audit of the free-English default LM (``audit_labels.jsonl``: 80 ads
  the LM wrote, none of them in the training data), and how many of today's passing phrase-slot
  ads (``audit_labels_phrases.jsonl``, all fluent to the reader) it would reject.

Measured (seed 0): at threshold 0.5 it accepts 23 of 51 not-fluent audited ads and rejects 11 of
29 fluent ones, and would reject 34 of 79 fluent phrase-slot ads; at 0.7 it still accepts 7 of 51
while rejecting 24 of 29. No better than the lexicon judge, so it is not in the filters.
Run ``python -m bench.copy_sense``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from adloop.generators import TemplateGenerator, load_brief
from adloop.generators.embeddings import SentenceEmbedder

DATA = Path(__file__).resolve().parent / "copy_data"
ROOT = DATA.parent.parent
SEED = 0


def _rows(name: str, language: str = "en") -> list[dict]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, filter(str.strip, lines)) if r["language"] == language]


def _corrupt(text: str, pool: list[str], vocabulary: list[str], rng: random.Random) -> str:
    """Real words in an order or mix no writer chose."""
    words = text.split()
    roll = rng.random()
    if roll < 0.4:
        rng.shuffle(words)
    elif roll < 0.8:
        words = [rng.choice(vocabulary) if rng.random() < 0.4 else w for w in words]
    else:
        other = rng.choice(pool).split()
        words = words[: rng.randrange(1, len(words) + 1)] + other[rng.randrange(len(other)) :]
    return " ".join(words)


def _fit(x: np.ndarray, y: np.ndarray, steps: int = 3000, l2: float = 1e-3) -> np.ndarray:
    """Logistic regression weights (bias last) by gradient descent."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ w))
        w -= 0.5 * (xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0])
    return w


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.hstack([x, np.ones((len(x), 1))]) @ w))


def evaluate(thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)) -> dict:
    """Error of the embedding classifier on the audited free-English LM ads, per threshold."""
    rng = random.Random(SEED)
    paths = sorted((DATA / "briefs").glob("*_en.yaml")) + [ROOT / "examples/brief_jewelry_en.yaml"]
    fluent = [
        c.text
        for path in paths
        for seed in range(6)
        for c in TemplateGenerator().generate(load_brief(path), 20, seed=seed)
    ]
    labelled = _rows("fluency_labels.jsonl")
    fluent = list(dict.fromkeys(fluent + [r["text"] for r in labelled if r["fluent"]]))
    vocabulary = sorted({w for t in fluent for w in t.split() if w.isalpha()})
    broken = [_corrupt(t, fluent, vocabulary, rng) for t in fluent]
    broken += [r["text"] for r in labelled if not r["fluent"]]
    embedder = SentenceEmbedder()
    w = _fit(embedder.embed(fluent + broken), np.array([1.0] * len(fluent) + [0.0] * len(broken)))
    audit = _rows("audit_labels.jsonl")
    truth = np.array([r["fluent"] for r in audit])
    scores = _predict(w, embedder.embed([r["text"] for r in audit]))
    phrase_scores = _predict(
        w, embedder.embed([r["text"] for r in _rows("audit_labels_phrases.jsonl")])
    )
    figures = {}
    for threshold in thresholds:
        accepted = scores >= threshold
        figures[str(threshold)] = {
            "false_accepts": f"{int((accepted & ~truth).sum())}/{int((~truth).sum())}",
            "false_rejects": f"{int((~accepted & truth).sum())}/{int(truth.sum())}",
            "phrase_slot_ads_rejected": f"{int((phrase_scores < threshold).sum())}"
            f"/{len(phrase_scores)}",
        }
    return {"n_train": {"fluent": len(fluent), "not_fluent": len(broken)}, "audit": figures}


if __name__ == "__main__":
    print(json.dumps(evaluate(), indent=1))
