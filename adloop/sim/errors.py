"""Errors raised by the simulator.

Hierarchy::

    SimError                      base class for everything raised by ``sim``; raised as such by
    │                             fast mode for a bad policy name, setting or problem array
    │                             (a policy's own :class:`adloop.bandits.BanditError` is chained)
    ├── ScenarioError (ValueError)  a scenario file or dict is invalid; ``key_path`` names the key
    ├── WorldError (ValueError)     a world is misconfigured (shares, weights, rates)
    └── ReplayError (ValueError)    a replay file is unreadable, lacks the needed columns, or the
                                    replay is asked for an unknown policy

The subclasses are also ``ValueError`` s (pydantic turns a ``ValueError`` raised by a scenario
validator into a validation error, and callers that catch ``ValueError`` keep working).  Every
message says what was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = ["ReplayError", "ScenarioError", "SimError", "WorldError"]


class SimError(Exception):
    """Base class for every error the simulator raises."""


class ScenarioError(SimError, ValueError):
    """A scenario is invalid.

    Parameters
    ----------
    message:
        What was wrong and how to fix it.
    key_path:
        The dotted path of the offending key, e.g. ``"traffic.impressions_per_hour"``.
    """

    def __init__(self, message: str, *, key_path: str = "") -> None:
        super().__init__(f"{key_path}: {message}" if key_path else message)
        self.key_path = key_path


class WorldError(SimError, ValueError):
    """A world is misconfigured (segment shares, weights or base rates out of range)."""


class ReplayError(SimError, ValueError):
    """A replay input cannot be used (missing file, missing columns, empty tests)."""
