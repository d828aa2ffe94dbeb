"""Template skeletons the language model fills: fixed brief parts, the model's phrase between.

Where a small model cannot write a whole ad (Chinese, for a 135M English-first model: nearly
every free sample is unreadable), it can still choose words. A skeleton is a headline pattern
and a description pattern, each with one ``{phrase}`` slot, around the brief's own parts
(``{brand}``, ``{offer}``, ``{cta}``, ``{product}``): ``"{brand}｜{phrase}"``,
``"{phrase}。{offer}，{cta}。"``. Each sampled sequence gets a skeleton; the text before a slot
is forced into the sequence (:class:`~adloop.generators.lm_constraints.Plan`), so the model
writes its phrase in context, and the text after it is appended once sampling is done, with
room kept for it in the channel's limit.

For Chinese the slot holds phrases only (:class:`~adloop.generators.lm_constraints.PhraseLexicon`):
the brief's own keywords, product, tone words and description clauses, and a small bank of
common ad phrases (:data:`ZH_PHRASES`) free of claims and superlatives; the model picks and
orders them. In English the slot is free text under the usual constraints.

Example
-------
>>> drafts = fill_skeletons(generator, brief, 8, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adloop.generators.brief import Brief
from adloop.generators.lm_constraints import PhraseLexicon, Plan
from adloop.generators.lm_prompt import Shot, parse_completion

if TYPE_CHECKING:
    from adloop.generators.lm import LMGenerator

__all__ = ["EN_SKELETONS", "ZH_PHRASES", "ZH_SKELETONS", "Skeleton", "fill_skeletons"]

SLOT = "{phrase}"


@dataclass(frozen=True)
class Skeleton:
    """A headline and a description pattern, each with at most one ``{phrase}`` slot."""

    headline: str
    description: str


EN_SKELETONS = (
    Skeleton("{brand} | {phrase}", "{phrase} {cta}."),
    Skeleton("{phrase}", "{Offer}. {phrase}"),
    Skeleton("{brand}: {phrase}", "{phrase}"),
    Skeleton("{phrase} | {brand}", "{phrase} {Offer}."),
)
ZH_SKELETONS = (
    Skeleton("{brand}｜{phrase}", "{phrase}。{offer}，{cta}。"),
    Skeleton("{phrase}｜{brand}", "{brand}{product}，{phrase}。{cta}！"),
    Skeleton("{phrase}，就选{brand}", "{phrase}。{cta}，享{offer}。"),
    Skeleton("{brand}{product}，{phrase}", "{phrase}。{cta}。"),
)
#: Common Chinese ad phrases for the slot, besides the brief's own words: no figures, claims
#: or superlatives (an advertising-law banned term in a brief removes any phrase holding it).
ZH_PHRASES = (
    "匠心打造", "精心设计", "用心呈现", "品质之选", "值得拥有", "为您而来", "专属于您",
    "量身定制", "点亮生活", "开启美好", "悦享时光", "心动之选", "品味生活", "精致生活",
    "安心之选", "轻松拥有", "送礼佳选", "经典之作", "诚意之作", "美好相伴", "一见倾心",
    "简约大方", "贴心服务", "专业团队", "细节见真章", "品质生活", "用心服务", "值得信赖",
    "陪伴每一天", "给生活多一点美好", "让美好发生", "从这里开始", "随心而选", "有温度的",
)  # fmt: skip
_MIN_SLOT_UNITS = 6


def _values(brief: Brief) -> dict[str, str]:
    """Slot values from the brief (English ones capitalised where they start a sentence)."""
    offer = brief.offer.strip().rstrip(".。!！")
    cta = brief.call_to_action.strip().rstrip(".。!！")
    return {
        "brand": brief.brand,
        "product": brief.product,
        "offer": offer,
        "Offer": offer[:1].upper() + offer[1:],
        "cta": cta,
    }


def _fields(pattern: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(pattern) if f and f != "phrase"]


def _split(pattern: str, values: dict[str, str]) -> tuple[str, str, bool]:
    """(text before the slot, text after it, whether there is a slot) of a filled pattern."""
    filled = pattern.replace(SLOT, "\0").format(**values)
    before, slot, after = filled.partition("\0")
    return before, after, bool(slot)


def usable_skeletons(brief: Brief) -> list[Skeleton]:
    """The language's skeletons whose fields the brief has and whose fixed text leaves the
    model room for a phrase within the channel's limits."""
    values = _values(brief)
    channel = brief.channel
    usable = []
    for skeleton in ZH_SKELETONS if brief.language == "zh" else EN_SKELETONS:
        description = skeleton.description if channel.description_max else ""
        fields = _fields(skeleton.headline) + _fields(description)
        if any(not values.get(f) for f in fields):
            continue
        fits = True
        for pattern, limit in ((skeleton.headline, channel.headline_max),
                               (description, channel.description_max)):  # fmt: skip
            if pattern:
                before, after, slot = _split(pattern, values)
                room = limit - channel.length(before + after)
                fits = fits and room >= (_MIN_SLOT_UNITS if slot else 0)
        if fits:
            usable.append(skeleton)
    return usable


