"""Errors raised by :mod:`adloop.bandits`.

Hierarchy::

    BanditError (ValueError)          base class; catch this to handle any bandit failure
    ├── InvalidCountsError             arm counts with bad shapes, negative or non-finite values
    ├── InvalidConfigError             a policy or rule configured with a bad field value
    └── NoActiveArmsError              every arm is retired / masked out, so nothing can be chosen

Every message names the offending field and value and says how to fix it.
"""

from __future__ import annotations

__all__ = ["BanditError", "InvalidCountsError", "InvalidConfigError", "NoActiveArmsError"]


class BanditError(ValueError):
    """Base class of every error raised by the bandits package."""


class InvalidCountsError(BanditError):
    """Arm counts are malformed (shape mismatch, negative, NaN or infinite values)."""


class InvalidConfigError(BanditError):
    """A policy, prior or stopping rule was configured with an invalid value."""


class NoActiveArmsError(BanditError):
    """No arm is active, so no traffic can be allocated; add or reactivate a variant."""
