"""Skeleton and phrase choice steered by a version's copy scorer (no model needed)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from adloop.generators.brief import load_brief
from adloop.generators.scorer import CopyScorer
from adloop.generators.skeleton import _deal, _some, _values, english_phrases, usable_skeletons

BRIEF = {
    "product": "fresh dog food subscription", "brand": "Tailwise",
    "description": "Freshly cooked meals for your dog, delivered to your door.",
    "segments": ["new puppy owners", "busy professionals"],
    "keywords": ["fresh dog food", "dog food delivery", "healthy puppy food"],
    "tone": "warm", "offer": "50% off your first box", "call_to_action": "Start your trial",
    "language": "en",
    "channel": {"name": "search", "headline_max": 30, "description_max": 90},
}  # fmt: skip


def _scorer(weights: dict[str, float]) -> CopyScorer:
    return CopyScorer(weights=weights, length_coef=(0.0, 0.0), length_mean=50.0, length_sd=10.0)


def test_phrase_menus_favour_what_the_scorer_rewards_and_keep_the_rest_possible() -> None:
    brief = load_brief(BRIEF)
    _, lines = english_phrases(brief)
    scorer = _scorer({"w:delivery": 0.3, "w:delivered": 0.3, "w:puppy": -0.3})
    plain, steered = Counter(), Counter()
    for seed in range(400):
        plain.update(_some(lines, np.random.default_rng(seed)))
        steered.update(_some(lines, np.random.default_rng(seed), scorer))
    delivery = [p for p in lines if "deliver" in p.lower()]
    puppy = [p for p in lines if "puppy" in p.lower()]
    assert delivery and puppy

    # Shares of what the menus offered, whatever the number of menus drawn.
    def share(counts: Counter, group: list[str]) -> float:
        return sum(counts[p] for p in group) / sum(counts.values())

    assert share(steered, delivery) > 1.3 * share(plain, delivery)
    assert share(steered, puppy) < 0.7 * share(plain, puppy)
    assert all(steered[p] > 0 for p in lines)  # every phrase keeps a chance
    # A menu is half the bank either way, in the bank's order.
    for menu in (_some(lines, np.random.default_rng(0)),
                 _some(lines, np.random.default_rng(0), scorer)):  # fmt: skip
        assert len(menu) == max(3, (len(lines) + 1) // 2)
        assert menu == sorted(menu, key=lines.index)


def test_skeletons_are_dealt_evenly_without_a_scorer_and_by_score_with_one() -> None:
    brief = load_brief(BRIEF)
    skeletons = usable_skeletons(brief)
    values = _values(brief)
    dealt = Counter(_deal(skeletons, 4 * len(skeletons), np.random.default_rng(1), values, None))
    assert set(dealt.values()) == {4}
    offer = _scorer({"w:off": 0.2, "w:first": 0.2, "w:box": 0.2, "f:digit": 0.2})
    steered = Counter(_deal(skeletons, 2000, np.random.default_rng(1), values, offer))
    with_offer = [s for s in skeletons if "{Offer}" in s.headline + s.description]
    without = [s for s in skeletons if s not in with_offer]
    assert with_offer and without
    assert min(steered[s] for s in with_offer) > max(steered[s] for s in without) > 0
    # A scorer that cannot tell the skeletons apart deals them at random, none left out.
    flat = Counter(_deal(skeletons, 2000, np.random.default_rng(1), values, _scorer({})))
    assert min(flat.values()) > 350
