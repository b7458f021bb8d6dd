"""Paths and helpers shared by the deployment tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "onemap.rules.yml"
RULES_TEST_FILE = DEPLOY / "prometheus" / "tests" / "onemap.rules.test.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "onemap.json"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR and $$ (a literal $).
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def interpolate(value: Any, env: dict[str, str], seen: set[str]) -> Any:
    """Compose-style variable interpolation (what `docker compose config` does first).

    Unset required variables (``${X:?msg}``) become ``"<X>"`` so the rest can be checked.
    Every variable name met is added to ``seen``.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, seen) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        seen.add(name)
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op in (":-", ":?") and not current:
            current = None
        if current is not None:
            return current
        if op in (":-", "-"):
            return str(interpolate(arg, env, seen))
        if op in (":?", "?"):
            return f"<{name}>"
        return ""

    return _INTERPOLATION.sub(sub, value)


# --- metric names ---------------------------------------------------------------------------

# Metrics referenced by the rules or the dashboard before the code exports them. Each entry says
# what it will be; once a metric container defines it, the test asks for it to be removed here.
PLANNED_METRICS: dict[str, str] = {}

# Modules holding the project's metric containers (classes named *Metrics with a registry).
METRIC_MODULES = ("onemap.metrics", "onemap.sinks.dashboard.server", "onemap.sinks.sms.followup")

_PROMQL_WORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords or label names)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)      # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)     # range and subquery selectors
    text = _GROUPING.sub("", text)             # by (...), on (...), group_left (...)
    names: set[str] = set()
    for m in _IDENT.finditer(text):
        word = m.group()
        if text[m.end():].lstrip().startswith("(") or word.lower() in _PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(word)
    return names


def exported_metric_families() -> dict[str, set[str]]:
    """Each metric the project's containers declare -> the sample names it exposes (e.g.
    ``x`` -> ``{x_bucket, x_sum, x_count}``), found by instantiating every container on a
    fresh registry."""
    import importlib
    import inspect

    from prometheus_client import CollectorRegistry

    suffixes = {
        "counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"), "info": ("_info",), "stateset": ("",),
        "enum": ("",), "unknown": ("",),
    }
    families: dict[str, set[str]] = {}
    for module_name in METRIC_MODULES:
        module = importlib.import_module(module_name)
        for cls_name, cls in vars(module).items():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__
                    and cls_name.endswith("Metrics")):
                continue
            registry = CollectorRegistry()
            cls(registry)
            for family in registry.collect():
                families[family.name] = {family.name + s for s in suffixes[family.type]}
    return families


def exported_metric_names() -> set[str]:
    """Every sample name the project's metric containers can expose."""
    return set().union(*exported_metric_families().values())


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel, rows' children included."""
    out: list[tuple[str, str]] = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            out.append((panel.get("title", "?"), target.get("expr", "")))
    return out


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out
