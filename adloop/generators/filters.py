"""Checks every candidate must pass, each failure with a named reason.

Reasons (the keys of ``PoolResult.drop_counts``):

``empty``                    no headline
``headline_too_long``        headline over ``channel.headline_max`` units
``description_too_long``     description over ``channel.description_max`` units
``banned_term``              contains a banned term (case-insensitive substring)
``missing_required_term``    lacks a required term
``wrong_language``           ``zh`` without enough CJK ideographs, ``en`` not mostly Latin letters
``repetitive``               a word twice in a row, or one word ``max_word_repeats`` times or
                             more ("Aurelle bespoke, bespoke — bespoke"); for Chinese, a
                             two-character word
``not_fluent``               does not read as fluent language: a non-word, an echoed label, an ID,
                             a phrase cut off (:mod:`adloop.generators.fluency`; the brief's
                             own terms count as words)
``near_duplicate``           too similar to a candidate already accepted in this run
``near_duplicate_existing``  too similar to one of the campaign's existing variants

Similarity is the Jaccard index of character n-grams (trigrams for English, bigrams for
Chinese, after lower-casing and dropping punctuation and spaces), so it needs no tokenizer and
works the same for both languages.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from adloop.generators.brief import CJK_RUN, Brief, cjk_share, latin_share
from adloop.generators.candidate import Candidate
from adloop.generators.errors import ConfigError
from adloop.generators.fluency import DEFAULT_MIN_FLUENCY, judge_fluency

__all__ = [
    "DROP_REASONS",
    "FilterSettings",
    "NearDuplicateIndex",
    "brief_terms",
    "candidates_from_drafts",
    "check_candidate",
    "complete_required_terms",
    "is_repetitive",
    "ngrams",
]

DROP_REASONS = (
    "empty",
    "headline_too_long",
    "description_too_long",
    "banned_term",
    "missing_required_term",
    "wrong_language",
    "repetitive",
    "not_fluent",
    "near_duplicate",
    "near_duplicate_existing",
)


@dataclass(frozen=True, kw_only=True)
class FilterSettings:
    """Thresholds for the filters.

    Parameters
    ----------
    max_similarity: candidates whose n-gram Jaccard similarity to a kept text exceeds this are
        near-duplicates (0.75: same template with one slot changed still passes, a copy with
        a word or two swapped does not).
    min_cjk_share: least share of letters that are CJK ideographs in a ``zh`` ad.
    min_latin_share: least share of letters that are Latin in an ``en`` ad.
    max_word_repeats: an ad that uses one word (three letters or more; for Chinese, a pair of
        ideographs) this many times is repetitive. A fine-tuned model that learns a word pays
        can write it over and over ("The bespoke bespoke — Aurelle: It's bespoke."); no
        advertiser would run that copy.
    min_fluency: least :func:`~adloop.generators.fluency.judge_fluency` score an ad needs
        (a share in [0, 1]); None turns the fluency check off. The default was chosen on a
        hand-labelled set (``bench/copy_judge.py`` reports its error).
    """

    max_similarity: float = 0.75
    min_cjk_share: float = 0.4
    min_latin_share: float = 0.9
    max_word_repeats: int = 4
    min_fluency: float | None = DEFAULT_MIN_FLUENCY

    def __post_init__(self) -> None:
        for name in ("max_similarity", "min_cjk_share", "min_latin_share", "min_fluency"):
            value = getattr(self, name)
            if name == "min_fluency" and value is None:
                continue  # the fluency check is off
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if not is_number or not 0.0 <= value <= 1.0:
                hint = " (or None to turn the check off)" if name == "min_fluency" else ""
                raise ConfigError(
                    f"FilterSettings.{name} must be a share in [0, 1]{hint}, got {value!r}"
                )
        if self.max_word_repeats < 2:
            raise ConfigError(
                f"FilterSettings.max_word_repeats must be at least 2, got {self.max_word_repeats!r}"
            )


def _normalise(text: str) -> str:
    kept = [c for c in text.lower() if not unicodedata.category(c).startswith(("P", "Z", "S", "C"))]
    return "".join(kept)


def ngrams(text: str, language: str) -> frozenset[str]:
    """Character n-grams of ``text`` (n=2 for ``zh``, 3 otherwise) after normalisation."""
    n = 2 if language == "zh" else 3
    clean = _normalise(text)
    if len(clean) <= n:
        return frozenset([clean]) if clean else frozenset()
    return frozenset(clean[i : i + n] for i in range(len(clean) - n + 1))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicateIndex:
    """Texts kept so far, answering "is this one too close to any of them?".

    Example
    -------
    >>> index = NearDuplicateIndex("en", max_similarity=0.75)
    >>> index.add("Bespoke rings by Aurelle")
    >>> index.is_near_duplicate("Bespoke Rings, by Aurelle!")
    True
    """

    def __init__(self, language: str, *, max_similarity: float = 0.75) -> None:
        self.language = language
        self.max_similarity = max_similarity
        self._grams: list[frozenset[str]] = []

    def __len__(self) -> int:
        return len(self._grams)

    def add(self, text: str) -> None:
        """Remember ``text``."""
        self._grams.append(ngrams(text, self.language))

    def max_similarity_to(self, text: str) -> float:
        """Highest Jaccard similarity between ``text`` and any remembered text (0 if none)."""
        grams = ngrams(text, self.language)
        return max((_jaccard(grams, other) for other in self._grams), default=0.0)

    def is_near_duplicate(self, text: str) -> bool:
        """True when ``text`` is more similar than allowed to a remembered text."""
        return self.max_similarity_to(text) > self.max_similarity


_TOKEN = re.compile(r"\w+")


def is_repetitive(*parts: str, max_repeats: int = 4) -> bool:
    """True when one word comes twice in a row within a part (a headline, a description), or
    ``max_repeats`` times in all the parts together.

    Words are runs of three or more letters, case-insensitive; in a run of CJK ideographs,
    every pair of neighbouring ideographs counts as a word (no tokenizer needed).

    >>> is_repetitive("Bespoke rings — book a bespoke fitting"), is_repetitive("rings rings")
    (False, True)
    """
    counts: dict[str, int] = {}
    for part in parts:
        tokens = [t for t in _TOKEN.findall(part.lower()) if not CJK_RUN.fullmatch(t)]
        if any(a == b and len(a) >= 3 for a, b in zip(tokens, tokens[1:], strict=False)):
            return True
        for word in tokens:
            if len(word) >= 3 and not any(c.isdigit() for c in word):
                counts[word] = counts.get(word, 0) + 1
        for run in CJK_RUN.findall(part):
            if any(run[i : i + 2] == run[i + 2 : i + 4] for i in range(len(run) - 3)):
                return True
            for i in range(len(run) - 1):
                counts[run[i : i + 2]] = counts.get(run[i : i + 2], 0) + 1
    return any(n >= max_repeats for n in counts.values())


def brief_terms(brief: Brief) -> tuple[str, ...]:
    """The brief's own words, real words for its ads even when no lexicon has them: brand,
    product, keywords, required terms, offer, call to action, segments and description."""
    fields = (brief.brand, brief.product, brief.offer, brief.call_to_action, brief.description)
    terms = (*fields, *brief.keywords, *brief.required_terms, *brief.segments)
    return tuple(dict.fromkeys(t for t in terms if t))


def _contains(text: str, term: str) -> bool:
    return term.lower() in text.lower()


def check_candidate(
    candidate: Candidate,
    brief: Brief,
    *,
    settings: FilterSettings | None = None,
    accepted: NearDuplicateIndex | None = None,
    existing: NearDuplicateIndex | None = None,
) -> str | None:
    """The first reason ``candidate`` fails, or None when it passes every filter.

    Checks run cheapest first: empty, lengths, banned and required terms, language,
    repetition, fluency (its lexicons load on first use), then similarity to ``existing``
    (the campaign's variants) and to ``accepted`` (this run's).

    Example
    -------
    >>> brief = Brief(product="rings", language="en", banned_terms=["cheap"])
    >>> check_candidate(Candidate("Cheap rings", "", "en", "template"), brief)
    'banned_term'
    """
    settings = settings or FilterSettings()
    channel = brief.channel
    headline, description, text = candidate.headline, candidate.description, candidate.text
    if not headline.strip():
        return "empty"
    if channel.length(headline) > channel.headline_max:
        return "headline_too_long"
    if channel.length(description) > channel.description_max:
        return "description_too_long"
    if any(_contains(text, term) for term in brief.banned_terms):
        return "banned_term"
    if not all(_contains(text, term) for term in brief.required_terms):
        return "missing_required_term"
    if brief.language == "zh":
        if cjk_share(text) < settings.min_cjk_share:
            return "wrong_language"
    elif latin_share(text) < settings.min_latin_share:
        return "wrong_language"
    if is_repetitive(headline, description, max_repeats=settings.max_word_repeats):
        return "repetitive"
    if settings.min_fluency is not None:
        fluency = judge_fluency(text, brief.language, known_terms=brief_terms(brief))
        if fluency.score < settings.min_fluency:
            return "not_fluent"
    if existing is not None and existing.is_near_duplicate(text):
        return "near_duplicate_existing"
    if accepted is not None and accepted.is_near_duplicate(text):
        return "near_duplicate"
    return None


def complete_required_terms(headline: str, description: str, brief: Brief) -> tuple[str, str]:
    """Add any missing required term where it fits: before the description, else after the headline.

    Generators call this so that copy which is otherwise good is not lost for want of, say,
    the brand name. A term that fits nowhere is left out and the filter drops the candidate.

    Example
    -------
    >>> brief = Brief(product="rings", language="en", required_terms=["Aurelle"])
    >>> complete_required_terms("Bespoke rings", "Book a fitting.", brief)
    ('Bespoke rings', 'Aurelle: Book a fitting.')
    """
    channel = brief.channel
    colon = "：" if brief.language == "zh" else ": "
    bar = "｜" if brief.language == "zh" else " | "
    for term in brief.required_terms:
        if _contains(headline, term) or _contains(description, term):
            continue
        if description:
            candidate = f"{term}{colon}{description}"
            if channel.length(candidate) <= channel.description_max:
                description = candidate
                continue
        candidate = f"{headline}{bar}{term}"
        if channel.length(candidate) <= channel.headline_max:
            headline = candidate
    return headline, description


def candidates_from_drafts(
    drafts: Iterable[tuple[str, str]],
    brief: Brief,
    generator: str,
    *,
    seed: int,
    model_version: str | None,
) -> list[Candidate]:
    """Model-written ``(headline, description)`` drafts as candidates, in order, each with the
    brief's missing required terms added where they fit (:func:`complete_required_terms`)."""
    candidates = []
    for headline, description in drafts:
        if headline:
            headline, description = complete_required_terms(headline, description, brief)
        candidates.append(
            Candidate.for_brief(
                brief, headline, description, generator, seed=seed, model_version=model_version
            )
        )
    return candidates


def drop_reasons_in(counts: Iterable[str]) -> dict[str, int]:
    """Count reasons, in the documented order (helper for reports)."""
    result: dict[str, int] = {}
    for reason in counts:
        result[reason] = result.get(reason, 0) + 1
    return {r: result[r] for r in DROP_REASONS if r in result} | {
        r: n for r, n in result.items() if r not in DROP_REASONS
    }
