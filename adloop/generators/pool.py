"""The generator pool: asks each generator for a share, filters, tops up, records why.

:meth:`GeneratorPool.generate` works in rounds. In each, every usable generator gets a quota
(its share of what is still needed) and is asked for ``oversample`` times that many, since
the filters drop some; each candidate goes through :func:`adloop.generators.filters.check_candidate`
and at most the quota is accepted from each generator. When a generator falls short of its
quota, candidates that passed beyond other generators' quotas fill the gap. The next round
asks for what is still missing, with shares shifted towards the generators whose candidates
pass. It stops when ``n`` pass, the request budget or time budget is spent, the round limit is
reached or every generator is exhausted. It never loops forever and never
raises for lack of a model when left to pick its generators: without an installed LM (or
without torch and transformers) it writes with the other generators and says so once in
``PoolResult.notes``. A generator asked for by name that cannot run is an error
(:class:`MissingDependencyError`, :class:`ModelNotFoundError`), and a generator that raises
while writing stops the call with :class:`GenerationFailedError` naming it: a broken generator
is a fault to fix, never a quietly smaller result.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adloop.generators.brief import KNOWN_GENERATORS, Brief, load_brief
from adloop.generators.candidate import Candidate
from adloop.generators.errors import (
    ConfigError,
    GenerationFailedError,
    MissingDependencyError,
    ModelNotFoundError,
)
from adloop.generators.filters import (
    FilterSettings,
    NearDuplicateIndex,
    check_candidate,
    drop_reasons_in,
)
from adloop.generators.lm import LMGenerator
from adloop.generators.models import resolve_model
from adloop.generators.openai_chat import OpenAIChatGenerator
from adloop.generators.recombine import RecombinationGenerator
from adloop.generators.templates import TemplateGenerator

__all__ = ["GENERATOR_NAMES", "Generator", "GeneratorPool", "PoolResult"]

# Cheap generators first: a slow language model then cannot starve them of a time budget.
GENERATOR_NAMES = ("template", "recombine", "lm")


class Generator(Protocol):
    """What the pool needs from a generator: a ``name`` and a seeded ``generate``."""

    name: str

    def generate(
        self, brief: Brief, n: int, *, seed: int = 0, winners: Sequence[dict] = ()
    ) -> list[Candidate]: ...


@dataclass
class PoolResult:
    """What one :meth:`GeneratorPool.generate` call produced.

    ``candidates`` passed every filter (at most ``n``); ``dropped`` pairs each rejected
    candidate with its reason; ``drop_counts`` counts reasons; ``notes`` are messages for the
    user (missing model, shortfall and why); ``requested``/``accepted`` count per generator.
    """

    candidates: list[Candidate]
    dropped: list[tuple[Candidate, str]] = field(default_factory=list)
    drop_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    requested: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (dropped candidates as text + reason)."""
        return {
            "candidates": [c.to_dict() for c in self.candidates],
            "dropped": [
                {"text": c.text, "generator": c.generator, "reason": r} for c, r in self.dropped
            ],
            "drop_counts": dict(self.drop_counts),
            "notes": list(self.notes),
            "requested": dict(self.requested),
            "accepted": dict(self.accepted),
        }


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class GeneratorPool:
    """Several generators behind one ``generate`` call.

    Parameters
    ----------
    generators: generator objects or names from ``template``, ``lm``, ``recombine``,
        ``openai`` (a served model, :class:`OpenAIChatGenerator`); None for the first three
        (``lm`` only when a model is installed), or for the brief's own ``generators`` mix
        when a brief names one (:meth:`generate`).
    model_dir: the LM directory for ``lm``; None uses the default model when installed. An
        explicit directory that is missing or not a causal LM raises ModelNotFoundError.
    filter_settings: similarity and language thresholds.
    shares: relative share of candidates per generator name (default equal).
    max_rounds: most top-up rounds per call.
    oversample: how many candidates to ask for per one still needed (filters drop some).
    lm_options: keyword arguments for :class:`LMGenerator` (temperature, top_p, batch_size...).
    openai_options: keyword arguments for :class:`OpenAIChatGenerator` (base_url, model,
        api_key, temperature...; unset ones come from the environment).

    Example
    -------
    >>> pool = GeneratorPool(["template"])
    >>> brief = Brief(product="bespoke rings", brand="Aurelle", language="en")
    >>> len(pool.generate(brief, 3, seed=0).candidates)
    3
    """

    def __init__(
        self,
        generators: Sequence[str | Generator] | None = None,
        *,
        model_dir: str | Path | None = None,
        filter_settings: FilterSettings | None = None,
        shares: Mapping[str, float] | None = None,
        max_rounds: int = 6,
        oversample: float = 1.5,
        lm_options: Mapping[str, Any] | None = None,
        openai_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_rounds < 1:
            raise ConfigError(f"GeneratorPool max_rounds must be >= 1, got {max_rounds!r}")
        if oversample < 1:
            raise ConfigError(
                f"GeneratorPool oversample must be >= 1 (1 asks for exactly n), got {oversample!r}"
            )
        for name, share in (shares or {}).items():
            if not share >= 0:
                raise ConfigError(
                    f"GeneratorPool shares[{name!r}] must be >= 0 (0 turns it off), got {share!r}"
                )
        self.filter_settings = filter_settings or FilterSettings()
        self.shares = dict(shares or {})
        self.max_rounds = max_rounds
        self.oversample = oversample
        self._explicit = generators is not None
        self._setup_notes: list[str] = []
        self._lm_missing = ""  # why the LM is left out, when it is
        self._model_dir = model_dir
        self._lm_options = dict(lm_options or {})
        self._openai_options = dict(openai_options or {})
        self._mix_generators: dict[str, Generator | None] = {}  # built for briefs' mixes
        self._mix_lock = threading.Lock()
        self.generators: list[Generator] = []
        for item in generators if generators is not None else GENERATOR_NAMES:
            generator = self._build(item) if isinstance(item, str) else item
            if generator is not None:
                self.generators.append(generator)
        if not self.generators:
            raise ConfigError("generators: no usable generator (add 'template')")
        if self._lm_missing:
            plural = "s" if len(self.names) > 1 else ""
            self._setup_notes.append(
                f"{self._lm_missing}, so candidates come from the "
                f"{' and '.join(self.names)} generator{plural}"
            )

    def _build(self, name: str) -> Generator | None:
        """The generator called ``name``; None for the LM when it is left out (see _make_lm)."""
        if name == "template":
            return TemplateGenerator()
        if name == "recombine":
            return RecombinationGenerator()
        if name == "lm":
            return self._make_lm(self._model_dir, dict(self._lm_options))
        if name == "openai":
            return OpenAIChatGenerator(**self._openai_options)
        raise ConfigError(
            f"generators: unknown generator {name!r} (use {', '.join(KNOWN_GENERATORS)})"
        )

    def _mix(self, brief: Brief) -> tuple[list[Generator], dict[str, float], list[str]]:
        """The generators, shares and notes for one call: the brief's ``generators`` mix when it
        names one and the pool was not given generators, else the pool's own.

        A generator of the mix the pool lacks is built once and kept (the LM left out for want
        of a model is noted, as when the pool picks its own); one that cannot be configured
        (``openai`` without a base URL) raises :class:`ConfigError`.
        """
        if self._explicit or not brief.generators:
            return list(self.generators), self.shares, list(self._setup_notes)
        shares = {item.name: item.share for item in brief.generators if item.share > 0}
        chosen: list[Generator] = []
        notes: list[str] = []
        for name in sorted(shares, key=KNOWN_GENERATORS.index):  # cheap ones first
            generator = next((g for g in self.generators if g.name == name), None)
            if generator is None:
                with self._mix_lock:
                    if name not in self._mix_generators:
                        self._mix_generators[name] = self._build(name)
                    generator = self._mix_generators[name]
            if generator is None:
                notes.append(f"the brief's generators name {name!r}, but {self._lm_missing}")
            else:
                chosen.append(generator)
        if not chosen:
            raise ConfigError(
                "generators: none of the brief's generators can run (see the note above); "
                "add 'template' to the brief's generators"
            )
        return chosen, shares, notes

    def _make_lm(self, model_dir: str | Path | None, options: dict[str, Any]) -> LMGenerator | None:
        """The LM generator, or None (and a note) when no model is installed; without torch or
        transformers, None too when the pool picks its own generators, an error when asked."""
        try:
            if model_dir is not None:
                return LMGenerator(model_dir, **options)  # explicit: a bad directory is an error
            try:
                return LMGenerator(resolve_model(None), **options)
            except ModelNotFoundError:
                self._lm_missing = (
                    "no language model installed (add one with `adloop models pull smollm2`)"
                )
                return None
        except MissingDependencyError as exc:
            if self._explicit:
                raise
            self._lm_missing = f"the lm generator is off ({exc})"
            return None

    @property
    def names(self) -> list[str]:
        """Names of the generators in use."""
        return [g.name for g in self.generators]

    @property
    def model_version(self) -> str | None:
        """Version of the LM in use, or None without one."""
        for generator in self.generators:
            version = getattr(generator, "model_version", None)
            if version:
                return str(version)
        return None

    def __repr__(self) -> str:
        return f"GeneratorPool({self.names!r}, max_rounds={self.max_rounds})"

    def generate(
        self,
        brief: Brief | Mapping[str, Any],
        n: int,
        *,
        existing_texts: Iterable[str] = (),
        winners: Sequence[dict] = (),
        seed: int = 0,
        budget: int | None = None,
        time_budget_s: float | None = None,
        segment: str | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> PoolResult:
        """Up to ``n`` candidates that pass every filter, with the reasons for the rest.

        Parameters
        ----------
        brief: the brief (or a mapping checked by :func:`load_brief`).
        n: candidates wanted.
        existing_texts: the campaign's current variants' texts; near-copies are dropped.
        winners: dicts with ``headline``/``description`` (or ``text``) and ``variant_id`` for
            the recombination generator.
        seed: base seed; each generator and round gets its own seed derived from it.
        budget: most candidates to request from generators in total (default ``10 n + 20``).
        time_budget_s: ask no further generator once this many seconds have passed (a call
            already running finishes; the language model runs last in each round).
        segment: write for this one of the brief's segments (:meth:`Brief.for_segment`; an
            unknown one raises BriefError naming ``segments``); every candidate then records
            it in ``Candidate.segment``. A brief already narrowed needs none.
        progress: called as ``progress(passed, n, what)`` before each generator call (``what``
            says which generator writes how many) and after its batch is filtered.
        """
        brief = load_brief(brief)
        if segment is not None:
            brief = brief.for_segment(segment)
        # Every candidate records the brief's segment, whichever generator wrote it.
        target_segment = brief.target_segment
        if n < 0:
            raise ConfigError(f"GeneratorPool.generate n must be >= 0, got {n!r}")
        budget = 10 * n + 20 if budget is None else budget
        generators, shares, notes = self._mix(brief)  # the brief's mix, or the pool's own
        result = PoolResult(candidates=[], notes=notes)
        if n == 0:
            return result
        # (position, generator): the position seeds it, and stays valid if another thread swaps
        # a generator in ``self.generators`` (a newly promoted model) during this call.
        active = [
            (position, g)
            for position, g in enumerate(generators)
            if g.name != "recombine" or winners
        ]
        named = self._explicit or bool(brief.generators)
        if named and any(g.name == "recombine" for g in generators) and not winners:
            result.notes.append("recombine: no winners given yet, so it wrote nothing")
        existing = NearDuplicateIndex(
            brief.language, max_similarity=self.filter_settings.max_similarity
        )
        for text in existing_texts:
            existing.add(text)
        kept = NearDuplicateIndex(
            brief.language, max_similarity=self.filter_settings.max_similarity
        )
        requested = {g.name: 0 for _, g in active}
        passed = {g.name: 0 for _, g in active}
        dropped_reasons: list[str] = []
        reserve: list[Candidate] = []

        def check(candidate: Candidate) -> str | None:
            return check_candidate(
                candidate, brief, settings=self.filter_settings, accepted=kept, existing=existing
            )

        def accept(candidate: Candidate) -> None:
            kept.add(candidate.text)
            result.candidates.append(candidate)
            passed[candidate.generator] = passed.get(candidate.generator, 0) + 1

        def drop(candidate: Candidate, reason: str) -> None:
            result.dropped.append((candidate, reason))
            dropped_reasons.append(reason)

        started = time.monotonic()
        spent = 0
        out_of_time = False
        for round_index in range(self.max_rounds):
            need = n - len(result.candidates)
            if need <= 0 or not active or spent >= budget:
                break
            weights = np.array(
                [
                    shares.get(g.name, 1.0) * (passed[g.name] + 1) / (requested[g.name] + 2)
                    if round_index
                    else shares.get(g.name, 1.0)
                    for _, g in active
                ],
                dtype=float,
            )
            if weights.sum() <= 0:
                weights = np.ones(len(active))
            weights /= weights.sum()
            exhausted: list[int] = []
            for index, (position, generator) in enumerate(active):
                if len(result.candidates) >= n or spent >= budget:
                    break
                over_time = time_budget_s is not None and time.monotonic() - started > time_budget_s
                if over_time and (round_index or index):  # the first call always runs
                    out_of_time = True
                    break
                quota = max(1, math.ceil(need * weights[index]))
                ask = min(max(1, math.ceil(quota * self.oversample)), budget - spent)
                spent += ask
                requested[generator.name] += ask
                round_seed = _derived_seed(seed, position, round_index)
                if progress is not None:
                    progress(len(result.candidates), n, f"{generator.name} writing {ask}")
                try:
                    batch = generator.generate(brief, ask, seed=round_seed, winners=winners)
                except Exception as exc:
                    raise GenerationFailedError(generator.name, exc) from exc
                if not batch:
                    exhausted.append(position)
                batch = [
                    c if c.segment == target_segment else replace(c, segment=target_segment)
                    for c in batch
                ]
                taken = 0
                for candidate in batch:
                    if len(result.candidates) >= n:
                        break
                    reason = check(candidate)
                    if reason is not None:
                        drop(candidate, reason)
                    elif taken < quota:
                        accept(candidate)
                        taken += 1
                    else:
                        reserve.append(candidate)  # keeps each generator to its share for now
                if progress is not None:
                    progress(len(result.candidates), n, f"{generator.name} done")
            # Short after every generator had its share: use what passed beyond the shares.
            for candidate in reserve:
                if len(result.candidates) >= n:
                    break
                reason = check(candidate)
                if reason is None:
                    accept(candidate)
                else:
                    drop(candidate, reason)
            reserve.clear()
            active = [(p, g) for p, g in active if p not in exhausted]
            if out_of_time:
                result.notes.append(f"stopped at the time budget of {time_budget_s:g} s")
                break
        result.drop_counts = drop_reasons_in(dropped_reasons)
        result.requested = requested
        result.accepted = passed
        if len(result.candidates) < n:
            why = ", ".join(f"{reason}: {count}" for reason, count in result.drop_counts.items())
            result.notes.append(
                f"only {len(result.candidates)} of {n} candidates passed the filters after "
                f"requesting {spent} (dropped: {why or 'none'}); widen the brief (more keywords, "
                "looser limits or fewer banned terms) or raise the budget"
            )
        return result
