"""Scenario files: everything a simulated campaign needs, in one YAML document.

A scenario names the brief, the audience (segments and their preferences, base rates),
traffic (impressions per hour with a daily cycle), conversion delays and the attribution
window, optional drift (ad fatigue, a mid-campaign preference shift), optional invalid traffic
(duplicate deliveries, out-of-order clicks), the allocation policy and its settings, the
posterior refresh cadence, the variant lifecycle (retire/refill, winner declaration), the
generators and pool size, the retraining cadence and the seed.

Unknown keys and bad values are rejected with :class:`adloop.sim.errors.ScenarioError`, whose
``key_path`` names the offending key (``"traffic.impressions_per_hour"``,
``"world.segments[1].share"``). See ``examples/scenario_jewelry_en.yaml`` for a full example.

Example
-------
>>> scenario = load_scenario({"variants": ["Bespoke rings", "Rings on sale today"],
...                           "traffic": {"hours": 2, "impressions_per_hour": 100}})
>>> scenario.traffic.hours, scenario.policy.name
(2, 'ts')
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adloop.bandits import OBJECTIVES
from adloop.sim.errors import ScenarioError
from adloop.sim.features import DEFAULT_LEXICON, feature_names
from adloop.sim.world import Segment, World, default_segments

__all__ = [
    "ConversionSettings",
    "DriftSettings",
    "FatigueSettings",
    "GeneratorSettings",
    "InvalidTrafficSettings",
    "LifecycleSettings",
    "PolicySettings",
    "PreferenceShiftSettings",
    "RefreshSettings",
    "RetrainingSettings",
    "Scenario",
    "SegmentSettings",
    "TrafficSettings",
    "WorldSettings",
    "load_scenario",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentSettings(_Strict):
    """One audience segment (see :class:`adloop.sim.Segment`)."""

    name: str = Field(min_length=1, description="Segment name passed to choose(segment=...).")
    share: float = Field(gt=0, le=1, description="Fraction of impressions from this segment.")
    ctr_weights: dict[str, float] = Field(
        default_factory=dict, description="Log-odds weight per text feature on CTR."
    )
    cvr_weights: dict[str, float] = Field(
        default_factory=dict, description="Log-odds weight per text feature on CVR."
    )
    ctr_offset: float = Field(0.0, description="Log-odds shift of this segment's base CTR.")
    cvr_offset: float = Field(0.0, description="Log-odds shift of this segment's base CVR.")


class WorldSettings(_Strict):
    """The hidden audience model."""

    seed: int | None = Field(
        None, ge=0, description="Seeds the hidden scorer; default: the run's seed."
    )
    base_ctr: float = Field(0.02, gt=0, lt=0.5, description="CTR of a neutral text.")
    base_cvr: float = Field(0.04, gt=0, lt=0.5, description="Conversion rate of a click.")
    idiosyncratic_sd: float = Field(
        0.15, ge=0, le=3, description="Log-odds sd of the per-text term that breaks ties."
    )
    lexicon: dict[str, list[str]] | None = Field(
        None, description="Keyword categories for kw_* features; default: built-in lexicon."
    )
    segments: list[SegmentSettings] | None = Field(
        None, min_length=1, description="Audience segments; default: the three built-in ones."
    )

    @model_validator(mode="after")
    def _check(self) -> WorldSettings:
        if self.segments is None:
            return self
        names = [segment.name for segment in self.segments]
        if len(set(names)) != len(names):
            raise ScenarioError(f"segment names must be unique, got {names}", key_path="segments")
        total = sum(segment.share for segment in self.segments)
        if abs(total - 1.0) > 1e-6:
            raise ScenarioError(f"shares must sum to 1, got {total:.6g}", key_path="segments")
        known = set(feature_names(DEFAULT_LEXICON if self.lexicon is None else self.lexicon))
        for index, segment in enumerate(self.segments):
            for kind in ("ctr_weights", "cvr_weights"):
                unknown = sorted(set(getattr(segment, kind)) - known)
                if unknown:
                    raise ScenarioError(
                        f"unknown feature; known: {sorted(known)}",
                        key_path=f"segments[{index}].{kind}.{unknown[0]}",
                    )
        return self

    def segment_list(self) -> list[Segment]:
        """The segments as :class:`adloop.sim.Segment` objects."""
        if self.segments is None:
            return default_segments()
        return [Segment(**segment.model_dump()) for segment in self.segments]


class TrafficSettings(_Strict):
    """Impressions over simulated time."""

    hours: int = Field(48, ge=1, le=24 * 365, description="Length of the campaign in hours.")
    impressions_per_hour: int = Field(
        2000, ge=1, le=10_000_000, description="Mean impressions per hour over a day."
    )
    daily_cycle: float = Field(
        0.5, ge=0, lt=1, description="Amplitude of the daily cycle (0 = flat traffic)."
    )
    peak_hour: int = Field(20, ge=0, le=23, description="Hour of the day with most traffic.")
    start: datetime = Field(
        datetime(2026, 1, 5), description="Simulated start time (UTC, ISO 8601, no zone)."
    )

    @field_validator("start")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value


class ConversionSettings(_Strict):
    """When clicks convert."""

    delay_mean_hours: float = Field(
        6.0, gt=0, description="Mean of the exponential delay from click to conversion."
    )
    attribution_window_hours: float = Field(
        72.0, gt=0, description="Conversions later than this after the click are not attributed."
    )
    value_mean: float = Field(120.0, ge=0, description="Mean conversion value (exponential).")


class FatigueSettings(_Strict):
    """Ad fatigue: CTR decays with a text's exposure."""

    enabled: bool = False
    half_life_impressions: float = Field(
        50_000, gt=0, description="Impressions after which half of the decay has happened."
    )
    floor: float = Field(0.5, ge=0, le=1, description="Fraction of CTR fatigue never takes.")


