"""``adloop serve``: placeholder until the service lands."""

from __future__ import annotations


def serve() -> None:
    """Run the HTTP variant-chooser service."""
    raise SystemExit("not implemented yet")
