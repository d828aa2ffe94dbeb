"""The HTTP service's request bodies as pydantic models, and the service's size limits.

These models are the documented contract (they make the OpenAPI schema) and the authority
on what is valid: the msgspec fast paths in :mod:`adloop.optimizer.http_codec` accept only
what these accept, and whatever they decline is validated here, whose first error names
the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from adloop.bandits import OBJECTIVES

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CHOOSE_N",
    "MAX_EVENTS_PER_BATCH",
    "MAX_KEY_LIFETIME_SECONDS",
    "AddVariantsBody",
    "ChooseBody",
    "CreateCampaignBody",
    "EventIn",
    "ErrorBody",
    "EventsBody",
    "KeyBody",
    "VariantIn",
    "Whole",
    "naive_utc",
]

#: Largest accepted request body; larger ones get 413.
MAX_BODY_BYTES = 4 << 20
#: Most events per ``POST /v1/events``; more get 422.
MAX_EVENTS_PER_BATCH = 10_000
#: Most decisions per ``choose`` call (``"n"``).
MAX_CHOOSE_N = 1000
#: Longest lifetime a key may be given (``expires_in_seconds``): ten years.
MAX_KEY_LIFETIME_SECONDS = 10 * 365 * 86_400

_Id = Annotated[str, Field(min_length=1, max_length=128)]


def _whole(value: Any) -> Any:
    """An integral float (``41.0``) as the int it is: JSON Schema counts it an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer field: JSON integers, and floats with no fraction (no strings, no booleans).
Whole = Annotated[int, BeforeValidator(_whole)]


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
    override_filters: bool = Field(
        False,
        description="Keep the variant although it fails the brief's filters (banned or missing "
        "terms, lengths, ...); needs override_reason, recorded with who and when.",
    )
    override_reason: str | None = Field(
        None, min_length=1, max_length=500, description="Why the filters are overridden."
    )
    segments: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        None,
        max_length=64,
        description="Serve this variant only to requests from these segments (choose's "
        "'segment'); none or [] serves every request.",
    )


class CreateCampaignBody(_Strict):
    """``POST /v1/campaigns``."""

    brief: dict[str, Any] = Field(description="The brief (see generators.Brief).")
    n_candidates: Whole = Field(8, ge=1, le=200, description="Variants to generate.")
    objective: Literal[OBJECTIVES] = "ctr"
    variants: list[VariantIn] | None = Field(
        None, max_length=200, description="Variants to use instead of generating."
    )
    impressions_reported_separately: bool = Field(
        False, description="True when the ad server posts impression events itself."
    )
    name: str | None = Field(None, max_length=200)
    auto_approve: bool = Field(
        False,
        description="Serve generated variants without review. By default they start pending "
        "and serve once approved (POST /v1/campaigns/{id}/variants/{variant_id}/approve); "
        "listed variants always serve at once.",
    )
    per_segment: bool = Field(
        False,
        description="Write the generated variants for the brief's segments in turn, each "
        "targeted to its segment (served only to requests from it); refills follow suit.",
    )


class ReviewBody(_Strict):
    """``POST /v1/campaigns/{id}/variants/{variant_id}/approve`` (or ``/reject``)."""

    note: str | None = Field(
        None, min_length=1, max_length=2000, description="Why; recorded with the review."
    )


class AddVariantsBody(_Strict):
    """``POST /v1/campaigns/{id}/variants``: give ``variants``, or ask for ``n`` generated.

    Exactly one of the two (not null): ``{}`` or both are rejected with 422, as the schema's
    ``oneOf`` says.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["variants"], "properties": {"variants": {"type": "array"}}},
                {"required": ["n"], "properties": {"n": {"type": "integer"}}},
            ]
        }
    )

    variants: list[VariantIn] | None = Field(None, min_length=1, max_length=200)
    n: Whole | None = Field(None, ge=1, le=200)
    segment: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="With 'n': write the variants for this segment of the brief and serve "
        "them only to requests from it.",
    )


class ChooseBody(_Strict):
    """``POST /v1/campaigns/{id}/choose``.

    ``request_id`` (an idempotent single choice) and ``n`` (several choices) exclude each
    other: both (not null) are rejected with 422, as the schema's ``not`` says.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["n", "request_id"],
                "properties": {"n": {"type": "integer"}, "request_id": {"type": "string"}},
            }
        }
    )

    segment: str | None = Field(None, min_length=1, max_length=128)
    request_id: str | None = Field(None, min_length=1, max_length=128)
    n: Whole | None = Field(None, ge=1, le=MAX_CHOOSE_N)


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
    """``POST /v1/keys`` (admin keys only): a key for any tenant, optionally expiring."""

    tenant: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Letters, digits, '_', '.' or '-', starting alphanumeric.",
    )
    admin: bool = Field(False, description="An admin key can mint, list and revoke keys.")
    expires_in_seconds: Whole | None = Field(
        None,
        ge=1,
        le=MAX_KEY_LIFETIME_SECONDS,
        description="The key stops working this many seconds from now (default: never).",
    )


class ErrorBody(BaseModel):
    """Every error answer: a code, a message and the field at fault (null when none)."""

    error: str = Field(description="A stable code, e.g. 'invalid_request', 'not_found'.")
    message: str = Field(description="What was wrong and how to fix it.")
    field: str | None = Field(description="The dotted path of the offending input, or null.")
    details: list[dict[str, Any]] | None = Field(
        None, description="For a body that failed validation: up to 20 errors, each named."
    )
