"""The HTTP service's request bodies as pydantic models, and the service's size limits.

These models are the documented contract (they make the OpenAPI schema) and the authority
on what is valid: the msgspec fast paths in :mod:`adloop.optimizer.http_codec` accept only
what these accept, and whatever they decline is validated here, whose first error names
the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CHOOSE_N",
    "MAX_EVENTS_PER_BATCH",
    "AddVariantsBody",
    "ChooseBody",
    "CreateCampaignBody",
    "EventIn",
    "EventsBody",
    "KeyBody",
    "VariantIn",
    "naive_utc",
]

#: Largest accepted request body; larger ones get 413.
MAX_BODY_BYTES = 4 << 20
#: Most events per ``POST /v1/events``; more get 422.
MAX_EVENTS_PER_BATCH = 10_000
#: Most decisions per ``choose`` call (``"n"``).
MAX_CHOOSE_N = 1000

_Id = Annotated[str, Field(min_length=1, max_length=128)]


def naive_utc(value: datetime | None) -> datetime | None:
    """``value`` as naive UTC (the store's convention); a naive one is taken to be UTC."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


class _Strict(BaseModel):
    """Bodies reject unknown fields, NaN/Infinity and type coercion."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class VariantIn(_Strict):
    """A variant given by hand: ``text``, or ``headline`` (+ ``description``)."""

    text: str | None = Field(None, min_length=1, max_length=2000)
    headline: str | None = Field(None, min_length=1, max_length=500)
    description: str | None = Field(None, max_length=2000)


class CreateCampaignBody(_Strict):
    """``POST /v1/campaigns``."""

    brief: dict[str, Any] = Field(description="The brief (see generators.Brief).")
    n_candidates: int = Field(8, ge=1, le=200, description="Variants to generate.")
    objective: Literal["ctr", "cvr", "value"] = "ctr"
    variants: list[VariantIn] | None = Field(
        None, max_length=200, description="Variants to use instead of generating."
    )
    impressions_reported_separately: bool = Field(
        False, description="True when the ad server posts impression events itself."
    )
    name: str | None = Field(None, max_length=200)


class AddVariantsBody(_Strict):
    """``POST /v1/campaigns/{id}/variants``: give ``variants``, or ask for ``n`` generated."""

    variants: list[VariantIn] | None = Field(None, min_length=1, max_length=200)
    n: int | None = Field(None, ge=1, le=200)


class ChooseBody(_Strict):
    """``POST /v1/campaigns/{id}/choose``."""

    segment: str | None = Field(None, min_length=1, max_length=128)
    request_id: str | None = Field(None, min_length=1, max_length=128)
    n: int | None = Field(None, ge=1, le=MAX_CHOOSE_N)


class EventIn(_Strict):
    """One event, as in the import format."""

    event_id: _Id
    type: Literal["impression", "click", "conversion"]
    campaign_id: _Id
    variant_id: _Id
    ts: datetime | None = Field(None, description="UTC; defaults to the time of receipt.")
    decision_id: _Id | None = None
    segment: str | None = Field(None, min_length=1, max_length=128)
    value: float | None = Field(None, ge=0)

    @field_validator("ts")
    @classmethod
    def _naive_utc(cls, value: datetime | None) -> datetime | None:
        return naive_utc(value)


class EventsBody(_Strict):
    """``POST /v1/events``."""

    events: list[EventIn] = Field(max_length=MAX_EVENTS_PER_BATCH)


class KeyBody(_Strict):
    """``POST /v1/keys`` (admin keys only)."""

    tenant: str = Field(min_length=1, max_length=64)
    admin: bool = False
