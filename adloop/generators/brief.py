"""The campaign brief: what to advertise, to whom, in which language, within which limits.

A :class:`Brief` is a frozen pydantic model loaded from YAML or JSON by :func:`load_brief`.
It carries the ad channel's length limits (:class:`Channel`) and builds the one prompt that
the language-model generator samples from and that retraining trains on (:meth:`Brief.prompt`).

Lengths are counted as the channel counts them: Google Ads, for instance, counts each
double-width character (Chinese, Japanese, Korean, full-width punctuation) as 2 towards its
30-character headline and 90-character description limits, so ``cjk_width=2`` there and a
Chinese headline holds at most 15 characters.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from adloop.generators.errors import BriefError

__all__ = [
    "CJK_RUN",
    "Brief",
    "Channel",
    "GeneratorShare",
    "KNOWN_GENERATORS",
    "LANGUAGES",
    "cjk_share",
    "is_wide",
    "latin_share",
    "load_brief",
]

LANGUAGES = ("en", "zh")
_LANGUAGE_ALIASES = {
    "en": "en",
    "en-us": "en",
    "en-gb": "en",
    "english": "en",
    "zh": "zh",
    "zh-cn": "zh",
    "zh-hans": "zh",
    "zh-sg": "zh",
    "chinese": "zh",
    "中文": "zh",
}
# Shortest headline limit in which a meaningful ad fits (a brand name, a two-word phrase).
MIN_HEADLINE_UNITS = 5


def is_wide(char: str) -> bool:
    """True for a double-width character (CJK ideographs, kana, hangul, full-width forms)."""
    return unicodedata.east_asian_width(char) in ("W", "F")


#: A run of CJK ideographs: unified, extension A, compatibility, extensions B-F and supplement.
#: The one definition of "Chinese character" for the filters, the scorer and the gate.
CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]+")


def cjk_share(text: str) -> float:
    """Share of the letters in ``text`` that are CJK ideographs (0 when there are no letters)."""
    letters = sum(c.isalpha() for c in text)
    if not letters:
        return 0.0
    return sum(len(run) for run in CJK_RUN.findall(text)) / letters


def latin_share(text: str) -> float:
    """Share of the letters in ``text`` that are Latin script (0 when there are no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum("LATIN" in unicodedata.name(c, "") for c in letters) / len(letters)


class Channel(BaseModel):
    """An ad channel and its length limits, counted the way the channel counts them.

    Parameters
    ----------
    name: channel name, for reports (e.g. ``google_search``).
    headline_max: most length units a headline may use.
    description_max: most length units a description may use; 0 for headline-only channels.
    cjk_width: units one double-width character (Chinese etc.) counts for; Google Ads counts 2.

    Example
    -------
    >>> Channel(name="google_search", headline_max=30, description_max=90).length("定制婚戒")
    8
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("google_search", description="Channel name, for reports.")
    headline_max: int = Field(30, description="Most length units in a headline.")
    description_max: int = Field(90, ge=0, description="Most length units in a description.")
    cjk_width: Literal[1, 2] = Field(
        2, description="Units one double-width (CJK) character counts for; Google Ads counts 2."
    )

    # Validators raise ValueError on purpose: that is pydantic's protocol; pydantic wraps it in
    # a ValidationError that names the field, and load_brief turns that into a BriefError.
    @field_validator("headline_max")
    @classmethod
    def _headline_fits_something(cls, value: int) -> int:
        if value < MIN_HEADLINE_UNITS:
            raise ValueError(
                f"headline limit {value} is below {MIN_HEADLINE_UNITS}; no ad text can meet it"
            )
        return value

    def length(self, text: str) -> int:
        """Length of ``text`` in channel units (a double-width character counts ``cjk_width``)."""
        if self.cjk_width == 1:
            return len(text)
        return sum(self.cjk_width if is_wide(c) else 1 for c in text)


#: Every generator a pool or a brief's ``generators`` mix may name, cheap ones first.
KNOWN_GENERATORS = ("template", "recombine", "lm", "openai")


class GeneratorShare(BaseModel):
    """One generator of a brief's ``generators`` mix and its relative share of the candidates.

    Example
    -------
    >>> GeneratorShare(name="lm", share=2.0).share
    2.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., description="Generator: template, recombine, lm or openai.")
    share: float = Field(1.0, ge=0, description="Relative share of the candidates; 0: off.")


