"""The docstring examples of every onemap module run as tests (docs that run)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

SKIP = {"onemap.__main__"}
PACKAGES = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())[
    "tool"]["setuptools"]["packages"]


def _modules() -> list[str]:
    names: set[str] = set()
    for package in PACKAGES:
        names.add(package)
        mod = importlib.import_module(package)
        names.update(m.name for m in pkgutil.iter_modules(mod.__path__, f"{package}.")
                     if not m.ispkg)
    return sorted(names - SKIP)


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_every_namespace_part_is_found() -> None:
    for part in ("onemap.streams.app", "onemap.geo.locator", "onemap.rules.water_level",
                 "onemap.sinks.sms.templates", "onemap.sinks.dashboard.server"):
        assert part in MODULES


def test_pyproject_lists_every_package_folder() -> None:
    root = Path(__file__).parent.parent
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    folders = {(root / folder).resolve() for folder in mapping.values()}
    for top in ("onemap", "streams", "geo", "rules", "sinks", "fixtures"):
        for init in (root / top).rglob("__init__.py"):
            assert init.parent.resolve() in folders, f"{init.parent} is not in pyproject.toml"


def test_readme_documents_every_setting() -> None:
    from onemap.settings import describe

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    missing = [env for env, _, _ in describe() if f"`{env}`" not in readme]
    assert not missing, f"README.md's configuration table lacks {missing}"
