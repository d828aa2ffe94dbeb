"""Template generator: slot grammars for English and Chinese, deterministic per seed.

Each grammar is a list of headline patterns and a list of description patterns with slots
filled from the brief (``{brand}``, ``{keyword}``, ``{adjective}``, ``{segment}``, ``{offer}``,
``{cta}``, ...). Every rendering that fits the channel and avoids the banned terms is a
possible headline or description; the generator shuffles them with the seed and pairs them so
each headline and each description is used as evenly as possible.
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


def _allowed(text: str, brief: Brief, limit: int) -> bool:
    lowered = text.lower()
    return brief.channel.length(text) <= limit and not any(
        term.lower() in lowered for term in brief.banned_terms
    )


def headline_options(brief: Brief) -> list[str]:
    """Every headline the grammar can write for ``brief`` within the limit, without banned terms."""
    patterns = _ZH_HEADLINES if brief.language == "zh" else _EN_HEADLINES
    return [
        h
        for h in _render(patterns, _slot_values(brief))
        if _allowed(h, brief, brief.channel.headline_max)
    ]


def description_options(brief: Brief) -> list[str]:
    """Every description the grammar writes for ``brief`` within the limit, free of banned terms."""
    if brief.channel.description_max == 0:
        return []
    patterns = _ZH_DESCRIPTIONS if brief.language == "zh" else _EN_DESCRIPTIONS
    return [
        d
        for d in _render(patterns, _slot_values(brief))
        if _allowed(d, brief, brief.channel.description_max)
    ]


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