def _generator_mix(value: Any) -> tuple[GeneratorShare, ...]:
    """A brief's ``generators`` value as shares: a list of names (``[template, lm]``, or the
    string ``"template, lm"``), a mapping ``{template: 1, lm: 2}``, or a list mixing names,
    ``{lm: 2}`` and ``{name: lm, share: 2}`` items."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = []
        for item in value:
            if isinstance(item, GeneratorShare):
                pairs.append((item.name, item.share))
            elif isinstance(item, str):
                pairs.append((item, 1.0))
            elif isinstance(item, Mapping) and "name" in item and set(item) <= {"name", "share"}:
                pairs.append((item["name"], item.get("share", 1.0)))
            elif isinstance(item, Mapping) and len(item) == 1:
                pairs.append(next(iter(item.items())))
            else:
                raise ValueError(
                    f"expected a generator name, {{name: share}} or {{name, share}}, found {item!r}"
                )
    else:
        raise ValueError(f"expected a list of generator names, got {value!r}")
    mix: dict[str, float] = {}
    for name, share in pairs:
        name = str(name).strip().lower()
        if not name:
            continue
        if name not in KNOWN_GENERATORS:
            raise ValueError(f"unknown generator {name!r} (use {', '.join(KNOWN_GENERATORS)})")
        if name in mix:
            raise ValueError(f"{name!r} is listed twice; list each generator once")
        if isinstance(share, bool) or not isinstance(share, int | float) or not share >= 0:
            raise ValueError(
                f"the share of {name!r} must be a number >= 0 (0 turns it off), got {share!r}"
            )
        mix[name] = float(share)
    if mix and not any(mix.values()):
        raise ValueError("every share is 0; give at least one generator a share above 0")
    return tuple(GeneratorShare(name=name, share=share) for name, share in mix.items())


class Brief(BaseModel):
    """What the ads are for; every generator reads only this.

    Parameters
    ----------
    product: what is advertised (required).
    language: ``en`` or ``zh`` (required); ``zh-CN``, ``English`` etc. are normalised.
    brand, description, tone, offer, call_to_action: free text, may be empty.
    segments: audience segments; keywords: search keywords or key phrases.
    channel: the :class:`Channel` and its limits.
    banned_terms: terms no candidate may contain (case-insensitive substring).
    required_terms: terms every candidate must contain (headline or description).
    generators: which generators write this brief's copy, and in what proportion, when the
        caller (``adloop generate`` without ``--generators``, a campaign's refills) leaves the
        choice to the pool: names from ``template``, ``recombine``, ``lm``, ``openai``
        (``generators: [template, openai]``), optionally with relative shares
        (``generators: {template: 1, openai: 3}``; 0 turns one off). Empty: the pool's
        default. Not part of the prompt.

    Example
    -------
    >>> brief = Brief(product="bespoke rings", brand="Aurelle", language="en")
    >>> brief.prompt().startswith("Write one search ad")
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    product: str = Field(..., min_length=1, description="What is advertised.")
    language: str = Field(..., description="Language of the ads: 'en' or 'zh'.")
    brand: str = Field("", description="Brand name.")
    description: str = Field("", description="One or two sentences about the product.")
    segments: tuple[str, ...] = Field((), description="Audience segments.")
    keywords: tuple[str, ...] = Field((), description="Keywords or key phrases.")
    tone: str = Field("", description="Tone of voice, e.g. 'refined, warm'.")
    offer: str = Field("", description="The offer, e.g. 'free design consultation'.")
    call_to_action: str = Field("", description="The call to action, e.g. 'Book now'.")
    channel: Channel = Field(default_factory=Channel, description="Channel and its limits.")
    banned_terms: tuple[str, ...] = Field((), description="Terms no ad may contain.")
    required_terms: tuple[str, ...] = Field((), description="Terms every ad must contain.")
    generators: tuple[GeneratorShare, ...] = Field(
        (), description="Generator mix for this brief's copy (default: the pool's)."
    )
    # Set only by for_segment: a private attribute, so a narrowed brief dumps (and stores)
    # exactly like the brief it came from, while its prompt and candidates know the segment.
    _target_segment: str | None = PrivateAttr(None)

    # ValueError, as pydantic expects from a validator (see Channel above).
    @field_validator("language", mode="before")
    @classmethod
    def _known_language(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"language must be a string, got {value!r}")
        normalised = _LANGUAGE_ALIASES.get(value.strip().lower())
        if normalised is None:
            raise ValueError(f"unknown language {value!r} (use one of {', '.join(LANGUAGES)})")
        return normalised

    @field_validator("segments", "keywords", "banned_terms", "required_terms", mode="before")
    @classmethod
    def _list_of_strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            cleaned = []
            for item in value:
                if not isinstance(item, str):
                    raise ValueError(f"expected a list of strings, found {item!r}")
                if item.strip():
                    cleaned.append(item.strip())
            return tuple(dict.fromkeys(cleaned))
        return value

    @field_validator("generators", mode="before")
    @classmethod
    def _known_generators(cls, value: Any) -> tuple[GeneratorShare, ...]:
        return _generator_mix(value)

    @model_validator(mode="after")
    def _satisfiable(self) -> Brief:
        channel = self.channel
        longest = max(channel.headline_max, channel.description_max)
        for term in self.required_terms:
            if channel.length(term) > longest:
                raise ValueError(
                    f"required_terms: {term!r} is {channel.length(term)} units long but the "
                    f"longest field allows {longest}; no ad text can meet the limits"
                )
        total = sum(channel.length(t) for t in self.required_terms) + max(
            len(self.required_terms) - 1, 0
        )
        if total > channel.headline_max + channel.description_max:
            raise ValueError(
                f"required_terms: together {total} units, more than headline + description "
                f"({channel.headline_max + channel.description_max}); no ad text can meet them"
            )
        banned = [b.lower() for b in self.banned_terms]
        for term in self.required_terms:
            clash = [b for b in banned if b in term.lower()]
            if clash:
                raise ValueError(
                    f"required_terms: {term!r} contains the banned term {clash[0]!r}; "
                    "no ad can both contain and avoid it"
                )
        return self

    # ------------------------------------------------------------------ segments
    @property
    def target_segment(self) -> str | None:
        """The segment this brief was narrowed to by :meth:`for_segment`; None for the whole
        audience."""
        return self._target_segment

    def for_segment(self, segment: str) -> Brief:
        """The same brief narrowed to one of its ``segments``: copy written from it speaks
        to that segment.

        The narrowed brief lists only ``segment`` under ``segments``; its prompt asks for an
        ad written for that audience, the template grammar puts the segment's words in every
        description, and every candidate written from it records ``segment``
        (``Candidate.segment``), which the optimizer turns into a variant targeted to it.

        Raises :class:`~adloop.generators.errors.BriefError` naming ``segments`` when the
        brief has no such segment (the message lists the ones it has).

        Example
        -------
        >>> brief = Brief(product="rings", language="en", segments=["brides", "gift buyers"])
        >>> narrowed = brief.for_segment("brides")
        >>> narrowed.segments, narrowed.target_segment
        (('brides',), 'brides')
        """
        name = segment.strip() if isinstance(segment, str) else segment
        if name not in self.segments:
            if not self.segments:
                raise BriefError(
                    "segments",
                    f"the brief lists no segments, so no copy can be written for {segment!r}; "
                    "add the audience segments to the brief (segments: [...])",
                )
            raise BriefError(
                "segments",
                f"unknown segment {segment!r}; the brief's segments are "
                f"{', '.join(map(repr, self.segments))}",
            )
        narrowed = self.model_copy(update={"segments": (name,)})
        narrowed._target_segment = name
        return narrowed

    # ------------------------------------------------------------------ prompt
    def prompt(self) -> str:
        """The instruction the language model completes; stable and deterministic.

        The LM generator wraps it in the model's chat template and lets the model write
        ``Headline: ...`` / ``Description: ...`` (see :func:`.lm.format_completion`);
        retraining uses exactly this text as the prompt for winning copy.
        """
        channel = self.channel
        language = "English" if self.language == "en" else "Simplified Chinese (简体中文)"
        lines = [
            f"Write one search ad in {language}.",
            f"Product: {self.product}",
        ]
        fields: list[tuple[str, str | tuple[str, ...]]] = [
            ("Brand", self.brand),
            ("About", self.description),
            ("Audience", self.segments),
            ("Keywords", self.keywords),
            ("Tone", self.tone),
            ("Offer", self.offer),
            ("Call to action", self.call_to_action),
            ("Must include", self.required_terms),
            ("Never use", self.banned_terms),
        ]
        for label, value in fields:
            # Empty fields are left out so the prompt only states what the brief says.
            if value:
                text = value if isinstance(value, str) else ", ".join(value)
                lines.append(f"{label}: {text}")
        if self._target_segment is not None:
            lines.append(f"Write for {self._target_segment} only: speak to what they care about.")
        if self.language == "zh" and channel.cjk_width == 2:
            limits = (
                f"Headline at most {channel.headline_max // 2} Chinese characters, "
                f"description at most {channel.description_max // 2} Chinese characters."
            )
        else:
            # Small models follow word counts better than character counts.
            limits = (
                f"Headline at most {channel.headline_max} characters "
                f"(about {max(channel.headline_max // 7, 1)} words), "
                f"description at most {channel.description_max} characters "
                f"(about {max(channel.description_max // 7, 1)} words)."
            )
        lines.append(limits)
        if channel.description_max > 0:
            lines.append(
                "Reply with two lines: first 'Headline:' and the headline, then "
                "'Description:' and the description."
            )
        else:
            lines.append("Reply with one line: 'Headline:' and the headline.")
        return "\n".join(lines)

    def prompt_hash(self) -> str:
        """Short SHA-256 of :meth:`prompt`, recorded on every candidate as provenance."""
        return hashlib.sha256(self.prompt().encode("utf-8")).hexdigest()[:16]


def _error_field(error: Mapping[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p != "__root__"]
    message = str(error.get("msg", ""))
    # Model-level checks name their field at the front of the message.
    if not parts and ":" in message:
        head = message.removeprefix("Value error, ").split(":", 1)[0]
        if head.replace("_", "").replace(".", "").isalnum():
            return head
    return ".".join(parts) or "brief"


def load_brief(source: str | Path | Mapping[str, Any] | Brief) -> Brief:
    """Load and check a brief from a YAML/JSON file, a mapping, or pass a :class:`Brief` through.

    Raises :class:`~adloop.generators.errors.BriefError` naming the bad field (``product``,
    ``language``, ``channel.headline_max``, ...) and what is wrong with it.

    Example
    -------
    >>> load_brief({"product": "rings", "language": "en"}).language
    'en'
    """
    if isinstance(source, Brief):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise BriefError("brief", f"no brief file at {path}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml  # YAML is a superset of JSON, so this also reads .json-like files

                data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad brief file
            raise BriefError("brief", f"{path} is not valid YAML/JSON: {exc}") from exc
    else:
        data = source
    if not isinstance(data, Mapping):
        raise BriefError("brief", f"expected a mapping of fields, got {type(data).__name__}")
    try:
        return Brief.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _error_field(first)
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if message.startswith(f"{field}: "):
            message = message[len(field) + 2 :]
        if first.get("type") == "missing":
            message = "field required"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field (known: {', '.join(Brief.model_fields)})"
        raise BriefError(field, message) from exc
