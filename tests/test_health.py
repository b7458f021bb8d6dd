"""Worker health as pure functions: feed health for the wall, consumer lag, live hazards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from onemap.metrics import PipelineMetrics
from onemap.sinks.dashboard.live import LiveState
from onemap.streams.health import (
    DEFAULT_SILENT_AFTER_S,
    FeedActivity,
    consumer_lag,
    feed_health,
    live_hazards,
    sync_gauge,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()


def test_feed_health_has_the_fields_the_dashboard_reads() -> None:
    water = FeedActivity()
    water.saw(2, [T0 - 300, T0 - 240], received_s=T0)
    water.saw(1, [], received_s=T0 + 10)  # a batch of dead letters only: no event time
    health = feed_health({"water": water}, ["water:ZH-TIDE-005", "weather:G1"], now_s=T0 + 20)
    assert set(health) == {"water", "weather"}
    assert health["water"] == {
        "last_record_at": "2026-11-23T12:00:10.000+00:00",
        "last_observed_at": "2026-11-23T11:56:00.000+00:00",
        "records_total": 3,
        "silent_after_s": DEFAULT_SILENT_AFTER_S,
        "records_per_min": 3.0,
        "silent_sources": ["ZH-TIDE-005"],
    }
    weather = health["weather"]  # known only from its silent source
    assert weather["last_record_at"] is None and weather["records_total"] == 0
    assert weather["silent_sources"] == ["G1"]


def test_records_per_minute_counts_the_last_minute_only() -> None:
    act = FeedActivity()
    act.saw(100, [], received_s=T0)
    act.saw(5, [], received_s=T0 + 50)
    assert act.records_per_min(T0 + 55) == 105.0
    assert act.records_per_min(T0 + 70) == 5.0
    assert act.records_per_min(T0 + 200) == 0.0
    act.saw(1, [], received_s=T0 + 200)
    assert len(act.recent) == 1, "old buckets are dropped"


def test_newest_event_time_never_goes_back() -> None:
    act = FeedActivity()
    act.saw(1, [T0], received_s=T0)
    act.saw(1, [T0 - 3600], received_s=T0 + 1)  # a late reading
    assert act.last_event_s == T0 and act.last_received_s == T0 + 1


def test_iso_texts_compare_in_time_order() -> None:
    # the Redis merge keeps the newest time by comparing texts
    a, b = FeedActivity(), FeedActivity()
    a.saw(1, [], received_s=T0)
    b.saw(1, [], received_s=T0 + 0.5)
    ha = feed_health({"x": a}, [], T0)["x"]["last_record_at"]
    hb = feed_health({"x": b}, [], T0)["x"]["last_record_at"]
    assert ha < hb and len(ha) == len(hb)


def test_the_wall_shows_a_feed_ok_or_silent_from_this_health() -> None:
    act = FeedActivity()
    act.saw(1, [T0], received_s=T0)
    health = orjson.loads(orjson.dumps(feed_health({"water": act}, [], T0)["water"]))
    state = LiveState()
    state.feed_health = {"water": health}

    def silent(after_s: float) -> Any:
        now = datetime.fromtimestamp(T0 + after_s, UTC)
        return next(f for f in state.feeds(now) if f["feed"] == "water")["silent"]

    assert silent(60) is False
    assert silent(DEFAULT_SILENT_AFTER_S + 1) is True


def test_consumer_lag_is_end_minus_committed_for_consumed_topics_only() -> None:
    assigned = [("onemap.in.water", 0), ("onemap.in.water", 1), ("onemap.hazards", 2),
                ("app-onemap-alert-state-changelog", 2), ("onemap.alerts", 3)]
    ends = {("onemap.in.water", 0): 120, ("onemap.in.water", 1): 5, ("onemap.hazards", 2): 7,
            ("app-onemap-alert-state-changelog", 2): 99, ("onemap.alerts", 3): None}
    committed = {("onemap.in.water", 0): 100, ("onemap.in.water", 1): 6}
    lag = consumer_lag(assigned, ["onemap.in.water", "onemap.hazards", "onemap.alerts"],
                       ends.get, committed.get)
    assert lag == {
        ("onemap.in.water", 0): 20,
        ("onemap.in.water", 1): 0,  # an end offset reading low is not negative lag
        ("onemap.hazards", 2): 7,   # nothing committed yet: all of it is lag
    }  # the changelog is not consumed by an agent; an unknown end is left out


def test_live_hazards_count_open_states_of_active_partitions() -> None:
    entries = [
        ("water_level:A", {"open": True, "level": 4, "partition": 0}),
        ("water_level:B", {"open": True, "level": 4, "partition": 1}),
        ("water_level:C", {"open": True, "level": 2, "partition": 1}),
        ("sensor_silent:D", {"open": True, "level": 2, "partition": 1}),
        ("rainfall:E", {"open": False, "level": 3, "partition": 1}),  # resolved
        ("rainfall:F", {"open": True, "level": 3, "partition": 2}),   # a standby copy
        ("junk", None),
    ]
    assert live_hazards(entries, [0, 1]) == {
        ("red", "water_level"): 2, ("yellow", "water_level"): 1,
        ("yellow", "sensor_silent"): 1,
    }
    assert live_hazards(entries, None)[("orange", "rainfall")] == 1


def test_sync_gauge_removes_labels_that_are_gone() -> None:
    registry = CollectorRegistry()
    m = PipelineMetrics(registry)
    shown = sync_gauge(m.consumer_lag, {("t", "0"): 3.0, ("t", "1"): 0.0}, set())
    shown = sync_gauge(m.consumer_lag, {("t", "1"): 4.0}, shown)  # partition 0 revoked
    text = generate_latest(registry).decode()
    assert 'onemap_consumer_lag_records{partition="1",topic="t"} 4.0' in text
    assert 'partition="0"' not in text
    assert shown == {("t", "1")}
