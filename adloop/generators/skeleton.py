"""Template skeletons the language model fills: fixed brief parts, the model's phrase between.

Where a small model cannot write a whole ad (Chinese, for a 135M English-first model: nearly
every free sample is unreadable), it can still choose words. A skeleton is a headline pattern
and a description pattern, each with one ``{phrase}`` slot, around the brief's own parts
(``{brand}``, ``{offer}``, ``{cta}``, ``{product}``): ``"{brand}｜{phrase}"``,
``"{phrase}。{offer}，{cta}。"``. Each sampled sequence gets a skeleton; the text before a slot
is forced into the sequence (:class:`~adloop.generators.lm_constraints.Plan`), so the model
writes its phrase in context, and the text after it is appended once sampling is done, with
room kept for it in the channel's limit.

The slot holds phrases only (:class:`~adloop.generators.lm_constraints.PhraseLexicon`), which
the model picks and orders. For Chinese: the brief's own keywords, product and description
clauses, and a small bank of common ad phrases (:data:`ZH_PHRASES`) free of claims and
superlatives. For English (:func:`english_phrases`): in a headline, one of the brief's keywords
or its product in title case, "For" and a segment, or a short stock phrase
(:data:`EN_HEADLINE_PHRASES`); in a description, up to two sentences from the brief's
description, a keyword or the product for a segment ("Whole bean coffee for gift buyers"),
and stock sentences (:data:`EN_SENTENCES`). A 135M model writing English freely joins real
words into nonsense a lexicon cannot see ("Shredded boxers: Genuine Deluxe"); choosing among
phrases it cannot.

A model version that ships a copy scorer (fitted on the market's results) steers what is
written as well as what is kept: skeletons are drawn in proportion to how its fixed text scores,
and each skeleton's English phrase menu favours phrases whose words scored well
(:data:`GUIDE_STRENGTH`). The model still chooses within the menu, and every phrase and
skeleton keeps a chance.

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
    from adloop.generators.scorer import CopyScorer

__all__ = [
    "EN_HEADLINE_PHRASES",
    "EN_SENTENCES",
    "EN_SKELETONS",
    "ZH_PHRASES",
    "ZH_SKELETONS",
    "Skeleton",
    "english_phrases",
    "fill_skeletons",
]

SLOT = "{phrase}"
#: How strongly a model version's copy scorer steers what is written (skeletons and the
#: phrases each one offers): logits of ``GUIDE_STRENGTH`` x the standardised score. On
#: simulated dog-food copy with a scorer fitted on 35 variants, 288 plain samples gained
#: -3 % true CTR at 0, +4 % at 0.5, +11 % at 1 and +10 % at 2 (fewer distinct samples).
#: Stronger steering (2.5, with sixteen menus a third of the bank) looked better offline but,
#: in the closed loop, lost diversity (0.42-0.45 against 0.51-0.52) for the same lift.
GUIDE_STRENGTH = 1.5
#: Share of the skeletons still dealt evenly when a scorer steers them: steered alone, one
#: skeleton (the offer's) took most samples, and a pool of six shared its fixed text.
EVEN_SHARE = 0.5
#: Phrase menus per skeleton in one call when a scorer steers them (one otherwise): steered
#: menus favour the same phrases, and with one menu a skeleton a model narrowed by training
#: wrote 49 distinct ads in 288 samples.
GUIDED_MENUS = 8


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
    "陪伴每一天", "给生活多一点美好", "让美好发生", "从这里开始", "随心而选",
)  # fmt: skip
#: Stock phrases that fit only a brief that speaks of gifts (礼): "送礼佳选" for a language app
#: read as not fluent to a reader.
_ZH_GIFT_PHRASES = frozenset({"送礼佳选"})
#: Stock English headline phrases for the slot (title case; no claims, figures or superlatives).
EN_HEADLINE_PHRASES = (
    "Made for You", "Made with Care", "Find Yours Today", "Try Something New",
    "See What's New", "Start Today", "Discover More", "Your Everyday Favourite",
)  # fmt: skip
#: Stock English sentences for a description slot (no claims, figures or superlatives).
EN_SENTENCES = (
    "Made with care", "Made for you", "Find out more today",
    "See what's new", "Designed with you in mind", "Try it for yourself",
    "Made for every day", "Easy to get started",
)  # fmt: skip
_EN_MINOR_WORDS = frozenset(
    ("a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with")
)
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
    read as a bare list of adjectives ("亲切，匠心打造"), so they are left out; so is a gift
    phrase for a brief that never speaks of gifts. ("有温度的", a dangling adjective in every
    ad a reader saw it in, is no longer in the bank.)
    """
    own = [*brief.keywords, brief.product]
    own += [c for c in re.split(r"[，。！？；,.!?;]+", brief.description) if 2 <= len(c) <= 16]
    banned = [t.lower() for t in brief.banned_terms]
    about = " ".join([brief.product, brief.description, *brief.keywords, *brief.segments])
    stock = [p for p in ZH_PHRASES if "礼" in about or p not in _ZH_GIFT_PHRASES]
    phrases = [p.strip() for p in (*own, *stock) if p.strip()]
    return [p for p in dict.fromkeys(phrases) if not any(b in p.lower() for b in banned)]


