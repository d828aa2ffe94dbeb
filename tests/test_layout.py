"""The shape of the house: who may import whom, declared surfaces, what the wheel holds.

The import rules, checked on every module of every package (``TYPE_CHECKING`` imports too):

- ``adloop.bandits``, ``adloop.storage`` and ``adloop.generators`` are leaves: they import
  nothing of each other, nor of anything above them;
- ``adloop.optimizer`` composes the leaves and never imports ``adloop.sim`` or ``adloop.cli``;
- ``adloop.sim`` drives the optimizer's public API; nothing but the CLI imports it;
- ``adloop.scale`` (Kafka ingest, PostgreSQL counts and snapshots) uses the bandits and the
  storage's public names; nothing but the CLI imports it;
- ``adloop.cli`` is the top floor: nothing below imports it;
- no package imports another package's private module (``adloop.storage._writer``) or a private
  name from it; and nobody imports the folders by their bare names (``import storage``), which
  would load a second copy of a package beside ``adloop.storage``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each package and the folder of the repository that holds it.
PACKAGE_DIRS = {
    "bandits": ROOT / "adloop" / "bandits",
    "storage": ROOT / "adloop" / "storage",
    "generators": ROOT / "adloop" / "generators",
    "optimizer": ROOT / "adloop" / "optimizer",
    "sim": ROOT / "adloop" / "sim",
    "scale": ROOT / "adloop" / "scale",
    "cli": ROOT / "adloop" / "cli",
}

#: Which other packages each package may import.
ALLOWED = {
    "bandits": set(),
    "storage": set(),
    "generators": set(),
    "optimizer": {"bandits", "storage", "generators"},
    "sim": {"bandits", "storage", "generators", "optimizer"},
    "scale": {"bandits", "storage"},
    "cli": {"bandits", "storage", "generators", "optimizer", "sim", "scale"},
}

BARE_NAMES = {"bandits", "storage", "generators", "optimizer", "sim", "scale", "cli"}


@dataclass(frozen=True)
class Violation:
    """One import that breaks the rules: where it is, what it imports, and why it may not."""

    where: str
    line: int
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.imported} ({self.reason})"


def _imports(source: str, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` for every import in ``source``."""
    tree = ast.parse(source)
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target, [alias.name for alias in node.names]))
    return found


def check_module(source: str, module: str, *, is_package: bool = False) -> list[Violation]:
    """The rule-breaking imports in one module's ``source``; ``module`` is its dotted name.

    >>> check_module("from adloop.sim import run_scenario", "adloop.optimizer.engine")[0].reason
    'optimizer may not import sim'
    """
    own = module.split(".")[1] if module.startswith("adloop.") else None
    violations = []
    for line, target, names in _imports(source, module, is_package):
        parts = target.split(".")
        if parts[0] in BARE_NAMES:
            violations.append(
                Violation(module, line, target, f"import it as adloop.{target}, not by bare name")
            )
            continue
        if parts[0] != "adloop" or len(parts) < 2 or parts[1] == "__version__":
            continue
        other = parts[1]
        if own is None or other == own:
            if own is None and any(part.startswith("_") for part in parts[2:]):
                violations.append(Violation(module, line, target, "private module"))
            continue
        if own in ALLOWED and other not in ALLOWED[own]:
            violations.append(Violation(module, line, target, f"{own} may not import {other}"))
        elif any(part.startswith("_") for part in parts[2:]):
            violations.append(Violation(module, line, target, f"private module of {other}"))
        elif private := [name for name in names if name.startswith("_")]:
            violations.append(
                Violation(module, line, target, f"private name {', '.join(private)} of {other}")
            )
    return violations


def _module_name(package: str, folder: Path, path: Path) -> tuple[str, bool]:
    relative = path.relative_to(folder).with_suffix("")
    parts = [part for part in relative.parts if part != "__init__"]
    return ".".join(["adloop", package, *parts]), path.name == "__init__.py"


