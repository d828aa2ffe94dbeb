"""Template generator: slot grammars for English and Chinese, deterministic per seed.

Each grammar is a list of headline patterns and a list of description patterns with slots
filled from the brief (``{brand}``, ``{keyword}``, ``{adjective}``, ``{segment}``, ``{offer}``,
``{cta}``, ...). Every rendering that fits the channel and avoids the banned terms is a
possible headline or description; the generator shuffles them with the seed and pairs them so
each headline and each description is used as evenly as possible.

A brief narrowed to one segment (``Brief.for_segment``) gets copy that speaks to it: a few
more headlines name the segment, and every description does (every headline, when the brief
gives nothing to write a description from), from the segment patterns only, all patterns
again when none of them fits the channel: the segment's own words are in the ad.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from adloop.generators.brief import Brief
from adloop.generators.candidate import Candidate
from adloop.generators.filters import complete_required_terms

__all__ = ["TemplateGenerator", "headline_options", "description_options"]

_EN_HEADLINES = (
    "{Keyword}",
    "{Keyword} by {brand}",
    "{brand} {Keyword}",
    "{brand} | {Keyword}",
    "{Adjective} {Keyword}",
    "{Keyword}, Made for You",
    "Your {Keyword}",
    "The Art of {Keyword}",
    "Discover {brand}",
    "Meet {brand}",
    "{brand}: {Adjective} {Keyword}",
    "{Product} by {brand}",
    "{Adjective} {Product}",
    "{Cta}",
    "{brand} – {Cta}",
    "{Keyword} for {Segment}",
    "{Adjective} & {Adjective2}",
    "{brand}, {Adjective} & {Adjective2}",
    "Made for {Segment}",
    "{Offer}",
)
_EN_DESCRIPTIONS = (
    "{description}",
    "{Offer}. {cta}.",
    "{Offer} with {brand}. {cta} today.",
    "{Adjective} {product} for {segment}. {cta}.",
    "{brand} {product}: {offer}. {cta}.",
    "Discover {keyword} by {brand}. {Offer}.",
    "{Keyword}, crafted for {segment}. {cta}.",
    "{Keyword} with {brand}. {Offer} – {cta}.",
    "{Adjective} and {adjective2}: {keyword} by {brand}. {cta}.",
    "Created for {segment}: {keyword}, {adjective} and {adjective2}. {cta}.",
    "{description} {cta}.",
    "From {brand}: {product}, {adjective} and {adjective2}. {Offer}.",
    "{cta} and enjoy a {offer}. {Keyword} by {brand}.",
    "Your {keyword}, designed by {brand}. {cta} now.",
)
_ZH_HEADLINES = (
    "{brand}{keyword}",
    "{keyword}｜{brand}",
    "{adjective}{keyword}",
    "{brand}·{product}",
    "{keyword}，为您而作",
    "{segment}的{keyword}",
    "{cta}：{keyword}",
    "{brand}，{adjective}之选",
    "专属{keyword}",
    "{keyword}，就选{brand}",
    "发现{brand}",
    "{brand}{product}",
    "为您打造{keyword}",
    "{adjective}{product}",
    "{offer}",
    "{brand}，{cta}",
    "{adjective}与{adjective2}，{brand}",
)
_ZH_DESCRIPTIONS = (
    "{description}",
    "{offer}，{cta}。",
    "{brand}{product}，{offer}。{cta}！",
    "为{segment}打造的{adjective}{keyword}。{offer}，{cta}。",
    "{adjective}设计，专属于您的{keyword}。{cta}。",
    "探索{brand}{keyword}，{offer}。",
    "{keyword}，{adjective}之选。{cta}，享{offer}。",
    "{brand}为{segment}精心打造{keyword}。{cta}。",
    "{adjective}而{adjective2}的{keyword}，尽在{brand}。{cta}。",
    "{cta}，尊享{offer}。{brand}{keyword}，{adjective}呈现。",
    "{description}{cta}。",
    "{segment}之选：{brand}{keyword}。{offer}。",
)
# Extra patterns for a brief narrowed to one segment (the general grammar's segment patterns
# are used too): the copy addresses that audience by name.
_EN_SEGMENT_HEADLINES = (
    "For {Segment}",
    "{brand} for {Segment}",
    "{Segment}: {Keyword}",
    "{Segment} Choose {brand}",
)
_EN_SEGMENT_DESCRIPTIONS = (
    "For {segment}: {keyword} by {brand}. {Offer}.",
    "Made for {segment}: {adjective} {keyword}. {cta}.",
    "{Offer} for {segment}. {cta}.",
    "{Segment} choose {brand}: {keyword}, {adjective} and {adjective2}. {cta}.",
    "{brand} for {segment}: {product}, {adjective} and {adjective2}. {Offer}.",
)
_ZH_SEGMENT_HEADLINES = ("献给{segment}", "{segment}之选", "{brand}，献给{segment}")
_ZH_SEGMENT_DESCRIPTIONS = (
    "献给{segment}：{adjective}{keyword}。{cta}。",
    "专为{segment}：{brand}{keyword}，{offer}。",
    "{segment}的{adjective}之选：{brand}{product}。{cta}。",
)
_EN_DEFAULT_ADJECTIVES = ("timeless", "exquisite")
_ZH_DEFAULT_ADJECTIVES = ("精致", "典雅")
_SMALL_WORDS = {
    "a",
    "an",
    "and",
    "as",
    "at",
    "by",
    "for",
    "in",
    "of",
    "on",
    "or",
    "the",
    "to",
    "with",
}


def _title(phrase: str) -> str:
    words = phrase.split()
    titled = []
    for i, word in enumerate(words):
        if i > 0 and word.lower() in _SMALL_WORDS:
            titled.append(word.lower())
        elif word[:1].islower():
            titled.append(word[:1].upper() + word[1:])
        else:
            titled.append(word)
    return " ".join(titled)


def _sentence(phrase: str) -> str:
    phrase = phrase.strip().rstrip(".。!！")
    return phrase[:1].upper() + phrase[1:] if phrase else phrase


def _split_tone(tone: str) -> list[str]:
    parts = re.split(r"[,，、/;；]|\band\b|和|与", tone)
    return [p.strip() for p in parts if p.strip()]


def _slot_values(brief: Brief) -> dict[str, list[str]]:
    zh = brief.language == "zh"
    adjectives = _split_tone(brief.tone) or list(
        _ZH_DEFAULT_ADJECTIVES if zh else _EN_DEFAULT_ADJECTIVES
    )
    keywords = list(brief.keywords) or [brief.product]
    description = brief.description.strip()
    cta = brief.call_to_action.strip().rstrip(".。!！")
    values: dict[str, list[str]] = {
        "brand": [brief.brand] if brief.brand else [],
        "product": [brief.product],
        "keyword": keywords,
        "adjective": adjectives,
        "adjective2": adjectives,
        "segment": list(brief.segments),
        "offer": [brief.offer.strip().rstrip(".。")] if brief.offer.strip() else [],
        "cta": [cta] if cta else [],
        "description": [description] if description else [],
    }
    if not zh:
        values["Keyword"] = [_title(k) for k in keywords]
        values["Product"] = [_title(brief.product)]
        values["Adjective"] = [_title(a) for a in adjectives]
        values["Adjective2"] = values["Adjective"]
        values["Segment"] = [_title(s) for s in brief.segments]
        values["Offer"] = [_sentence(o) for o in values["offer"]]
        values["Cta"] = [_title(c) for c in values["cta"]]
        values["description"] = [
            d if d.endswith((".", "!", "?")) else d + "." for d in values["description"]
        ]
    elif values["description"]:
        values["description"] = [
            d if d.endswith(("。", "！", "？")) else d + "。" for d in values["description"]
        ]
    return values


def _render(patterns: Sequence[str], values: dict[str, list[str]]) -> list[str]:
    formatter = string.Formatter()
    rendered: dict[str, None] = {}
    for pattern in patterns:
        fields = [f for _, f, _, _ in formatter.parse(pattern) if f]
        if any(not values.get(f) for f in fields):
            continue
        unique_fields = list(dict.fromkeys(fields))
        for combo in itertools.product(*(values[f] for f in unique_fields)):
            slots: dict[str, Any] = dict(zip(unique_fields, combo, strict=True))
            # "refined & refined" reads as a mistake: two adjective slots must differ.
            adjectives = [
                str(v).lower() for k, v in slots.items() if k.lower().startswith("adjective")
            ]
            if len(set(adjectives)) < len(adjectives):
                continue
            rendered[pattern.format(**slots)] = None
    return list(rendered)


def _mentions_segment(pattern: str) -> bool:
    return "{segment}" in pattern.lower()


def _patterns(brief: Brief, kind: str, speaks_in: str) -> tuple[Sequence[str], Sequence[str]]:
    """``(preferred, fallback)`` patterns of ``kind`` (``headline`` or ``description``).

    For the whole audience both are the grammar. For a brief narrowed to one segment, the
    part that ``speaks_in`` (the description, or the headline when there is none) comes from
    the patterns that name the segment, with the whole grammar as the fallback when none of
    them fits.
    """
    zh = brief.language == "zh"
    if kind == "headline":
        general = _ZH_HEADLINES if zh else _EN_HEADLINES
        extra = _ZH_SEGMENT_HEADLINES if zh else _EN_SEGMENT_HEADLINES
    else:
        general = _ZH_DESCRIPTIONS if zh else _EN_DESCRIPTIONS
        extra = _ZH_SEGMENT_DESCRIPTIONS if zh else _EN_SEGMENT_DESCRIPTIONS
    if brief.target_segment is None:
        return general, general
    every = tuple(dict.fromkeys((*general, *extra)))
    if kind != speaks_in:
        return every, every
    return tuple(p for p in every if _mentions_segment(p)), every


def _allowed(text: str, brief: Brief, limit: int) -> bool:
    lowered = text.lower()
    return brief.channel.length(text) <= limit and not any(
        term.lower() in lowered for term in brief.banned_terms
    )


def headline_options(brief: Brief) -> list[str]:
    """Every headline the grammar can write for ``brief`` within the limit, without banned terms."""
    # A narrowed brief names its segment in the description, or in the headline without one.
    speaks_in = "description"
    if brief.target_segment is not None and not description_options(brief):
        speaks_in = "headline"
    return _options(brief, "headline", brief.channel.headline_max, speaks_in)


def description_options(brief: Brief) -> list[str]:
    """Every description the grammar writes for ``brief`` within the limit, free of banned terms."""
    if brief.channel.description_max == 0:
        return []
    return _options(brief, "description", brief.channel.description_max, "description")


def _options(brief: Brief, kind: str, limit: int, speaks_in: str) -> list[str]:
    """Renderings of ``kind`` within ``limit``: from the preferred patterns, else the rest."""
    values = _slot_values(brief)
    preferred, fallback = _patterns(brief, kind, speaks_in)
    for patterns in (preferred, fallback):
        options = [text for text in _render(patterns, values) if _allowed(text, brief, limit)]
        if options:
            return options
    return []


class TemplateGenerator:
    """Combines the brief's fields through slot grammars; same seed, same candidates.

    Example
    -------
    >>> brief = Brief(product="bespoke rings", brand="Aurelle", language="en",
    ...               keywords=["engagement rings"], call_to_action="Book a fitting")
    >>> [c.text for c in TemplateGenerator().generate(brief, 2, seed=1)] == \\
    ...     [c.text for c in TemplateGenerator().generate(brief, 2, seed=1)]
    True
    """

    name = "template"

    def __repr__(self) -> str:
        return "TemplateGenerator()"

    def generate(
        self, brief: Brief, n: int, *, seed: int = 0, winners: Sequence[dict] = ()
    ) -> list[Candidate]:
        """Up to ``n`` distinct candidates (fewer only when the grammar runs out of pairs)."""
        del winners  # templates write from the brief alone
        headlines = headline_options(brief)
        descriptions = description_options(brief) or [""]
        if not headlines or n <= 0:
            return []
        rng = np.random.default_rng(seed)
        headlines = [headlines[i] for i in rng.permutation(len(headlines))]
        descriptions = [descriptions[i] for i in rng.permutation(len(descriptions))]
        n_pairs = min(n, len(headlines) * len(descriptions))
        used: set[tuple[int, int]] = set()
        candidates = []
        for i in range(n_pairs):
            h_index = i % len(headlines)
            d_index = i % len(descriptions)
            while (h_index, d_index) in used:
                d_index = (d_index + 1) % len(descriptions)
            used.add((h_index, d_index))
            headline, description = complete_required_terms(
                headlines[h_index], descriptions[d_index], brief
            )
            candidates.append(
                Candidate.for_brief(brief, headline, description, self.name, seed=seed)
            )
        return candidates
