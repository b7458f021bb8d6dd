"""Metric names in the rules and the dashboard are the ones OneMap exports, so renaming a metric
in code (or a typo in an expression) fails here instead of leaving a silent alert or empty panel.
"""

from __future__ import annotations

from typing import Any

import pytest
from deploy_kit import (
    PLANNED_METRICS,
    dashboard_exprs,
    exported_metric_families,
    exported_metric_names,
    promql_metric_names,
)

# Defined metrics the dashboard deliberately does not chart (name: reason). Empty today.
NOT_CHARTED: dict[str, str] = {}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    names = exported_metric_names()
    assert "onemap_records_in_total" in names, "metric discovery found nothing"
    return names


@pytest.mark.parametrize(("expr", "expected"), [
    ('sum by (feed) (rate(onemap_records_in_total{feed="x"}[5m] offset 15m)) > 0',
     {"onemap_records_in_total"}),
    ("histogram_quantile(0.99, sum by (stage, le) (rate(a_bucket[$__rate_interval])))",
     {"a_bucket"}),
    ('up{job="w"} == 0 unless on (instance) b', {"up", "b"}),
    ('absent(up{job="w"} == 1) and ALERTS{alertname="X"}', {"up", "ALERTS"}),
    ("1e3 * c / d", {"c", "d"}),
])
def test_promql_metric_names(expr: str, expected: set[str]) -> None:
    assert promql_metric_names(expr) == expected


def test_planned_metrics_are_not_yet_defined(exported: set[str]) -> None:
    done = sorted(set(PLANNED_METRICS) & exported)
    assert not done, f"now exported by the code; remove from PLANNED_METRICS: {done}"


def test_rules_use_exported_or_planned_metrics(
    rules: list[dict[str, Any]], exported: set[str],
) -> None:
    problems = []
    for rule in rules:
        for name in promql_metric_names(rule["expr"]):
            if name in ("up", "ALERTS"):
                continue
            if not name.startswith("onemap_"):
                problems.append(f"{rule.get('alert')}: {name} is not a OneMap metric")
            elif name not in exported and name not in PLANNED_METRICS:
                problems.append(f"{rule.get('alert')}: {name} is neither exported nor planned")
    assert not problems, "\n".join(problems)


def test_dashboard_uses_exported_or_planned_metrics(
    dashboard: dict[str, Any], exported: set[str],
) -> None:
    problems = []
    for title, expr in dashboard_exprs(dashboard):
        for name in promql_metric_names(expr):
            if name == "up":
                continue
            if not name.startswith("onemap_"):
                problems.append(f"{title}: {name} is neither onemap_* nor up")
            elif name not in exported and name not in PLANNED_METRICS:
                problems.append(f"{title}: {name} is neither exported nor planned")
    assert not problems, "\n".join(problems)


def test_every_exported_metric_is_charted(dashboard: dict[str, Any]) -> None:
    used = set().union(*(promql_metric_names(e) for _, e in dashboard_exprs(dashboard)))
    uncharted = sorted(family for family, samples in exported_metric_families().items()
                       if family not in NOT_CHARTED and not samples & used)
    assert not uncharted, (f"metrics not on the Grafana dashboard: {uncharted}; chart them in "
                           "deploy/grafana/dashboards/onemap.json or list them in NOT_CHARTED")
