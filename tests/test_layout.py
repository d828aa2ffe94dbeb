"""The shape of the house: leaves stay leaves, surfaces are declared, the CLI starts light."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bandits", "storage", "generators", "optimizer", "sim")
LEAVES = ("bandits", "storage", "generators")


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_packages_import_no_other_project_package(leaf: str) -> None:
    others = set(PACKAGES) - {leaf}
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & others)
        for path in (ROOT / leaf).rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_public_surface_is_declared_and_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert isinstance(module.__all__, list | tuple)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_ships_a_type_marker(package: str) -> None:
    assert (ROOT / package / "py.typed").exists()


def test_cli_starts_without_the_language_model_stack() -> None:
    code = (
        "import sys; from optimizer.cli import app; "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_cli_help_lists_every_command_group() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "optimizer.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for command in ("campaign", "events", "generate", "models", "serve", "sim", "demo", "bench"):
        assert command in result.stdout