def brief_phrases(brief: Brief) -> list[str]:
    """Chinese phrases for the slot: the brief's keywords, product and description clauses,
    then :data:`ZH_PHRASES`, less any holding a banned term.

    Tone words ("亲切、专业") describe the voice, not the copy: as phrases of their own they
    read as a bare list of adjectives ("亲切，匠心打造"), so they are left out.
    """
    own = [*brief.keywords, brief.product]
    own += [c for c in re.split(r"[，。！？；,.!?;]+", brief.description) if 2 <= len(c) <= 16]
    banned = [t.lower() for t in brief.banned_terms]
    phrases = [p.strip() for p in (*own, *ZH_PHRASES) if p.strip()]
    return [p for p in dict.fromkeys(phrases) if not any(b in p.lower() for b in banned)]


def _join(phrase: str, after: str, language: str) -> str:
    """The model's sentence, ended, then the fixed text that follows it in the skeleton."""
    phrase = phrase.strip().rstrip("，,、:：;；")
    if after[:1] in tuple("。，！？.,!?:：;；"):
        return phrase.rstrip("。！？.!?") + after
    if phrase and phrase[-1] not in ".!?。！？":
        phrase += "。" if language == "zh" else "."
    return phrase + ("" if language == "zh" or not after else " ") + after


def _whole_slot(line: str, start: Sequence[int], tokenizer: Any, lexicon: PhraseLexicon) -> str:
    """``line`` with its slot (what follows the forced ``start``) cut back to whole phrases;
    empty when not one phrase was finished, so the draft is dropped rather than served bare."""
    forced = tokenizer.decode(list(start)).strip() if start else ""
    if not line.startswith(forced):
        return line
    kept = lexicon.whole_prefix(line[len(forced) :].strip())
    return forced + kept if kept else ""


def fill_skeletons(
    generator: LMGenerator, brief: Brief, n: int, *, seed: int = 0, shots: Sequence[Shot] = ()
) -> list[tuple[str, str]]:
    """``n`` (headline, description) pairs, each a skeleton whose slots the model filled.

    Skeletons are dealt out evenly in an order set by ``seed``; with none usable (the brief
    lacks the fields, or its limits leave no room) the model writes whole ads instead.
    """
    skeletons = usable_skeletons(brief)
    if not skeletons:
        texts = generator.sample(brief, n, seed=seed, shots=shots)
        return [parse_completion(text, brief) for text in texts]
    _, tokenizer = generator.load()
    table = generator.token_table()
    values = _values(brief)
    channel = brief.channel
    lexicons = None
    if brief.language == "zh":
        phrases = brief_phrases(brief)
        lexicons = (
            PhraseLexicon(table, phrases, max_phrases=2, require_separator=True),
            PhraseLexicon(table, phrases, max_phrases=3, require_separator=True),
        )
    order = np.random.default_rng(seed).permutation(len(skeletons))
    chosen = [skeletons[order[i % len(skeletons)]] for i in range(n)]

    def ids(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()

    zh = brief.language == "zh"
    plans = []
    tails = []
    for skeleton in chosen:
        description = skeleton.description if channel.description_max else ""
        h_before, h_after, _ = _split(skeleton.headline, values)
        d_before, d_after, _ = _split(description, values) if description else ("", "", False)
        # The model writes each line's own words after a space, as it would unprompted; in
        # Chinese the space is forced, so the lexicon starts right after it.
        plans.append(
            Plan(
                headline_start=ids(" " + h_before.rstrip()) if h_before or zh else (),
                description_start=ids(" " + d_before.rstrip()) if d_before or zh else (),
                headline_reserve=channel.length(h_after),
                description_reserve=channel.length(d_after) + (0 if d_after else 1),
                headline_lexicon=lexicons[0] if lexicons else None,
                description_lexicon=lexicons[1] if lexicons else None,
            )
        )
        tails.append((h_after, d_after))
    # Enough tokens that no sequence is cut inside a phrase: a wide character can take three
    # byte tokens, a phrase slot is cut short by its lexicon or its line's limit anyway.
    forced = max(len(p.headline_start) + len(p.description_start) for p in plans)
    budget = generator.max_new_tokens or (
        forced + 3 * (channel.headline_max + channel.description_max) // channel.cjk_width + 8
        if zh
        else None
    )
    texts = generator.sample(brief, n, seed=seed, shots=shots, plans=plans, max_new_tokens=budget)
    drafts = []
    cta, offer = values["cta"], values["offer"]
    for text, (h_after, d_after), plan in zip(texts, tails, plans, strict=True):
        headline, description = parse_completion(text, brief)
        if lexicons is not None:  # a slot cut inside a phrase keeps the phrases it finished
            headline = _whole_slot(headline, plan.headline_start, tokenizer, lexicons[0])
            description = _whole_slot(description, plan.description_start, tokenizer, lexicons[1])
        if h_after and headline:
            headline = headline.rstrip("，,、|｜:： ") + h_after
        if channel.description_max and description:
            description = _join(description, d_after, brief.language)
            if zh and cta and cta in offer:  # "免费试听三节课，免费试听。" says it twice
                description = description.replace(f"，{cta}。", "。").replace(f"{cta}，享", "享")
        drafts.append((headline.strip(), description.strip()))
    return drafts