def _title_case(text: str) -> str:
    """ "running shoes for hiking" -> "Running Shoes for Hiking" (minor words stay lower)."""
    words = text.split()
    return " ".join(
        w if (i and w.lower() in _EN_MINOR_WORDS) else w[:1].upper() + w[1:]
        for i, w in enumerate(words)
    )


def _sentence_case(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:]


def english_phrases(brief: Brief) -> tuple[list[str], list[str]]:
    """English phrases for the (headline, description) slots, each with a leading space (as a
    byte-level tokenizer writes a word), less any holding a banned term.

    Headline: the brief's keywords and product in title case, "For" and a segment, and
    :data:`EN_HEADLINE_PHRASES`. Description: the sentences of the brief's description, each
    keyword (and the product) for each segment, "Made for" a segment, and :data:`EN_SENTENCES`.
    A keyword already holding "for" ("running shoes for hiking") gets no segment after it.
    The brief's tone words are left out: bare adjectives read as a list, not copy.
    """
    terms = [t.strip() for t in (*brief.keywords, brief.product) if t.strip()]
    segments = [s.strip() for s in brief.segments if s.strip()]
    headline = [_title_case(t) for t in terms]
    headline += [f"For {_title_case(s)}" for s in segments]
    headline += list(EN_HEADLINE_PHRASES)
    sentences = [c.strip() for c in re.split(r"[.!?]+", brief.description) if c.strip()]
    description = [_sentence_case(c) for c in sentences]
    for term in terms:
        if " for " in f" {term.lower()} ":
            description.append(_sentence_case(term))
            continue
        description += [_sentence_case(f"{term} for {s}") for s in segments]
    description += [f"Made for {s}" for s in segments]
    description += list(EN_SENTENCES)
    banned = [t.lower() for t in brief.banned_terms]

    def clean(phrases: list[str]) -> list[str]:
        kept = (p for p in dict.fromkeys(phrases) if not any(b in p.lower() for b in banned))
        return [" " + p for p in kept]

    return clean(headline), clean(description)


def _join(phrase: str, after: str, language: str) -> str:
    """The model's sentence, ended, then the fixed text that follows it in the skeleton."""
    phrase = phrase.strip().rstrip("，,、:：;；")
    if after[:1] in tuple("。，！？.,!?:：;；"):
        return phrase.rstrip("。！？.!?") + after
    if phrase and phrase[-1] not in ".!?。！？":
        phrase += "。" if language == "zh" else "."
    if language == "zh" or not after:
        return phrase + after
    return phrase + " " + after.lstrip()


def _whole_slot(line: str, start: Sequence[int], tokenizer: Any, lexicon: PhraseLexicon) -> str:
    """``line`` with its slot (what follows the forced ``start``) cut back to whole phrases;
    empty when not one phrase was finished, so the draft is dropped rather than served bare."""
    forced = tokenizer.decode(list(start)).strip() if start else ""
    if not line.startswith(forced):  # sampling stopped inside the forced text
        return ""
    kept = _distinct_phrases(lexicon.whole_prefix(line[len(forced) :].strip()), lexicon)
    if not kept:
        return ""
    return forced + (" " if lexicon.leading_space and forced else "") + kept


def _distinct_phrases(text: str, lexicon: PhraseLexicon) -> str:
    """``text`` (whole phrases and separators) without a phrase that repeats an earlier one:
    the same phrase, or in English one sharing a word of four letters or more ("Coffee
    delivery for home baristas. Whole bean coffee for home baristas" keeps the first); and
    with one stock phrase at most (:data:`ZH_PHRASES`, :data:`EN_SENTENCES`): a line of stock
    phrases ("诚意之作，专业团队，美好相伴") says nothing about the product."""
    if not lexicon.separators:
        return text
    separator = lexicon.separators[0]
    parts = [p.strip() for p in re.split("|".join(map(re.escape, lexicon.separators)), text)]
    kept: list[str] = []
    seen: set[str] = set()
    stock_used = False
    for part in parts:
        words = {w for w in re.findall(r"[a-z']{4,}", part.lower())}
        stock = part in _STOCK
        if (
            part
            and part not in kept
            and not (lexicon.leading_space and words & seen)
            and not (stock and stock_used)
        ):
            kept.append(part)
            seen |= words
            stock_used |= stock
    return (separator + (" " if lexicon.leading_space else "")).join(kept)


_STOCK = frozenset((*ZH_PHRASES, *EN_SENTENCES))


