"""Variant rows for the store: validated from a caller's list, or written by the generators.

Both paths produce the same row shape (``Store.insert_variants``), stamped a microsecond
apart so the store lists them in the order they were given.

Variants given by hand start ``active``: the person who listed them has reviewed them.
Generated ones start with the status the caller asks for: ``pending`` (they wait for a
person's approval, see ``CampaignLifecycle.review``) unless the campaign auto-approves.

Variants given by hand pass the same brief filters as generated ones (banned and required
terms, lengths, language, repetition; see ``generators.check_candidate``): a variant that fails
is rejected with its drop reason. A human who insists sets ``override_filters: true`` with an
``override_reason``; the override (reason, who, when, the filter it overrode) is recorded in
the variant's provenance and shown as its ``filter_override``.

Targeting: a variant's ``segments`` are the audience segments it is served to (empty: every
request). A listed variant may name them; a generated one is targeted to the segment it was
written for (``Candidate.segment``, see :meth:`VariantFactory.generate`'s ``segments``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from adloop.optimizer.errors import InvalidRequest

__all__ = [
    "MAX_SEGMENTS_PER_VARIANT",
    "VariantFactory",
    "check_segments",
    "load_brief",
    "public_variant",
    "seed_for",
    "targeting_groups",
]

_MAX_TEXT = 2000
_MAX_REASON = 500
_MAX_SEGMENT = 128
#: Most segments one variant may be targeted to.
MAX_SEGMENTS_PER_VARIANT = 64
_N_PARENTS_PER_SEGMENT = 3  # leaders handed to the generators per segment on a refill
_MANUAL_FIELDS = frozenset(
    {"text", "headline", "description", "override_filters", "override_reason", "segments"}
)


class VariantFactory:
    """Makes ids and variant rows for one engine.

    Parameters
    ----------
    ids:
        Seeded source of campaign and variant ids.
    pool:
        Returns the ``generators.GeneratorPool`` (called only when generating, so the pool
        is built on first use).
    time_budget_s:
        ``EngineConfig.generation_time_budget``: seconds after which the pool stops topping up.
    """

    def __init__(
        self, ids: random.Random, pool: Callable[[], Any], time_budget_s: float | None
    ) -> None:
        self._ids = ids
        self._pool = pool
        self._time_budget_s = time_budget_s

    def new_id(self, prefix: str, n_hex: int = 12) -> str:
        """A fresh random id such as ``c_1f2e3d4c5b6a``."""
        return f"{prefix}{self._ids.getrandbits(4 * n_hex):0{n_hex}x}"

    def generate(
        self,
        campaign_id: str,
        brief: Any,
        n: int,
        *,
        seed: int,
        now: datetime,
        existing_texts: Sequence[str] = (),
        winners: Sequence[Mapping[str, Any]] = (),
        notes: list[str] | None = None,
        status: str = "pending",
        segments: Sequence[str | None] | None = None,
    ) -> tuple[list[dict[str, Any]], Any]:
        """Up to ``n`` new rows from the generator pool, and the pool's result.

        Rows start with ``status`` (``pending``: awaiting review; ``active`` when the campaign
        auto-approves). ``existing_texts`` keep near-duplicates out; ``winners`` are parents for
        recombination (see :func:`seed_for` for a seed that repeats across runs).
        What the pool dropped, and why, is appended to ``notes`` when given.

        With ``segments`` (names from the brief's ``segments``), the ``i``-th of the ``n``
        rows is written for ``segments[i % len(segments)]`` (``Brief.for_segment``) and
        targeted to it (a None entry writes for everyone); each segment's parents are the
        winners it may be shown, best first. An unknown segment raises
        ``generators.BriefError`` naming ``segments``.
        """
        if segments:
            result = self._generate_per_segment(
                brief, n, list(segments), seed, list(existing_texts), winners
            )
        else:
            result = self._pool().generate(
                brief,
                n,
                existing_texts=list(existing_texts),
                winners=list(winners),
                seed=seed,
                time_budget_s=self._time_budget_s,
            )
        if notes is not None:
            notes.extend(result.notes)
            if len(result.candidates) < n:
                notes.append(
                    f"asked for {n} candidates, got {len(result.candidates)}; "
                    f"drops: {dict(result.drop_counts)}"
                )
        rows = [self._candidate_row(campaign_id, c, now, status) for c in result.candidates]
        return _in_order(rows), result

    def _generate_per_segment(
        self,
        brief: Any,
        n: int,
        segments: list[str | None],
        seed: int,
        existing_texts: list[str],
        winners: Sequence[Mapping[str, Any]],
    ) -> Any:
        """One pool call per segment (its share of ``n``), merged into one pool result."""
        from adloop.generators import PoolResult

        wanted: dict[str | None, int] = {}
        for i in range(n):
            segment = segments[i % len(segments)]
            wanted[segment] = wanted.get(segment, 0) + 1
        merged = PoolResult(candidates=[])
        texts = list(existing_texts)
        for segment, count in wanted.items():
            parents = [
                w
                for w in winners
                if segment is None or not w.get("segments") or segment in w["segments"]
            ][:_N_PARENTS_PER_SEGMENT]
            result = self._pool().generate(
                brief,
                count,
                existing_texts=texts,
                winners=parents,
                seed=seed_for(None, f"{seed}:{segment}"),
                time_budget_s=self._time_budget_s,
                segment=segment,
            )
            # Later segments see earlier ones' copy: no two targeted variants are near-copies.
            texts.extend(c.text for c in result.candidates)
            merged.candidates.extend(result.candidates)
            merged.dropped.extend(result.dropped)
            for table, counts in (
                (merged.drop_counts, result.drop_counts),
                (merged.requested, result.requested),
                (merged.accepted, result.accepted),
            ):
                for key, value in counts.items():
                    table[key] = table.get(key, 0) + value
            merged.notes.extend(
                note if note in merged.notes or segment is None else f"{segment}: {note}"
                for note in result.notes
            )
        merged.notes = list(dict.fromkeys(merged.notes))
        return merged

    def manual(
        self,
        campaign_id: str,
        variants: Iterable[Any],
        brief: Any,
        now: datetime,
        where: str,
        *,
        by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows for variants the caller listed (strings or ``{text|headline, description}``).

        ``where`` is the field name errors are reported under (``variants.2.text``); ``by``
        (the tenant) is recorded with any filter override.

        Raises:
            InvalidRequest: a variant is malformed, repeats another, or fails the brief's
                filters without ``override_filters`` (the message gives the drop reason).
        """
        if isinstance(variants, str | bytes) or not isinstance(variants, Iterable):
            raise InvalidRequest(where, "must be a list of variants")
        rows = []
        seen: set[str] = set()
        for i, given in enumerate(variants):
            field = f"{where}.{i}"
            headline, description, text = _manual_fields(given, field)
            segments = check_segments(
                given.get("segments") if isinstance(given, Mapping) else None, f"{field}.segments"
            )
            if text in seen:
                raise InvalidRequest(f"{field}.text", "duplicate text")
            seen.add(text)
            provenance: dict[str, Any] = {"generator": "manual"}
            override = _override(given, field)
            reason = filter_reason(given, headline, description, text, brief)
            if reason is not None and override is None:
                raise InvalidRequest(
                    field,
                    f"variant {text!r} fails the brief's filters: {reason}; rewrite it, or "
                    'keep it anyway with "override_filters": true and an "override_reason"',
                )
            if reason is not None:
                provenance["filter_override"] = {
                    "overrode": reason,
                    "reason": override,
                    "by": by or "unknown",
                    "at": now.isoformat(),
                }
            rows.append(
                self._row(
                    campaign_id,
                    now,
                    headline=headline,
                    description=description,
                    text=text,
                    language=getattr(brief, "language", None),
                    generator="manual",
                    model_version=None,
                    parent_ids=[],
                    provenance=provenance,
                    status="active",
                    segments=segments,
                )
            )
        if not rows:
            raise InvalidRequest(where, "must list at least one variant")
        return _in_order(rows)

    def _candidate_row(
        self, campaign_id: str, candidate: Any, now: datetime, status: str
    ) -> dict[str, Any]:
        return self._row(
            campaign_id,
            now,
            status=status,
            headline=candidate.headline,
            description=candidate.description or "",
            text=candidate.text,
            language=candidate.language,
            generator=candidate.generator,
            model_version=candidate.model_version,
            parent_ids=list(candidate.parent_ids or ()),
            provenance=candidate.to_dict() if hasattr(candidate, "to_dict") else {},
            segments=[candidate.segment] if getattr(candidate, "segment", None) else [],
        )

    def _row(self, campaign_id: str, now: datetime, **fields: Any) -> dict[str, Any]:
        return {
            "variant_id": self.new_id("v_"),
            "campaign_id": campaign_id,
            **fields,
            "created_at": now,
        }


def _manual_fields(given: Any, where: str) -> tuple[str, str, str]:
    """``(headline, description, text)`` of one listed variant, checked."""
    if isinstance(given, str):
        given = {"text": given}
    if not isinstance(given, Mapping):
        raise InvalidRequest(where, "must be an object or a string")
    unknown = set(given) - _MANUAL_FIELDS
    if unknown:
        raise InvalidRequest(f"{where}.{sorted(unknown)[0]}", "unknown field")
    headline = given.get("headline")
    description = given.get("description") or ""
    text = given.get("text")
    for name, value in (("headline", headline), ("description", description), ("text", text)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{where}.{name}", "must be a string")
    if not text:
        if not headline:
            raise InvalidRequest(f"{where}.text", "give 'text' or 'headline'")
        text = f"{headline} — {description}" if description else headline
    headline = headline or text
    text = text.strip()
    if not text or len(text) > _MAX_TEXT:
        raise InvalidRequest(f"{where}.text", f"must be 1..{_MAX_TEXT} characters")
    return headline, description, text


def _override(given: Any, where: str) -> str | None:
    """The reason given with ``override_filters: true``, or None when not overriding."""
    if not isinstance(given, Mapping) or not given.get("override_filters"):
        return None
    if given.get("override_filters") is not True:
        raise InvalidRequest(f"{where}.override_filters", "must be true or false")
    reason = given.get("override_reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > _MAX_REASON:
        raise InvalidRequest(
            f"{where}.override_reason",
            f"say why the filters are overridden (1..{_MAX_REASON} characters); it is recorded",
        )
    return reason.strip()


def filter_reason(given: Any, headline: str, description: str, text: str, brief: Any) -> str | None:
    """Why the brief's filters drop this hand-given variant (reason: detail), or None.

    A variant given as plain ``text`` is one block of copy, so its length is checked against
    the whole ad (headline + description limits) rather than the headline's alone.
    """
    from adloop.generators import Candidate, check_candidate

    if isinstance(given, str) or (isinstance(given, Mapping) and not given.get("headline")):
        channel = brief.channel
        whole = channel.headline_max + channel.description_max
        brief = brief.model_copy(
            update={"channel": channel.model_copy(update={"headline_max": whole})}
        )
        headline, description = text, ""
    reason = check_candidate(Candidate(headline, description, brief.language, "manual"), brief)
    if reason is None:
        return None
    lowered = text.lower()
    if reason == "banned_term":
        terms = [t for t in brief.banned_terms if t.lower() in lowered]
        return f"banned_term (contains {', '.join(map(repr, terms))})"
    if reason == "missing_required_term":
        terms = [t for t in brief.required_terms if t.lower() not in lowered]
        return f"missing_required_term (lacks {', '.join(map(repr, terms))})"
    if reason in ("headline_too_long", "description_too_long"):
        return (
            f"{reason} (limits: headline {brief.channel.headline_max}, description "
            f"{brief.channel.description_max} units)"
        )
    return reason


def check_segments(value: Any, where: str) -> list[str]:
    """A variant's target segments, checked: distinct names (none or ``[]``: every request).

    Raises:
        InvalidRequest: not a list of 1..128-character strings, or more than
            :data:`MAX_SEGMENTS_PER_VARIANT` of them; ``where`` names the field.
    """
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequest(where, 'must be a list of segment names, e.g. ["mobile"]')
    names = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_SEGMENT:
            raise InvalidRequest(
                f"{where}.{i}",
                f"must be a segment name of 1..{_MAX_SEGMENT} characters, exactly as requests "
                "pass it to choose(segment=...)",
            )
        names.append(name)  # as given: requests must name it exactly
    names = list(dict.fromkeys(names))
    if len(names) > MAX_SEGMENTS_PER_VARIANT:
        raise InvalidRequest(
            where, f"at most {MAX_SEGMENTS_PER_VARIANT} segments per variant, got {len(names)}"
        )
    return names


def seed_for(seed: int | None, key: str) -> int:
    """``seed`` if given, else a stable seed derived from ``key``."""
    if seed is not None:
        return seed
    return int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16)


def _in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stamp rows a microsecond apart so the store lists them in the order they were given."""
    for i, row in enumerate(rows):
        row["created_at"] = row["created_at"] + timedelta(microseconds=i)
    return rows


def load_brief(source: Any) -> Any:
    """A ``generators.Brief`` from a dict, JSON/YAML path or brief (raises ``BriefError``)."""
    from adloop.generators import load_brief as load

    return load(source)


def public_variant(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored variant row as the API returns it (no campaign id, timestamps or provenance).

    A variant kept despite the brief's filters also shows its recorded ``filter_override``.
    """
    out = {
        "variant_id": row["variant_id"],
        "text": row["text"],
        "headline": row["headline"],
        "description": row["description"],
        "language": row["language"],
        "generator": row["generator"],
        "model_version": row["model_version"],
        "parent_ids": list(row["parent_ids"]),
        "status": row["status"],
        "segments": list(row.get("segments") or []),
    }
    override = (row.get("provenance") or {}).get("filter_override")
    if override:
        out["filter_override"] = override
    return out


def targeting_groups(variants: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Indices of ``variants`` grouped by their targeting (same segments, in any order).

    Variants compete within a group: they were shown to the same audience, so their counts
    compare (the retire rule and ``probability_best`` use these groups). Groups are listed
    in the order their first variant appears; the untargeted variants form one group.

    Example
    -------
    >>> targeting_groups([{"segments": []}, {"segments": ["a"]}, {}, {"segments": ["a"]}])
    [[0, 2], [1, 3]]
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, variant in enumerate(variants):
        key = tuple(sorted(variant.get("segments") or ()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())
