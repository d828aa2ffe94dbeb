"""Errors raised by the simulator.

Hierarchy::

    SimError                      base class for everything raised by ``sim``
    ├── ScenarioError             a scenario file or dict is invalid; ``key_path`` names the key
    ├── WorldError                a world is misconfigured (shares, weights, rates)
    └── ReplayError               a replay file is unreadable or lacks the needed columns
"""

from __future__ import annotations


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
