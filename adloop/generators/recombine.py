"""Recombination generator: new challengers built from the current winners' parts.

A winner is split into its opening (the headline), its description sentences, its offer
sentence and its call-to-action sentence (recognised from the brief's offer and call to action,
and from common cue words). New candidates come from five operations:

``cross``          headline of one winner, description of another
``cross_sentences`` first description sentence of one winner, the rest of another's
``swap_cta``       the call to action rewritten in another phrasing
``swap_offer``     the offer rewritten in another phrasing (added when the winner has none)
``new_opening``    a fresh headline from the template grammar over the winner's description

Every candidate records its parents' variant ids in ``parent_ids``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from adloop.generators.brief import Brief
from adloop.generators.candidate import TEXT_SEPARATOR, Candidate
from adloop.generators.filters import complete_required_terms
from adloop.generators.templates import headline_options

__all__ = ["RecombinationGenerator", "split_winner"]

_EN_CTA_CUES = (
    "book",
    "shop",
    "discover",
    "explore",
    "visit",
    "call",
    "order",
    "get ",
    "try",
    "find",
    "start",
    "join",
    "request",
    "reserve",
    "buy",
    "contact",
)
_ZH_CTA_CUES = ("立即", "马上", "预约", "抢购", "了解", "咨询", "探索", "选购", "点击", "即刻")
_EN_OFFER_CUES = ("free", "complimentary", "% off", "save", "offer", "gift", "included")
_ZH_OFFER_CUES = ("免费", "优惠", "折", "赠", "礼", "享")


def _sentences(text: str, language: str) -> list[str]:
    pattern = r"(?<=[。！？])" if language == "zh" else r"(?<=[.!?])\s+"
    return [s.strip() for s in re.split(pattern, text) if s.strip()]


def _join(sentences: Sequence[str], language: str) -> str:
    return ("" if language == "zh" else " ").join(s for s in sentences if s)


def split_winner(winner: dict[str, Any]) -> tuple[str, str]:
    """``(headline, description)`` of a winner given as headline/description or as text."""
    headline = str(winner.get("headline") or "").strip()
    description = str(winner.get("description") or "").strip()
    if not headline:
        text = str(winner.get("text") or "")
        headline, _, description = text.partition(TEXT_SEPARATOR)
    return headline.strip(), description.strip()


class RecombinationGenerator:
    """Mutates and crosses the campaign's winners; returns nothing when there are none.

    Example
    -------
    >>> winners = [{"variant_id": "v_1", "headline": "Bespoke Rings",
    ...             "description": "Made for you. Book a fitting."},
    ...            {"variant_id": "v_2", "headline": "Aurelle Gold",
    ...             "description": "Free consultation. Visit us."}]
    >>> brief = Brief(product="rings", language="en", call_to_action="Book a fitting")
    >>> all(c.parent_ids for c in RecombinationGenerator().generate(brief, 4, winners=winners))
    True
    """

    name = "recombine"

    def __repr__(self) -> str:
        return "RecombinationGenerator()"

    def _cta_phrasings(self, brief: Brief) -> list[str]:
        cta = brief.call_to_action.strip().rstrip(".。!！")
        if not cta:
            return []
        if brief.language == "zh":
            return [f"{cta}。", f"{cta}！", f"欢迎{cta}。", f"{cta}，我们恭候您。"]
        return [f"{cta}.", f"{cta} today.", f"{cta} now.", f"{cta} – we are ready for you."]

    def _offer_phrasings(self, brief: Brief) -> list[str]:
        offer = brief.offer.strip().rstrip(".。")
        if not offer:
            return []
        if brief.language == "zh":
            return [f"{offer}。", f"尊享{offer}。", f"现享{offer}。"]
        return [f"{offer[:1].upper()}{offer[1:]}.", f"Enjoy a {offer}.", f"Includes a {offer}."]

    def _is_cta(self, sentence: str, brief: Brief) -> bool:
        lowered = sentence.lower()
        cta = brief.call_to_action.strip().rstrip(".。!！").lower()
        cues = _ZH_CTA_CUES if brief.language == "zh" else _EN_CTA_CUES
        return bool(cta and cta in lowered) or any(lowered.startswith(c) for c in cues)

    def _is_offer(self, sentence: str, brief: Brief) -> bool:
        lowered = sentence.lower()
        offer = brief.offer.strip().rstrip(".。").lower()
        cues = _ZH_OFFER_CUES if brief.language == "zh" else _EN_OFFER_CUES
        return bool(offer and offer in lowered) or any(c in lowered for c in cues)

    def _variants(
        self, brief: Brief, winners: Sequence[dict]
    ) -> list[tuple[str, str, str, tuple[str, ...]]]:
        language = brief.language
        parsed = []
        for index, winner in enumerate(winners):
            headline, description = split_winner(winner)
            if headline:
                variant_id = str(winner.get("variant_id") or f"winner_{index}")
                parsed.append(
                    (variant_id, headline, description, _sentences(description, language))
                )
        out: list[tuple[str, str, str, tuple[str, ...]]] = []
        for a_id, a_head, _a_desc, a_sents in parsed:
            for b_id, _b_head, b_desc, b_sents in parsed:
                if a_id == b_id:
                    continue
                if b_desc:
                    out.append(("cross", a_head, b_desc, (a_id, b_id)))
                if len(a_sents) >= 1 and len(b_sents) >= 2:
                    out.append(
                        (
                            "cross_sentences",
                            a_head,
                            _join([a_sents[0], *b_sents[1:]], language),
                            (a_id, b_id),
                        )
                    )
        for a_id, a_head, _a_desc, a_sents in parsed:
            cta_at = [i for i, s in enumerate(a_sents) if self._is_cta(s, brief)]
            for phrasing in self._cta_phrasings(brief):
                sents = list(a_sents)
                if cta_at:
                    sents[cta_at[-1]] = phrasing
                else:
                    sents.append(phrasing)
                out.append(("swap_cta", a_head, _join(sents, language), (a_id,)))
            offer_at = [i for i, s in enumerate(a_sents) if self._is_offer(s, brief)]
            for phrasing in self._offer_phrasings(brief):
                sents = list(a_sents)
                if offer_at:
                    sents[offer_at[0]] = phrasing
                else:
                    sents.insert(max(len(sents) - 1, 0) if cta_at else len(sents), phrasing)
                out.append(("swap_offer", a_head, _join(sents, language), (a_id,)))
            for headline in headline_options(brief):
                if headline != a_head:
                    out.append(("new_opening", headline, _join(a_sents, language), (a_id,)))
        return out

    def generate(
        self, brief: Brief, n: int, *, seed: int = 0, winners: Sequence[dict] = ()
    ) -> list[Candidate]:
        """Up to ``n`` distinct recombinations of ``winners``, shuffled by ``seed``."""
        if n <= 0 or not winners:
            return []
        rng = np.random.default_rng(seed)
        by_kind: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
        for kind, headline, description, parents in self._variants(brief, winners):
            by_kind.setdefault(kind, []).append((headline, description, parents))
        # Interleave the operations so one with many options (new_opening) cannot crowd out
        # the others; the order within and across operations follows the seed.
        queues = [
            [group[i] for i in rng.permutation(len(group))]
            for group in (by_kind[k] for k in sorted(by_kind))
        ]
        queues = [queues[i] for i in rng.permutation(len(queues))]
        options = [
            q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)
        ]
        originals = {split_winner(w) for w in winners}
        seen: set[tuple[str, str]] = set()
        candidates: list[Candidate] = []
        for headline, description, parents in options:
            headline, description = complete_required_terms(headline, description, brief)
            key = (headline, description)
            too_long = (
                brief.channel.length(headline) > brief.channel.headline_max
                or brief.channel.length(description) > brief.channel.description_max
            )
            if too_long or key in seen or key in originals:
                continue
            seen.add(key)
            candidates.append(
                Candidate.for_brief(
                    brief, headline, description, self.name, seed=seed, parent_ids=parents
                )
            )
            if len(candidates) >= n:
                break
        return candidates
