"""One error hierarchy per package, documented in one place (docs/errors.md)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASES = {
    "bandits": "BanditError",
    "storage": "StorageError",
    "generators": "GeneratorError",
    "optimizer": "OptimizerError",
    "sim": "SimError",
}
#: Modules that need the language-model stack; their errors are imported from errors.py anyway.
SKIP = {"adloop.generators.training", "adloop.generators.likelihood"}


def _exceptions_defined_in(package: str) -> dict[str, type]:
    found: dict[str, type] = {}
    root = importlib.import_module(f"adloop.{package}")
    for info in pkgutil.iter_modules(root.__path__, prefix=f"adloop.{package}."):
        if info.name in SKIP:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = value
    return found


@pytest.mark.parametrize("package", sorted(BASES))
def test_every_error_lives_in_the_errors_module_under_one_base(package: str) -> None:
    errors = importlib.import_module(f"adloop.{package}.errors")
    base = getattr(errors, BASES[package])
    defined = _exceptions_defined_in(package)
    elsewhere = [name for name in defined if not name.startswith(f"adloop.{package}.errors.")]
    assert elsewhere == []
    assert [name for name, error in defined.items() if not issubclass(error, base)] == []


@pytest.mark.parametrize("package", sorted(BASES))
def test_every_error_is_documented(package: str) -> None:
    errors = importlib.import_module(f"adloop.{package}.errors")
    guide = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    public = importlib.import_module(f"adloop.{package}")
    classes = [name for name in errors.__all__ if inspect.isclass(getattr(errors, name))]
    assert classes
    for name in classes:
        assert name in (errors.__doc__ or ""), f"{name} missing from {errors.__name__}'s docstring"
        assert f"`{name}`" in guide, f"{name} missing from docs/errors.md"
        assert hasattr(public, name), f"adloop.{package} does not export {name}"
