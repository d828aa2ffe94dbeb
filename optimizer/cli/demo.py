"""``adloop demo``: placeholder until the engine lands."""

from __future__ import annotations


def demo() -> None:
    """Run the main job end to end on the embedded default."""
    raise SystemExit("not implemented yet")