class PreferenceShiftSettings(_Strict):
    """A mid-campaign change of taste: per-segment log-odds deltas from ``at_hour`` on."""

    enabled: bool = False
    at_hour: int = Field(24, ge=0, description="Simulated hour at which the shift happens.")
    deltas: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{segment: {feature: delta}} added after the shift."
    )


class DriftSettings(_Strict):
    """Non-stationarity."""

    fatigue: FatigueSettings = Field(default_factory=FatigueSettings)
    preference_shift: PreferenceShiftSettings = Field(default_factory=PreferenceShiftSettings)


class InvalidTrafficSettings(_Strict):
    """Faults an ad server's event stream really has."""

    duplicate_rate: float = Field(
        0.0, ge=0, lt=1, description="Fraction of events delivered a second time (same id)."
    )
    out_of_order_rate: float = Field(
        0.0, ge=0, lt=1, description="Fraction of clicks delivered before their impression."
    )


class PolicySettings(_Strict):
    """The allocation policy and its settings."""

    name: Literal["ts", "uniform", "ucb1", "egreedy"] = Field(
        "ts", description="ts = Thompson sampling; uniform = fixed split; ucb1; egreedy."
    )
    floor: float = Field(0.0, ge=0, lt=1, description="Minimum traffic share per arm (ts).")
    top_two: bool = Field(False, description="Top-two Thompson sampling (ts).")
    epsilon: float = Field(0.1, ge=0, le=1, description="Exploration rate (egreedy).")
    n_draws: int = Field(1000, ge=16, le=100_000, description="Monte Carlo draws per refresh.")
    half_life_hours: float | None = Field(
        None, gt=0, description="Discount old events with this half-life (engine mode; drift)."
    )


class RefreshSettings(_Strict):
    """How often the posterior snapshot is recomputed."""

    every_hours: float = Field(1.0, gt=0, description="Hours between posterior refreshes.")


class LifecycleSettings(_Strict):
    """Retiring losers, refilling the pool and declaring a winner."""

    retire_refill_every_hours: int | None = Field(
        24, ge=1, description="Hours between retire-and-refill rounds; null = never."
    )
    declare_winner: bool = Field(True, description="Ask for a winner at the end of the run.")
    stop_on_winner: bool = Field(False, description="End the campaign once a winner is declared.")


class GeneratorSettings(_Strict):
    """Where candidates come from."""

    names: list[Literal["template", "lm", "recombine"]] = Field(
        default_factory=lambda: ["template", "recombine"], min_length=1
    )
    pool_size: int = Field(6, ge=2, le=200, description="Variants the campaign starts with.")
    model_dir: str | None = Field(None, description="Local causal LM directory for 'lm'.")
    per_segment: bool = Field(
        False,
        description="Write the pool for the brief's segments in turn (Brief.for_segment), each "
        "variant targeted to its segment, instead of one shared pool for everyone. The brief's "
        "segments must be names of the world's segments (the requests' segments).",
    )


class RetrainingSettings(_Strict):
    """Winner-driven retraining rounds; the run calls its ``on_retrain`` hook each round."""

    enabled: bool = False
    every_hours: int = Field(24, ge=1, description="Simulated hours between retraining rounds.")
    measure_candidates: bool = Field(
        False,
        description="Score a fresh batch of candidates every round even with retraining off "
        "(the control arm of an on/off comparison).",
    )
    probe_candidates: int | None = Field(
        None,
        ge=1,
        le=512,
        description="Candidates generated and scored against the hidden audience each round "
        "(measurement only, never served); default: the pool size. More candidates, less "
        "noise in the round's mean true CTR.",
    )
    config: dict[str, Any] | None = Field(
        None,
        description="How the rounds retrain: the fields of optimizer.retrain.RetrainConfig "
        "(training settings nested under 'training'), as in a scheduler config's 'retraining:' "
        "section. `adloop sim run` and the closed-loop benchmark use them; default: the "
        "library's settings.",
    )


