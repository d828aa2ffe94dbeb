"""Errors raised by the optimizer (engine, service, CLI).

Hierarchy::

    OptimizerError                  base of everything raised on purpose here
    ├── CampaignNotFound            no such campaign (or it belongs to another tenant)
    ├── VariantNotFound             no such variant in that campaign
    ├── NoActiveVariants            the campaign has nothing left to serve (or only variants
    │                               that await review)
    ├── ReviewConflict              approving or rejecting a variant whose status does not
    │                               allow it (an active variant is retired, not rejected)
    ├── InvalidRequest (ValueError) a bad argument; ``field`` names the offending input
    ├── ConfigError (ValueError)    a bad ``EngineConfig`` field; ``field`` names it, the
    │                               message says which values are allowed
    ├── AuthError                   missing, unknown or insufficient API key
    └── HTTPError                   an HTTP request rejected with a status, error code and
                                    field (raised and answered inside the service only)

``CampaignNotFound`` and ``VariantNotFound`` are also ``KeyError``; ``InvalidRequest`` and
``ConfigError`` are also ``ValueError``, so callers that catch the builtins keep working.

Errors from the leaf packages (``storage.StorageError``, ``generators.GeneratorError``,
``bandits.BanditError``) pass through unchanged: they already name what was wrong.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "CampaignNotFound",
    "ConfigError",
    "HTTPError",
    "InvalidRequest",
    "NoActiveVariants",
    "OptimizerError",
    "ReviewConflict",
    "VariantNotFound",
]


class OptimizerError(Exception):
    """Base class for errors raised by the optimizer."""


class CampaignNotFound(OptimizerError, KeyError):
    """The campaign does not exist, or is not visible to the caller's tenant."""

    def __init__(self, campaign_id: str) -> None:
        self.campaign_id = campaign_id
        super().__init__(f"campaign {campaign_id!r} not found")

    def __str__(self) -> str:  # KeyError would quote the message again
        return f"campaign {self.campaign_id!r} not found"


class VariantNotFound(OptimizerError, KeyError):
    """The variant does not exist in the given campaign."""

    def __init__(self, campaign_id: str, variant_id: str) -> None:
        self.campaign_id = campaign_id
        self.variant_id = variant_id
        super().__init__(f"variant {variant_id!r} not found in campaign {campaign_id!r}")

    def __str__(self) -> str:
        return f"variant {self.variant_id!r} not found in campaign {self.campaign_id!r}"


class NoActiveVariants(OptimizerError):
    """The campaign has no active variant to choose from; approve, add or refill variants.

    ``n_pending`` counts the generated variants that await review: when there are any, the
    message says how to approve them. ``targeted_segments``, when the campaign has variants
    but all are targeted to segments other than the request's ``segment``, lists them.
    """

    def __init__(
        self,
        campaign_id: str,
        n_pending: int = 0,
        *,
        segment: str | None = None,
        targeted_segments: tuple[str, ...] = (),
    ) -> None:
        self.campaign_id = campaign_id
        self.n_pending = n_pending
        self.segment = segment
        if targeted_segments:
            # Variants serve, but each is targeted to segments this request is not from.
            who = f"segment {segment!r}" if segment is not None else "requests without a segment"
            shown = ", ".join(map(repr, targeted_segments[:10]))
            more = f" and {len(targeted_segments) - 10} more" if len(targeted_segments) > 10 else ""
            message = (
                f"campaign {campaign_id!r} has no active variant for {who}: its variants are "
                f"targeted to {shown}{more}; choose with one of those segments, or add a variant "
                "without segments (it serves every request)"
            )
        elif n_pending:
            message = (
                f"campaign {campaign_id!r} has no active variants: {n_pending} generated "
                "variant(s) await review; approve one with POST "
                "/v1/campaigns/{id}/variants/{variant_id}/approve or `adloop variants approve "
                "CAMPAIGN_ID VARIANT_ID --db PATH` (list them with `adloop variants list "
                "CAMPAIGN_ID --status pending --db PATH`)"
            )
        else:
            message = (
                f"campaign {campaign_id!r} has no active variants; add variants "
                "(POST /v1/campaigns/{id}/variants) or run retire_and_refill"
            )
        super().__init__(message)


class ReviewConflict(OptimizerError):
    """The variant's status does not allow this review (e.g. rejecting an active variant)."""

    def __init__(self, campaign_id: str, variant_id: str, message: str) -> None:
        self.campaign_id = campaign_id
        self.variant_id = variant_id
        super().__init__(message)


class InvalidRequest(OptimizerError, ValueError):
    """An argument was invalid; ``field`` names it (dotted path for nested input)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConfigError(OptimizerError, ValueError):
    """A configuration field (``EngineConfig``) has a value it cannot take.

    ``field`` names the field; the message gives the value and the values allowed.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class AuthError(OptimizerError):
    """The API key is missing or unknown (401), or lacks the admin right (403)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        self.status = status
        super().__init__(message)


class HTTPError(OptimizerError):
    """An HTTP request the service rejects with a given HTTP status, error code and field.

    Raised by request decoding and the routes only; the handler installed by
    :func:`adloop.optimizer.http_errors.install_error_handlers` answers it, so it never
    escapes the application.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self.headers = headers
