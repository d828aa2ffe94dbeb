"""Shared fixtures. Tests never download weights: the hub is switched off here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ADLOOP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
UPWORTHY = SHARED_DATA / "upworthy_dev.parquet"


@pytest.fixture
def upworthy_path() -> Path:
    """The real Upworthy A/B test archive; the test is skipped when it is absent."""
    if not UPWORTHY.exists():
        pytest.skip(f"real data not present at {UPWORTHY} (see README: Data)")
    return UPWORTHY


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh DuckDB file path in a temporary folder."""
    return tmp_path / "adloop.duckdb"