class Scenario(_Strict):
    """A whole simulated campaign. Build with :func:`load_scenario`."""

    name: str = Field("scenario", min_length=1)
    seed: int = Field(0, ge=0)
    brief: dict[str, Any] | None = Field(
        None, description="The campaign brief (as in examples/brief_*.yaml), or a file path."
    )
    variants: list[str] | None = Field(
        None, min_length=2, description="Fixed variant texts instead of generating from the brief."
    )
    objective: Literal[OBJECTIVES] = "ctr"
    world: WorldSettings = Field(default_factory=WorldSettings)
    traffic: TrafficSettings = Field(default_factory=TrafficSettings)
    conversions: ConversionSettings = Field(default_factory=ConversionSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    invalid_traffic: InvalidTrafficSettings = Field(default_factory=InvalidTrafficSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    generators: GeneratorSettings = Field(default_factory=GeneratorSettings)
    retraining: RetrainingSettings = Field(default_factory=RetrainingSettings)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.brief is None and self.variants is None:
            raise ScenarioError(
                "give a brief (to generate variants) or a list of variants", key_path="brief"
            )
        if self.variants is not None and len(set(self.variants)) != len(self.variants):
            raise ScenarioError("variants must be distinct texts", key_path="variants")
        shift = self.drift.preference_shift
        names = [segment.name for segment in self.world.segment_list()]
        if self.generators.per_segment:
            _check_copy_segments(self.brief, names)
        for segment in shift.deltas:
            if segment not in names:
                raise ScenarioError(
                    f"unknown segment; known: {names}",
                    key_path=f"drift.preference_shift.deltas.{segment}",
                )
            known = set(feature_names(self.world.lexicon or DEFAULT_LEXICON))
            unknown = sorted(set(shift.deltas[segment]) - known)
            if unknown:
                raise ScenarioError(
                    "unknown feature",
                    key_path=f"drift.preference_shift.deltas.{segment}.{unknown[0]}",
                )
        return self

    def build_world(self, seed: int | None = None) -> World:
        """The :class:`adloop.sim.World` this scenario describes.

        The scorer is seeded by ``world.seed`` when the scenario fixes it, else by ``seed``
        (default: the scenario's seed); traffic draws are re-seeded by :meth:`World.reset`.
        """
        fatigue = self.drift.fatigue
        shift = self.drift.preference_shift
        return World(
            segments=self.world.segment_list(),
            base_ctr=self.world.base_ctr,
            base_cvr=self.world.base_cvr,
            lexicon=self.world.lexicon,
            idiosyncratic_sd=self.world.idiosyncratic_sd,
            fatigue_half_life=fatigue.half_life_impressions if fatigue.enabled else None,
            fatigue_floor=fatigue.floor,
            preference_shift=shift.deltas if shift.enabled else None,
            seed=self.world.seed
            if self.world.seed is not None
            else (self.seed if seed is None else seed),
        )

    def to_yaml(self) -> str:
        """The scenario as YAML that :func:`load_scenario` reads back to an equal scenario."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _check_copy_segments(brief: dict[str, Any] | None, names: list[str]) -> None:
    """Per-segment copy needs a brief whose segments are the world's (the requests')."""
    segments = (brief or {}).get("segments") or []
    segments = [segments] if isinstance(segments, str) else list(segments)
    if not segments:
        raise ScenarioError(
            f"needs a brief listing segments to write for, named as the world's: {names}",
            key_path="generators.per_segment",
        )
    unknown = [s for s in segments if s not in names]
    if unknown:
        raise ScenarioError(
            f"the brief's segment {unknown[0]!r} is not a world segment ({names}): copy "
            "targeted to it would never be served; name the brief's segments as the world's",
            key_path="generators.per_segment",
        )


def _key_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def load_scenario(source: str | Path | Mapping[str, Any], *, seed: int | None = None) -> Scenario:
    """Read and validate a scenario from a YAML/JSON file or a mapping.

    Parameters
    ----------
    source:
        A path to a YAML (or JSON) file, or the scenario as a mapping.
    seed:
        Overrides the scenario's ``seed`` when given.

    Raises
    ------
    ScenarioError
        For an unreadable file, an unknown key or a bad value; ``key_path`` names the key.
    """
    base_dir = Path.cwd()
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ScenarioError(f"scenario file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ScenarioError(f"{path} is not valid YAML: {error}") from error
        base_dir = path.parent
    else:
        data = dict(source)
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a mapping of keys to values")
    data = dict(data)
    if isinstance(data.get("brief"), str):
        brief_path = Path(data["brief"])
        if not brief_path.is_absolute():
            brief_path = base_dir / brief_path
        if not brief_path.is_file():
            raise ScenarioError(f"brief file not found: {brief_path}", key_path="brief")
        try:
            data["brief"] = yaml.safe_load(brief_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            message = f"{brief_path} is not valid YAML: {error}"
            raise ScenarioError(message, key_path="brief") from error
    if seed is not None:
        data["seed"] = seed
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key_path = _key_path(tuple(first["loc"]))
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "value_error":
            # Cross-field checks put the sub-path of the key in front of their message.
            text = str(first.get("ctx", {}).get("error", message))
            sub_path, _, rest = text.partition(": ")
            if rest and " " not in sub_path:
                key_path = f"{key_path}.{sub_path}" if key_path else sub_path
                message = rest
            else:
                message = text
        elif "input" in first and first["type"] != "missing":
            message = f"{message} (got {first['input']!r})"
        more = len(error.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ScenarioError(message, key_path=key_path or "scenario") from error
    return scenario
