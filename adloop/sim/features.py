"""Interpretable text features that the simulated audience reacts to.

The hidden scorer of :class:`adloop.sim.World` is a logistic model over these features, so every
effect in a simulation can be explained in words ("this segment clicks more on ads with a
number in them"). Features are deliberately simple and work for English and Chinese.

Feature names (all numeric):

``chars``              length in characters (a CJK character counts as one)
``length_deviation``   ``|chars / ideal - 1|`` with ideal 40 characters (English) or 16 (Chinese)
``has_number``         1 when the text contains a digit (``0-9``) or a percent sign
``question``           1 when the text contains ``?`` or ``？``
``exclamation``        1 when the text contains ``!`` or ``！``
``cta``                call-to-action verbs present (``shop``, ``discover``, ``立即`` ...)
``urgency``            urgency words present (``today``, ``limited``, ``限时`` ...)
``zh``                 1 when the text is mostly Chinese (see :func:`language_of`), else 0
``kw_<category>``      words of each keyword category of the lexicon present (``kw_luxury`` ...)

The word features count *distinct* words of their list, at most :data:`KEYWORD_CAP` (2): a
second, different luxury word adds a little, a repeated one nothing. A real audience does not
click twice as often on "bespoke bespoke"; an audience that paid per repetition would teach a
learning generator to stuff keywords.

The lexicon is configurable; :data:`DEFAULT_LEXICON` covers the high-end jewellery campaign
of the examples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

__all__ = [
    "CTA_WORDS",
    "DEFAULT_LEXICON",
    "KEYWORD_CAP",
    "URGENCY_WORDS",
    "feature_names",
    "features",
    "language_of",
]

CTA_WORDS: tuple[str, ...] = (
    # English call-to-action verbs
    "shop", "buy", "discover", "explore", "book", "order", "get", "try", "find", "save",
    "join", "learn", "claim", "reserve", "design", "create", "see", "visit", "start",
    # Chinese
    "立即", "购买", "选购", "抢购", "探索", "预约", "了解", "马上", "发现", "领取", "查看",
)  # fmt: skip

URGENCY_WORDS: tuple[str, ...] = (
    "now", "today", "tonight", "limited", "last chance", "hurry", "ends", "only", "final",
    "this week", "while stocks last",
    "限时", "今天", "今日", "仅剩", "最后", "限量", "截止", "即将结束", "速抢",
)  # fmt: skip

DEFAULT_LEXICON: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "luxury": ("luxury", "luxurious", "elegant", "exquisite", "fine", "premium", "timeless",
                   "奢华", "高端", "精致", "典雅", "臻品", "奢侈"),
        "fashion": ("fashion", "style", "stylish", "trend", "trending", "chic", "modern",
                    "时尚", "潮流", "风格", "新款", "摩登"),
        "custom": ("bespoke", "made-to-measure", "made to measure", "custom", "personalised",
                   "personalized", "tailored", "engraved", "定制", "专属", "量身", "私人订制"),
        "offer": ("free", "% off", "discount", "sale", "gift", "offer", "complimentary",
                  "免费", "折", "优惠", "礼遇", "赠"),
        "trust": ("certified", "guarantee", "guaranteed", "authentic", "handcrafted", "crafted",
                  "ethical", "认证", "保证", "正品", "手工", "匠心"),
    }
)  # fmt: skip

KEYWORD_CAP = 2
"""Most distinct words of one list (call to action, urgency, a keyword category) that count."""

_IDEAL_CHARS = {"en": 40.0, "zh": 16.0}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_NUMBER = re.compile(r"[0-9０-９%％]")
_WORD_BOUNDARY_CACHE: dict[str, re.Pattern[str]] = {}


def _present(text_lower: str, phrases: Sequence[str]) -> int:
    """Distinct phrases found, at most :data:`KEYWORD_CAP`.

    ASCII phrases match whole words; CJK phrases (and ones starting with a symbol) match anywhere.
    """
    found = 0
    for phrase in phrases:
        if _CJK.search(phrase) or not phrase[:1].isalnum():
            hit = phrase in text_lower
        else:
            pattern = _WORD_BOUNDARY_CACHE.get(phrase)
            if pattern is None:
                pattern = re.compile(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])")
                _WORD_BOUNDARY_CACHE[phrase] = pattern
            hit = pattern.search(text_lower) is not None
        if hit:
            found += 1
            if found == KEYWORD_CAP:
                break
    return found


def language_of(text: str) -> str:
    """``"zh"`` when at least 30 % of the letters are CJK characters, else ``"en"``.

    Example
    -------
    >>> language_of("臻品钻戒 限时礼遇"), language_of("Bespoke rings")
    ('zh', 'en')
    """
    n_cjk = len(_CJK.findall(text))
    n_latin = len(_LATIN.findall(text))
    return "zh" if n_cjk > 0 and n_cjk >= 0.3 * (n_cjk + n_latin) else "en"


def feature_names(lexicon: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The numeric feature names :func:`features` returns, in a stable order.

    Example
    -------
    >>> feature_names()[:3]
    ['chars', 'length_deviation', 'has_number']
    """
    lexicon = DEFAULT_LEXICON if lexicon is None else lexicon
    base = ["chars", "length_deviation", "has_number", "question", "exclamation", "cta",
            "urgency", "zh"]  # fmt: skip
    return base + [f"kw_{category}" for category in lexicon]


def features(text: str, lexicon: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Interpretable features of an ad text (see the module docstring for each name).

    Parameters
    ----------
    text:
        The ad copy (headline, or headline and description joined).
    lexicon:
        Keyword categories to count, ``{category: [phrases...]}``; defaults to
        :data:`DEFAULT_LEXICON`. Each category becomes a ``kw_<category>`` feature.

    Returns
    -------
    dict
        Feature name to value, every value numeric (the language is the ``zh`` flag;
        :func:`language_of` gives its code).

    Example
    -------
    >>> f = features("Shop bespoke rings today — 20% off!")
    >>> f["cta"], f["urgency"], f["has_number"], f["exclamation"], f["kw_custom"]
    (1.0, 1.0, 1.0, 1.0, 1.0)
    """
    lexicon = DEFAULT_LEXICON if lexicon is None else lexicon
    lower = text.lower()
    language = language_of(text)
    chars = float(len(text.strip()))
    ideal = _IDEAL_CHARS[language]
    result: dict[str, float] = {
        "chars": chars,
        "length_deviation": abs(chars / ideal - 1.0),
        "has_number": 1.0 if _NUMBER.search(text) else 0.0,
        "question": 1.0 if ("?" in text or "？" in text) else 0.0,
        "exclamation": 1.0 if ("!" in text or "！" in text) else 0.0,
        "cta": float(_present(lower, CTA_WORDS)),
        "urgency": float(_present(lower, URGENCY_WORDS)),
        "zh": 1.0 if language == "zh" else 0.0,
    }
    for category, phrases in lexicon.items():
        result[f"kw_{category}"] = float(_present(lower, [p.lower() for p in phrases]))
    return result
