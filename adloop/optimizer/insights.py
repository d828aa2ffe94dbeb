"""Creative insights: which elements of the copy go with a higher CTR in one campaign.

An element is something a copywriter can choose: a word, a number, a question, an
exclamation, addressing the reader, the brief's offer or call to action, longer copy. For
each element that some variants have and others lack, the campaign's variants are split in
two, and the CTR of each side is pooled over its impressions (clicks / impressions).

The intervals come from a bootstrap that resamples **variants**, not impressions, and draws
each variant's CTR from its Beta posterior: two variants can differ in CTR for reasons
other than the element, so the uncertainty of "with" against "without" is mostly how few
variants there are, and a finding from three variants shows a wide interval. These are
associations inside one campaign, not causes; the reading says so when an interval
includes no difference. Draws are seeded from the counts, so a page polled while no data
arrives reads the same.

Example::

    rows = creative_insights(variants, brief)
    rows[0]  # {'element': 'a number', 'lift': [0.21, 0.05, 0.39], 'reading': 'higher', ...}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["creative_insights", "seed_from"]

#: Bootstrap resamples; the quantiles of 2,000 are good to a few tenths of a percent.
N_DRAWS = 2000
#: Fewest variants with data on each side of an element for it to be shown.
MIN_SIDE = 2
#: Most elements shown, clear ones first.
MAX_ROWS = 12
#: Most words tried (the most common among the variants).
MAX_WORDS = 30

_NUMBER = re.compile(
    r"[0-9０-９]|[一二三四五六七八九十百千万两]+[个款种天年次折元倍]|\b(?:one|two|three|four|five|"
    r"six|seven|eight|nine|ten|twelve|hundred|thousand|million)\b",
    re.IGNORECASE,
)
_QUESTION = re.compile(r"[?？]|吗[。.]?\s*$")
_YOU = re.compile(r"\b(?:you|your|yours|you're|you'll)\b|[你您]", re.IGNORECASE)


def seed_from(*parts: Any) -> int:
    """A seed that changes when (and only when) the data it is drawn from changes."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@lru_cache(maxsize=4096)
def _words(text: str, language: str) -> frozenset[str]:
    from adloop.generators.fluency import content_words

    return frozenset(content_words(text, language))


def _mentions(phrase: str, language: str) -> Callable[[str], bool] | None:
    """A test that a text carries ``phrase`` (whole, or most of its content words)."""
    phrase = phrase.strip()
    if not phrase:
        return None
    wanted = _words(phrase, language)

    def test(text: str) -> bool:
        if phrase.lower() in text.lower():
            return True
        return bool(wanted) and len(wanted & _words(text, language)) * 2 > len(wanted)

    return test


def _elements(
    texts: Sequence[str], brief: Mapping[str, Any], language: str
) -> list[tuple[str, str, np.ndarray]]:
    """(kind, element in words, which texts have it) for every element worth testing."""
    tests: list[tuple[str, str, Callable[[str], bool]]] = [
        ("number", "a number", lambda t: bool(_NUMBER.search(t))),
        ("question", "a question", lambda t: bool(_QUESTION.search(t))),
        ("exclamation", "an exclamation", lambda t: "!" in t or "！" in t),
        ("reader", "speaks to the reader (you)", lambda t: bool(_YOU.search(t))),
    ]
    for kind, field in (("offer", "offer"), ("call_to_action", "call to action")):
        test = _mentions(str(brief.get(kind) or ""), language)
        if test is not None:
            tests.append((kind, f"the {field} ({brief[kind]})", test))
    lengths = np.array([len(t) for t in texts])
    middle = float(np.median(lengths)) if len(lengths) else 0.0
    elements = [(kind, words, np.array([test(t) for t in texts])) for kind, words, test in tests]
    elements.append(("length", f"longer than {middle:.0f} characters", lengths > middle))
    brand = {w for w in _words(str(brief.get("brand") or ""), language)}
    counts: dict[str, int] = {}
    per_text = [_words(t, language) for t in texts]
    for words in per_text:
        for w in words - brand:
            counts[w] = counts.get(w, 0) + 1
    common = sorted((w for w, n in counts.items() if n >= MIN_SIDE), key=lambda w: (-counts[w], w))
    for word in common[:MAX_WORDS]:
        elements.append(("word", f"the word “{word}”", np.array([word in ws for ws in per_text])))
    return elements


def creative_insights(
    variants: Sequence[Mapping[str, Any]], brief: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Elements that split the campaign's variants, each with CTR with and without it.

    ``variants`` are the API's variant views (``text``, ``impressions``, ``clicks``); those
    without impressions are left out. Each row: ``kind``, ``element`` (in words),
    ``variants_with`` / ``variants_without``, ``with`` / ``without`` (pooled CTR and its 95 %
    interval), ``lift`` (CTR with over CTR without, minus one, and its interval) and
    ``reading``: ``higher``, ``lower`` or ``unclear`` (the lift's interval includes zero).
    Clear findings come first, then the largest lifts; at most :data:`MAX_ROWS`.
    """
    brief = brief or {}
    language = str(brief.get("language") or "en")
    shown = [v for v in variants if int(v.get("impressions") or 0) > 0 and v.get("text")]
    if len(shown) < 2 * MIN_SIDE:
        return []
    texts = [str(v["text"]) for v in shown]
    n = np.array([float(v["impressions"]) for v in shown])
    c = np.minimum(np.array([float(v.get("clicks") or 0) for v in shown]), n)
    rng = np.random.default_rng(seed_from(texts, n.tolist(), c.tolist()))
    # one set of draws for every element, so rows are comparable: variant resamples x CTRs
    picks = rng.multinomial(len(shown), np.full(len(shown), 1 / len(shown)), size=N_DRAWS)
    clicks = picks * n * rng.beta(1 + c, 1 + n - c, size=(N_DRAWS, len(shown)))
    weight = picks * n
    rows = []
    seen: set[bytes] = set()  # a word that splits the variants as the offer does says nothing new
    for kind, element, has in _elements(texts, brief, language):
        if has.sum() < MIN_SIDE or (~has).sum() < MIN_SIDE or has.tobytes() in seen:
            continue
        seen.add(has.tobytes())
        with np.errstate(invalid="ignore", divide="ignore"):
            with_ = clicks[:, has].sum(1) / weight[:, has].sum(1)
            without = clicks[:, ~has].sum(1) / weight[:, ~has].sum(1)
            lift = with_ / without - 1
        point_with = c[has].sum() / n[has].sum()
        point_without = c[~has].sum() / n[~has].sum()
        point_lift = point_with / point_without - 1 if point_without > 0 else float("nan")
        low, high = (float(q) for q in np.nanquantile(lift, [0.025, 0.975]))
        reading = "higher" if low > 0 else "lower" if high < 0 else "unclear"
        rows.append({
            "kind": kind, "element": element,
            "variants_with": int(has.sum()), "variants_without": int((~has).sum()),
            "with": [float(point_with), *(float(q) for q in np.nanquantile(with_, [0.025, 0.975]))],
            "without": [float(point_without),
                        *(float(q) for q in np.nanquantile(without, [0.025, 0.975]))],
            "lift": [float(point_lift), low, high],
            "reading": reading,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["reading"] == "unclear", -abs(np.nan_to_num(r["lift"][0]))))
    return rows[:MAX_ROWS]