def check_tree() -> list[Violation]:
    """Every rule-breaking import in the packages, the benchmarks and the tests."""
    violations = []
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            name, is_package = _module_name(package, folder, path)
            violations += check_module(
                path.read_text(encoding="utf-8"), name, is_package=is_package
            )
    for outside in ("bench", "tests"):
        for path in sorted((ROOT / outside).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            violations += check_module(path.read_text(encoding="utf-8"), name)
    violations += check_module(
        (ROOT / "adloop" / "__init__.py").read_text(), "adloop", is_package=True
    )
    return violations


def test_every_benchmark_and_package_module_compiles() -> None:
    """Benchmarks run outside the test suite; a module that does not compile (a name used
    before its ``global`` declaration passes ``ast.parse``) would only fail when someone runs it."""
    for path in sorted([*(ROOT / "bench").rglob("*.py"), *(ROOT / "adloop").rglob("*.py")]):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_no_module_breaks_the_import_rules() -> None:
    assert [str(violation) for violation in check_tree()] == []


@pytest.mark.parametrize(
    ("source", "module", "reason"),
    [
        (
            "from adloop.storage import Store",
            "adloop.bandits.policies",
            "bandits may not import storage",
        ),
        (
            "import adloop.generators.lm",
            "adloop.storage.store",
            "storage may not import generators",
        ),
        (
            "from adloop.sim import run_scenario",
            "adloop.optimizer.engine",
            "optimizer may not import sim",
        ),
        ("from adloop.cli import app", "adloop.sim.report", "sim may not import cli"),
        (
            "from adloop.cli._common import fail",
            "adloop.optimizer.service",
            "optimizer may not import cli",
        ),
        (
            "from adloop.storage._writer import Writer",
            "adloop.optimizer.engine",
            "private module of storage",
        ),
        (
            "from adloop.storage import _keys",
            "adloop.optimizer.auth",
            "private name _keys of storage",
        ),
        (
            "from storage import Store",
            "adloop.optimizer.engine",
            "import it as adloop.storage, not by bare name",
        ),
        (
            "from ..sim import load_scenario",
            "adloop.optimizer.engine",
            "optimizer may not import sim",
        ),
        ("from adloop.storage._ingest import x", "bench.storage", "private module"),
    ],
)
def test_the_checker_catches_a_wrong_import(source: str, module: str, reason: str) -> None:
    violations = check_module(source, module)
    assert [violation.reason for violation in violations] == [reason]


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from adloop.storage import Store", "adloop.optimizer.engine"),
        ("from adloop.storage._writer import Writer", "adloop.storage.store"),
        ("from ._writer import Writer", "adloop.storage.store"),
        ("from . import policies", "adloop.bandits"),
        ("from adloop.optimizer import Engine", "adloop.sim.engine_run"),
        ("from adloop.sim import load_scenario", "adloop.cli.sim"),
        ("import numpy as np", "adloop.bandits.policies"),
    ],
)
def test_the_checker_allows_what_the_rules_allow(source: str, module: str) -> None:
    assert check_module(source, module, is_package=module.count(".") == 1) == []


@pytest.mark.parametrize("package", sorted(PACKAGE_DIRS))
def test_public_surface_is_exactly_all(package: str) -> None:
    """``__all__`` names every public name and only names that resolve (as httpx checks)."""
    module = importlib.import_module(f"adloop.{package}")
    declared = list(module.__all__)
    assert len(declared) == len(set(declared)), "a name is listed twice in __all__"
    assert [name for name in declared if not hasattr(module, name)] == []
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert sorted(public - set(declared)) == []


@pytest.mark.parametrize("package", sorted(PACKAGE_DIRS))
def test_each_package_ships_a_type_marker(package: str) -> None:
    assert (PACKAGE_DIRS[package] / "py.typed").exists()


def test_cli_starts_without_the_language_model_stack() -> None:
    code = (
        "import sys; from adloop.cli import app; "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_cli_help_lists_every_command_group() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adloop.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for command in ("campaign", "events", "generate", "models", "serve", "sim", "demo", "bench"):
        assert command in result.stdout


def test_version_is_importable() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import adloop; print(adloop.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT.parent,
    )
    assert result.stdout.strip()[0].isdigit()


def test_the_wheel_holds_only_the_adloop_namespace(tmp_path: Path) -> None:
    """Built from the source tree: top-level names are ``adloop`` and its dist-info, no bench."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("adloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names}
    assert {name for name in top_levels if not name.endswith(".dist-info")} == {"adloop"}
    assert len(top_levels) == 2
    for package in PACKAGE_DIRS:
        assert f"adloop/{package}/__init__.py" in names
        assert f"adloop/{package}/py.typed" in names
    assert not [name for name in names if "/bench/" in name or "/tests/" in name]
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "adloop = adloop.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
