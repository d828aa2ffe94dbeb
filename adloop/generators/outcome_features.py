"""Interpretable copy features for the outcome scorer: length, numbers, questions, "you"...

Each feature is a number a copywriter can read (a count or a 0/1 flag), so the scorer's
coefficients on them are statements such as "a question mark is worth +0.04 log-odds". They are
written for English; other languages get the language-neutral ones (length, digits, punctuation).

Example
-------
>>> text_features(["Why You Need 3 Of These!"])[0][FEATURE_NAMES.index("question")]
0.0
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["FEATURE_NAMES", "text_features"]

#: Column names of :func:`text_features`, in order.
FEATURE_NAMES = (
    "characters / 10",
    "words",
    "mean word length",
    "has a number",
    "starts with a number",
    "question",
    "exclamation",
    "addresses the reader (you)",
    "first person (I, we)",
    "quotation",
    "superlative",
    "this / these / here",
    "wh-word (why, how, what...)",
    "negation",
    "colon or dash",
    "word in capitals",
    "ellipsis",
    "share of capitalised words",
)

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\W\d_]+", re.UNICODE)
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|hundred|thousand|million"
)
_NUMBER = re.compile(rf"[0-9０-９]|\b(?:{_NUMBER_WORDS})\b", re.IGNORECASE)
_LEADING_NUMBER = re.compile(rf"^\W*(?:[0-9]+|{_NUMBER_WORDS})\b", re.IGNORECASE)
_YOU = frozenset(("you", "your", "you're", "yours", "yourself", "you'll", "you've", "you'd"))
_FIRST = frozenset(("i", "me", "my", "mine", "we", "us", "our", "ours", "i'm", "i've", "we're"))
_SUPERLATIVE = frozenset(
    ("best", "worst", "most", "least", "ever", "greatest", "biggest", "smallest", "first",
     "only", "perfect", "amazing", "incredible", "ultimate", "never", "always", "everyone")
)  # fmt: skip
_POINTER = frozenset(("this", "these", "here", "here's"))
_WH = frozenset(("why", "how", "what", "who", "when", "where", "which"))
_NEGATION = frozenset(
    ("not", "no", "never", "nothing", "nobody", "none", "can't", "don't", "won't", "isn't")
)
_QUOTE = re.compile(r"[\"“”«»「」]|(?:^|\s)'[^']+'")


def _row(text: str) -> list[float]:
    stripped = text.strip()
    words = _WORD.findall(stripped)
    lower = [w.lower() for w in words]
    alphabetic = [w for w in words if w[:1].isalpha()]
    capitalised = sum(1 for w in alphabetic if w[:1].isupper())
    return [
        len(stripped) / 10.0,
        float(len(words)),
        float(np.mean([len(w) for w in words])) if words else 0.0,
        float(bool(_NUMBER.search(stripped))),
        float(bool(_LEADING_NUMBER.search(stripped))),
        float("?" in stripped or "？" in stripped),
        float("!" in stripped or "！" in stripped),
        float(any(w in _YOU for w in lower)),
        float(any(w in _FIRST for w in lower)),
        float(bool(_QUOTE.search(stripped))),
        float(any(w in _SUPERLATIVE for w in lower)),
        float(any(w in _POINTER for w in lower)),
        float(any(w in _WH for w in lower)),
        float(any(w in _NEGATION or w.endswith("n't") for w in lower)),
        float(":" in stripped or " - " in stripped or "—" in stripped or "–" in stripped),
        float(any(len(w) >= 3 and w.isupper() and w.isalpha() for w in words)),
        float("..." in stripped or "…" in stripped),
        capitalised / len(alphabetic) if alphabetic else 0.0,
    ]


def text_features(texts: Sequence[str]) -> np.ndarray:
    """One row of :data:`FEATURE_NAMES` values per text (float64)."""
    rows = [_row(text) for text in texts]
    return np.array(rows, dtype=float).reshape(len(rows), len(FEATURE_NAMES))
