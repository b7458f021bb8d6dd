"""The Dockerfile and .dockerignore, checked as text (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

from deploy_kit import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")


def instructions(name: str) -> list[str]:
    """Arguments of every NAME instruction (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.M | re.I)]


def test_base_image_is_python_311_slim() -> None:
    (arg,) = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert arg == "PYTHON_IMAGE=python:3.11-slim"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in instructions("FROM"))


def test_installs_the_project_with_pip() -> None:
    assert any("pip install ." in r for r in instructions("RUN"))


def test_runs_as_non_root_with_onemap_entrypoint() -> None:
    users = instructions("USER")
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert json.loads(instructions("ENTRYPOINT")[-1]) == ["onemap"]


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    patterns = [line.strip().lstrip("/").rstrip("/")
                for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert ".git" in patterns
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    needed = ["pyproject.toml", pyproject["project"]["readme"],
              *pyproject["tool"]["setuptools"]["package-dir"].values()]
    for path in needed:
        hits = [p for p in patterns if fnmatch.fnmatch(path, p) or path.startswith(p + "/")]
        assert not hits, f".dockerignore drops {path}, which `pip install .` needs ({hits})"
