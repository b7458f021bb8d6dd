"""Prometheus config and alert rules: promtool's checks and unit tests, plus OneMap's own rules
for alerts (severity, bilingual text, runbook) and for how scrape targets match the compose file.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from deploy_kit import DEPLOY, PROMETHEUS_CONFIG, RULES_TEST_FILE, load_yaml

SEVERITIES = {"critical", "warning"}
CJK = re.compile(r"[\u4e00-\u9fff]")
ENGLISH = re.compile(r"\b[A-Za-z]{2,}\b(?:\W+\b[A-Za-z]{2,}\b){2,}")


def bilingual(text: str) -> bool:
    """Chinese, then " / ", then English: the convention of every summary and description."""
    chinese, sep, english = text.partition(" / ")
    return bool(sep and CJK.search(chinese) and ENGLISH.search(english) and not CJK.search(english))


def run(promtool: str, *args: str) -> None:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, (
        f"promtool {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def test_promtool_check_config(promtool: str) -> None:
    run(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_check_rules(promtool: str) -> None:
    files = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
    assert files
    run(promtool, "check", "rules", *map(str, files))


def test_promtool_unit_tests(promtool: str) -> None:
    run(promtool, "test", "rules", str(RULES_TEST_FILE))


def test_every_alert_is_tested_firing_and_quiet(rules: list[dict[str, Any]]) -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in load_yaml(RULES_TEST_FILE)["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert alerts - firing == set(), f"alerts never tested firing: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts never tested quiet: {sorted(alerts - quiet)}"


@pytest.fixture(scope="module")
def alerts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [r for r in rules if "alert" in r]
    assert out, "no alert rules found"
    return out


def test_alerts_carry_severity_bilingual_text_and_runbook(alerts: list[dict[str, Any]]) -> None:
    problems = []
    for rule in alerts:
        name = rule["alert"]
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity label must be one of {sorted(SEVERITIES)}")
        notes = rule.get("annotations", {})
        for key in ("summary", "description"):
            text = notes.get(key, "")
            if not bilingual(text):
                problems.append(f"{name}: {key} must read '中文 / English'")
        if "README.md#" + name.lower() not in notes.get("runbook", ""):
            problems.append(f"{name}: runbook must point at deploy/README.md#{name.lower()}")
    assert not problems, "\n".join(problems)


def test_runbook_sections_exist(alerts: list[dict[str, Any]]) -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    headings = {m.group(1).strip().lower() for m in re.finditer(r"^#+\s+(.+)$", readme, re.M)}
    missing = [r["alert"] for r in alerts if r["alert"].lower() not in headings]
    assert not missing, f"deploy/README.md has no section for: {missing}"


def test_alert_names_are_unique(alerts: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))


def _job(config: dict[str, Any], name: str) -> dict[str, Any]:
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert name in jobs, f"prometheus.yml has no job {name!r}"
    return jobs[name]


def test_workers_are_discovered_by_dns_on_their_metrics_port(
    prometheus_config: dict[str, Any], compose: dict[str, Any],
) -> None:
    job = _job(prometheus_config, "onemap-worker")
    assert "static_configs" not in job, "static worker targets miss scaled replicas"
    (sd,) = job["dns_sd_configs"]
    assert "worker" in sd["names"] and sd.get("type", "SRV") == "A"
    port = compose["services"]["worker"]["environment"]["ONEMAP_METRICS_PORT"]
    assert str(sd["port"]) == str(port)


def test_dashboard_is_scraped_on_its_port(
    prometheus_config: dict[str, Any], compose: dict[str, Any],
) -> None:
    job = _job(prometheus_config, "onemap-dashboard")
    port = compose["services"]["dashboard"]["environment"]["ONEMAP_DASHBOARD_PORT"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"dashboard:{port}"]


def test_alerts_use_the_scrape_job_names(
    alerts: list[dict[str, Any]], prometheus_config: dict[str, Any],
) -> None:
    jobs = {j["job_name"] for j in prometheus_config["scrape_configs"]}
    for rule in alerts:
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']} selects job {job!r}, which is not scraped"


def test_prometheus_service_mounts_config_and_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./deploy/prometheus/rules"
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["rules/*.yml"], "rule_files must work in repo and container"
