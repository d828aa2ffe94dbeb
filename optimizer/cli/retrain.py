"""``adloop retrain`` and ``adloop scheduler``: placeholders until retraining lands."""

from __future__ import annotations


def retrain() -> None:
    """Run one retraining round now."""
    raise SystemExit("not implemented yet")


def scheduler() -> None:
    """Run the job scheduler as its own process."""
    raise SystemExit("not implemented yet")
