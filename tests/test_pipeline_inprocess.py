"""The whole pure pipeline in process (ingest -> rules -> lifecycle), on the shipped map,
registries and rules: raw bytes in, alert transitions out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from onemap.geo.places import PlaceIndex
from onemap.records import Alert
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import RulesStage
from onemap.rules.lifecycle import LifecycleStage
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.streams.context import exposure_of
from onemap.streams.deadletter import RawRecord
from onemap.streams.ingest import IngestStage

PLACES = PlaceIndex.load()
REGISTRIES = Registries.load(default_registries_dir())
BOOK = load_rulebook(default_rules_dir())
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Pipeline:
    def __init__(self) -> None:
        self.ingest = IngestStage(PLACES.find, REGISTRIES, find_area=PLACES.find_area,
                                  find_codes=PLACES.find_codes)
        self.rules = RulesStage(REGISTRIES)
        self.lifecycle = LifecycleStage(exposure_of(PLACES, default_registries_dir()))
        self.source_state: dict[str, Any] = {}
        self.alert_state: dict[str, Any] = {}
        self.dead: list[str] = []

    def push(self, feed: str, *records: dict[str, Any] | bytes) -> list[Alert]:
        raw = [RawRecord(r if isinstance(r, bytes) else json.dumps(r).encode())
               for r in records]
        ingested = self.ingest.process(feed, raw)
        self.dead += [d.reason for d in ingested.dead_letters]
        ruled = self.rules.process(ingested.observations, self.source_state, BOOK)
        self.dead += [r.reason for r in ruled.rejected]
        return self.lifecycle.process(ruled.hazards, self.alert_state, BOOK.urgency,
                                      BOOK.lifecycle, now=NOW)


def test_rainstorm_at_a_station_becomes_a_located_scored_alert() -> None:
    p = Pipeline()
    station = REGISTRIES.weather["ZH-AWS-028"]
    alerts = p.push("weather", *[
        {"station_id": station.station_id, "observed_at": f"2017-08-23T{h:02d}:00:00+08:00",
         "rain_mm": 40.0} for h in (10, 11, 12)])
    assert [(a.transition, a.level.label) for a in alerts] == [("new", "orange"),
                                                               ("escalated", "red")]
    red = alerts[-1]
    # each station stands inside the town it is named after (红旗自动气象站 -> 红旗镇)
    assert red.hazard.place.town_name.startswith(station.name.removesuffix("自动气象站"))
    assert red.hazard.source_name == station.name
    assert red.score_breakdown["level"] == 100.0 and red.score_breakdown["exposure_population"] > 0


def test_incident_is_located_by_its_own_position() -> None:
    p = Pipeline()
    [alert] = p.push("incident", {
        "incident_id": "119-1", "observed_at": "2017-08-23T12:40:00+08:00", "channel": "119",
        "category": "fire", "lon": 113.576, "lat": 22.271, "injured": 12})
    assert alert.level.label == "yellow"  # 10-49 injured: 较大
    assert alert.hazard.place.town_name == "香湾街道"


def test_gcj02_position_is_converted_before_locating() -> None:
    p = Pipeline()
    # the same place sent in GCJ-02 (Amap) coordinates: offset by ~500 m in Zhuhai
    from onemap.geo.crs import wgs84_to_gcj02
    glon, glat = wgs84_to_gcj02(113.576, 22.271)
    [alert] = p.push("incident", {
        "incident_id": "110-9", "observed_at": "2017-08-23T12:40:00+08:00", "channel": "110",
        "category": "traffic", "lon": float(glon), "lat": float(glat), "crs": "gcj02",
        "injured": 1})
    assert abs(alert.hazard.lon - 113.576) < 1e-5 and abs(alert.hazard.lat - 22.271) < 1e-5


def test_bad_records_are_dead_letters_with_reasons_and_the_rest_flows() -> None:
    p = Pipeline()
    alerts = p.push("water", b"{oops", {"station_id": "NOPE", "observed_at":
                                        "2017-08-23T12:00:00+08:00", "level_m": 1.0},
                    {"station_id": "ZH-RIV-001", "observed_at": "2017-08-23T12:00:00+08:00",
                     "level_m": 2.5})
    assert p.dead == ["invalid-json", "unknown-source"]
    assert [a.level.label for a in alerts] == ["red"]
    p.push("water", {"station_id": "ZH-RIV-001", "observed_at": "2017-08-23T11:00:00+08:00",
                     "level_m": 1.0})
    assert p.dead[-1] == "too-late"


def test_cap_warning_lifecycle_alert_update_cancel() -> None:
    from onemap.streams.feeds.cap import EXAMPLE

    p = Pipeline()
    [new] = p.push("cap", EXAMPLE)
    assert (new.transition, new.level.label) == ("new", "red")  # 红色 in the event wins
    assert new.hazard.hazard_type == "cap_warning"
    # the example's polygon spans 香洲区's towns: the warning is the district's
    assert new.hazard.place.district_name == "香洲区" and new.hazard.place.town_code == ""
    assert "台风红色预警信号" in new.hazard.reason
    ref = "zhuhai@weather.gd.cn,44000041600000_20170823100000,2017-08-23T10:00:00+08:00"
    update = (EXAMPLE.replace(b"<msgType>Alert</msgType>", b"<msgType>Update</msgType>")
              .replace(b"<scope>Public</scope>", b"<scope>Public</scope><references>"
                       + ref.encode() + b"</references>")
              .replace(b"_20170823100000</identifier>", b"_20170823120000</identifier>")
              .replace(b"10:00:00+08:00</sent>", b"12:00:00+08:00</sent>")
              .replace("台风红色".encode(), "台风橙色".encode()))
    [down] = p.push("cap", update)
    assert (down.transition, down.level.label) == ("de-escalated", "orange")
    assert down.hazard_id == new.hazard_id, "an Update continues the same warning"
    cancel = (update.replace(b"<msgType>Update</msgType>", b"<msgType>Cancel</msgType>")
              .replace(b"12:00:00+08:00</sent>", b"13:00:00+08:00</sent>")
              .replace(b"_20170823120000</identifier>", b"_20170823130000</identifier>"))
    [end] = p.push("cap", cancel)
    assert end.transition == "resolved"


def test_cap_drill_is_marked_exercise_and_system_messages_are_not_acted_on() -> None:
    from onemap.streams.feeds.cap import EXAMPLE

    p = Pipeline()
    [drill] = p.push("cap", EXAMPLE.replace(b"<status>Actual</status>",
                                            b"<status>Exercise</status>"))
    assert drill.hazard.exercise and drill.status == "exercise"
    p.push("cap", EXAMPLE.replace(b"<status>Actual</status>", b"<status>System</status>"))
    assert p.dead == ["not-actionable"]


def test_cap_area_given_only_by_administrative_geocodes_is_located_by_them() -> None:
    from onemap.streams.feeds.cap import EXAMPLE

    p = Pipeline()
    by_code = EXAMPLE.replace(
        b"<polygon>22.2,113.5 22.3,113.5 22.3,113.6 22.2,113.6 22.2,113.5</polygon>",
        b"<geocode><valueName>GB/T 2260</valueName><value>440404</value></geocode>")
    [alert] = p.push("cap", by_code)
    assert alert.hazard.place.district_name == "金湾区" and alert.hazard.place.town_code == ""
    nowhere = by_code.replace(b"<value>440404</value>", b"<value>110101</value>")
    assert p.push("cap", nowhere.replace(b"44000041600000_20170823100000",
                                         b"44000041600000_20170823100001")) == []
    assert p.dead == ["out-of-area"]
