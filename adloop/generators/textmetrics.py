"""Measures of a batch of generated copy, independent of any model.

:func:`distinct_n` tells whether a model still writes varied copy: the promotion gate compares
it between model versions so that a round whose training collapsed the copy onto one line is
not promoted.

Example
-------
>>> distinct_n(["rings made to measure", "rings made to order"], 2)
0.6666666666666666
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from adloop.generators.brief import CJK_RUN

__all__ = ["distinct_n"]

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
