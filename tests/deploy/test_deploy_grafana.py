"""Grafana provisioning and the OneMap dashboard."""

from __future__ import annotations

from typing import Any

from deploy_kit import GRAFANA_PROVISIONING, all_panels, load_yaml


def _datasource() -> dict[str, Any]:
    (ds,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "onemap.yml")["datasources"]
    return dict(ds)


def test_datasource_points_at_the_compose_prometheus(compose: dict[str, Any]) -> None:
    ds = _datasource()
    assert ds["type"] == "prometheus" and ds["uid"]
    assert ds["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def test_dashboard_provider_reads_the_mounted_folder(compose: dict[str, Any]) -> None:
    (provider,) = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "onemap.yml")["providers"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/onemap.json"


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "onemap-overview"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"]


def test_every_panel_has_datasource_and_query(dashboard: dict[str, Any]) -> None:
    uid = _datasource()["uid"]
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 10
    problems = []
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        title = p.get("title") or f"panel {p['id']}"
        if p.get("datasource", {}).get("uid") != uid:
            problems.append(f"{title}: datasource must be the provisioned uid {uid!r}")
        targets = p.get("targets", [])
        if not targets or not all(t.get("expr", "").strip() for t in targets):
            problems.append(f"{title}: needs at least one query, each with an expression")
        if any(t.get("datasource", {}).get("uid", uid) != uid for t in targets):
            problems.append(f"{title}: a query uses another datasource")
        if {"x", "y", "w", "h"} - set(p.get("gridPos", {})):
            problems.append(f"{title}: gridPos incomplete")
    assert not problems, "\n".join(problems)


def test_dashboard_covers_what_ops_asked_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t.get("expr", "") for p in all_panels(dashboard) for t in p.get("targets", []))
    stage_p = "histogram_quantile({}, sum by (stage, le) (rate(onemap_stage_batch_duration_seconds"
    for needle in (
        "onemap_records_in_total", "onemap_records_out_total", "by (feed, reason)",
        stage_p.format("0.5"), stage_p.format("0.99"), "onemap_event_to_alert_seconds_bucket",
        "by (level, transition)", "onemap_sms_messages_total", "onemap_sink_errors_total",
        "onemap_rules_version_info", "onemap_rule_reloads_total", "onemap_consumer_lag_records",
    ):
        assert needle in exprs, f"dashboard has no query with {needle!r}"
