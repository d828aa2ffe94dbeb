"""A candidate ad and its provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adloop.generators.brief import Brief

__all__ = ["Candidate", "TEXT_SEPARATOR"]

# Joins headline and description in ``Candidate.text``; the em dash reads well in both languages.
TEXT_SEPARATOR = " — "


@dataclass(frozen=True)
class Candidate:
    """One generated ad with where it came from.

    Parameters
    ----------
    headline, description: the ad's parts (description may be empty).
    language: ``en`` or ``zh``.
    generator: ``template``, ``lm`` or ``recombine``.
    model_version: the LM version that wrote it (None for non-LM generators).
    prompt_hash: hash of the brief's prompt (:meth:`Brief.prompt_hash`).
    parent_ids: variant ids it was recombined from.
    seed: the seed the generator ran with.
    segment: the audience segment it was written for (``Brief.for_segment``); None when
        written for the whole audience. The optimizer serves it to that segment only.

    Example
    -------
    >>> Candidate("Bespoke Rings", "Book a fitting.", "en", "template").text
    'Bespoke Rings — Book a fitting.'
    """

    headline: str
    description: str
    language: str
    generator: str
    model_version: str | None = None
    prompt_hash: str = ""
    parent_ids: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    segment: str | None = None

    @classmethod
    def for_brief(
        cls,
        brief: Brief,
        headline: str,
        description: str,
        generator: str,
        *,
        seed: int | None,
        model_version: str | None = None,
        parent_ids: tuple[str, ...] = (),
    ) -> Candidate:
        """A candidate written for ``brief``, recording its language, prompt hash and the
        segment the brief was narrowed to (if any)."""
        return cls(
            headline,
            description,
            brief.language,
            generator,
            model_version=model_version,
            prompt_hash=brief.prompt_hash(),
            parent_ids=tuple(parent_ids),
            seed=seed,
            segment=brief.target_segment,
        )

    @property
    def text(self) -> str:
        """``headline — description``, or the headline alone when there is no description."""
        if self.description:
            return f"{self.headline}{TEXT_SEPARATOR}{self.description}"
        return self.headline

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with ``text`` and a ``provenance`` block included."""
        data = asdict(self)
        data["parent_ids"] = list(self.parent_ids)
        data["text"] = self.text
        data["provenance"] = {
            "generator": self.generator,
            "model_version": self.model_version,
            "prompt_hash": self.prompt_hash,
            "parent_ids": list(self.parent_ids),
            "seed": self.seed,
        }
        return data
