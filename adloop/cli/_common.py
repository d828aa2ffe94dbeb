"""Helpers shared by the command modules: JSON output and user-facing failures."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer


def print_json(payload: Any) -> None:
    """Print ``payload`` as JSON on stdout (datetimes and paths as strings)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr as an error and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
