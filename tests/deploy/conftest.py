"""Fixtures for the deployment assets: compose file, Prometheus, Grafana, image.

Everything is checked as text or with the real tools (promtool); nothing needs a network or a
Docker engine.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from deploy_kit import (
    COMPOSE_FILE,
    DASHBOARD_FILE,
    DEPLOY,
    PROMETHEUS_CONFIG,
    interpolate,
    load_yaml,
)


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="session")
def compose_variables(compose_raw: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    interpolate(compose_raw, {}, seen)
    return seen


@pytest.fixture(scope="session")
def compose(compose_raw: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with no variables set (every default applied)."""
    result: dict[str, Any] = interpolate(compose_raw, {}, set())
    return result


@pytest.fixture(scope="session")
def prometheus_config() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(PROMETHEUS_CONFIG)
    return data


@pytest.fixture(scope="session")
def rules() -> list[dict[str, Any]]:
    """Every alerting/recording rule of deploy/prometheus/rules/, flattened."""
    out: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            out.extend(group["rules"])
    return out


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    with DASHBOARD_FILE.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool is required, not optional: CI installs Debian's `prometheus` package."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install it (Debian/Ubuntu: "
                    "`apt-get install -y prometheus`) to check the Prometheus config and rules",
                    pytrace=False)
    return path
