"""The optimizer's notion of "now": timezone-naive UTC, as the store keeps timestamps.

Every component that takes a ``clock`` argument defaults to :func:`utcnow`; tests and the
simulator pass their own clock instead.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """The current time in UTC, without a timezone (the store's timestamp convention)."""
    return datetime.now(UTC).replace(tzinfo=None)
