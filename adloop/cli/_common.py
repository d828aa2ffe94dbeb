"""Helpers shared by the command modules: JSON output, user-facing failures, the engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer


def print_json(payload: Any) -> None:
    """Print ``payload`` as JSON on stdout (datetimes and paths as strings)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr as an error and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def open_engine(db: Path, *, seed: int | None = None, generators: str | None = None) -> Any:
    """The engine over the DuckDB file ``db`` (no background thread), or a clean failure.

    ``generators`` (comma-separated names) fixes the pool; default: all installed.
    """
    from adloop.optimizer.engine import Engine, EngineConfig
    from adloop.storage import StorageError

    pool = None
    if generators:
        from adloop.generators import GeneratorError, GeneratorPool

        names = [name.strip() for name in generators.split(",") if name.strip()]
        try:
            pool = GeneratorPool(names)
        except (GeneratorError, ValueError) as exc:
            fail(f"--generators: {exc}")
    try:
        return Engine(db, config=EngineConfig(background=False), seed=seed, pool=pool)
    except StorageError as exc:
        fail(str(exc))


def campaign_view(db: Path, campaign_id: str) -> dict[str, Any]:
    """The campaign's full view (``Engine.campaign``) from the DuckDB file, or a clean failure."""
    from adloop.optimizer.errors import CampaignNotFound

    engine = open_engine(db)
    try:
        return engine.campaign(campaign_id)
    except CampaignNotFound as exc:
        fail(str(exc))
    finally:
        engine.close()
