"""``adloop generate``: placeholder until the generators land."""

from __future__ import annotations


def generate() -> None:
    """Generate candidate ads from a brief."""
    raise SystemExit("not implemented yet")