def _some(
    phrases: Sequence[str], rng: np.random.Generator, scorer: CopyScorer | None = None
) -> list[str]:
    """A random half of ``phrases`` (at least three), in their order.

    With a ``scorer``, the half is drawn by the phrases' own scores (Gumbel top-k on their
    standardised word scores, :meth:`CopyScorer.phrase_scores`): what the market rewarded
    is offered more often, while every phrase keeps a chance.
    """
    keep = min(max(3, (len(phrases) + 1) // 2), len(phrases))
    if scorer is None:
        picked = sorted(rng.choice(len(phrases), size=keep, replace=False))
    else:
        logits = _standardised(scorer.phrase_scores(phrases)) * GUIDE_STRENGTH
        picked = sorted(np.argsort(-(logits + rng.gumbel(size=len(phrases))))[:keep])
    return [phrases[i] for i in picked]


def _standardised(values: np.ndarray) -> np.ndarray:
    sd = float(values.std())
    return (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)


def _deal(
    skeletons: Sequence[Skeleton], n: int, rng: np.random.Generator,
    values: dict[str, str], scorer: CopyScorer | None,
) -> list[Skeleton]:  # fmt: skip
    """``n`` skeletons: dealt out evenly in a random order, or with a ``scorer``, drawn with
    probability ``EVEN_SHARE`` / skeletons + (1 - ``EVEN_SHARE``) x a share proportional to
    ``exp(GUIDE_STRENGTH * z)``, z the standardised score of each one's fixed text (brand,
    offer, call to action), so a pattern the market rewarded is written more."""
    if scorer is None or len(skeletons) < 2:
        order = rng.permutation(len(skeletons))
        return [skeletons[order[i % len(skeletons)]] for i in range(n)]
    fixed = [
        " ".join(_split(s.headline, values)[:2] + _split(s.description, values)[:2])
        for s in skeletons
    ]
    weights = np.exp(_standardised(scorer.phrase_scores(fixed)) * GUIDE_STRENGTH)
    shares = (1 - EVEN_SHARE) * weights / weights.sum() + EVEN_SHARE / len(skeletons)
    picks = rng.choice(len(skeletons), size=n, p=shares)
    return [skeletons[i] for i in picks]


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
    zh = brief.language == "zh"
    if zh:
        phrases = brief_phrases(brief)
        # two phrases a slot at most: three read as a list ("18K金项链，轻松拥有，高级珠宝定制")
        lexicon = PhraseLexicon(table, phrases, max_phrases=2, require_separator=True)
        lexicons = (lexicon, lexicon)
    rng = np.random.default_rng(seed)
    scorer = generator.scorer if GUIDE_STRENGTH > 0 else None
    chosen = _deal(skeletons, n, rng, values, scorer)
    by_skeleton: dict[Skeleton, list[tuple[PhraseLexicon, PhraseLexicon]]] = {}
    if not zh:
        # Each skeleton offers its own random half of the phrases: the model's favourite
        # phrase then differs between skeletons, so fewer samples are near-copies. Menus
        # steered by a scorer are alike, so then each skeleton has several, in turn.
        headline_phrases, description_phrases = english_phrases(brief)
        menus = GUIDED_MENUS if scorer is not None else 1
        for skeleton in skeletons:
            by_skeleton[skeleton] = []
            for _ in range(menus):
                heads = _some(headline_phrases, rng, scorer)
                lines = _some(description_phrases, rng, scorer)
                by_skeleton[skeleton].append((
                    PhraseLexicon(table, heads, separators=(), max_phrases=1, leading_space=True),
                    PhraseLexicon(table, lines, separators=(".",), max_phrases=2,
                                  require_separator=True, leading_space=True),
                ))  # fmt: skip
    turns: dict[Skeleton, int] = {}

    def ids(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()

    plans = []
    tails = []
    for skeleton in chosen:
        if not zh:
            turn = turns[skeleton] = turns.get(skeleton, -1) + 1
            lexicons = by_skeleton[skeleton][turn % len(by_skeleton[skeleton])]
        description = skeleton.description if channel.description_max else ""
        h_before, h_after, _ = _split(skeleton.headline, values)
        d_before, d_after, _ = _split(description, values) if description else ("", "", False)
        # Room for a required term the skeleton does not hold ("Northbean: " before the
        # description), which the generator adds after sampling.
        fixed = f"{h_before}{h_after} {d_before}{d_after}".lower()
        missing = sum(
            channel.length(term) + 2 for term in brief.required_terms if term.lower() not in fixed
        )
        # The model writes each line's own words after a space, as it would unprompted; in
        # Chinese the space is forced, so the lexicon starts right after it.
        plans.append(
            Plan(
                headline_start=ids(" " + h_before.rstrip()) if h_before or zh else (),
                description_start=ids(" " + d_before.rstrip()) if d_before or zh else (),
                headline_reserve=channel.length(h_after),
                description_reserve=channel.length(d_after) + (0 if d_after else 1) + missing,
                headline_lexicon=lexicons[0],
                description_lexicon=lexicons[1],
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
        # A slot cut inside a phrase keeps the phrases it finished.
        headline = _whole_slot(headline, plan.headline_start, tokenizer, plan.headline_lexicon)
        description = _whole_slot(
            description, plan.description_start, tokenizer, plan.description_lexicon
        )
        if h_after and headline:
            headline = headline.rstrip("，,、|｜:： ") + h_after
        if channel.description_max and description:
            description = _join(description, d_after, brief.language)
            if zh and cta and cta in offer:  # "免费试听三节课，免费试听。" says it twice
                description = description.replace(f"，{cta}。", "。").replace(f"{cta}，享", "享")
        drafts.append((headline.strip(), description.strip()))
    return drafts
