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


#: The ``--db`` option's help: a store is opened by path or URL (``storage.open_store``).
DB_HELP = (
    "Where the store lives: a DuckDB file path (created if missing; the default kind), "
    "duckdb:///abs/path.duckdb, or postgresql://user@host:port/db (needs adloop[scale])."
)


def open_store(db: str | Path) -> Any:
    """The store ``db`` names (a DuckDB path or a store URL), or a clean failure."""
    from adloop.storage import StorageError, open_store

    try:
        return open_store(db)
    except StorageError as exc:
        fail(str(exc))


def open_engine(db: str | Path, *, seed: int | None = None, generators: str | None = None) -> Any:
    """The engine over the store ``db`` (a path or URL; no background thread), or a failure.

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


def campaign_view(db: str | Path, campaign_id: str) -> dict[str, Any]:
    """The campaign's full view (``Engine.campaign``) from the store, or a clean failure."""
    from adloop.optimizer.errors import CampaignNotFound

    engine = open_engine(db)
    try:
        return engine.campaign(campaign_id)
    except CampaignNotFound as exc:
        fail(str(exc))
    finally:
        engine.close()
