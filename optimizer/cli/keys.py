"""``adloop keys``: placeholder until its issue lands."""

from __future__ import annotations

import typer

app = typer.Typer(help="keys commands.", no_args_is_help=True)
