"""Run mypy --strict on the whole `onemap` namespace.

The namespace is assembled from several top-level folders by pyproject's package-dir mapping,
which mypy cannot follow; so this builds a tree of symlinks with the installed layout under
build/typecheck/ and checks that. Run from the repository root: python scripts/typecheck.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    farm = ROOT / "build" / "typecheck"
    shutil.rmtree(farm, ignore_errors=True)
    for package, folder in mapping.items():
        target = farm.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in (ROOT / folder).glob("*.py"):
            (target / source.name).symlink_to(source)
    return subprocess.call([sys.executable, "-m", "mypy", "--config-file",
                            str(ROOT / "pyproject.toml"), "-p", "onemap"], cwd=farm)


if __name__ == "__main__":
    raise SystemExit(main())
