"""The oracle on hand-made input: its answers are worked out here by hand from the rule
files, so a wrong oracle cannot agree with a wrong pipeline by accident."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from onemap.streams.typhoon import cap_message
from tests.oracle.data import OracleData
from tests.oracle.hazards import HazardRecord, hazards
from tests.oracle.inputs import read_inputs
from tests.oracle.ranking import Scorer, entries, lifecycle, top_k

CST = timezone(timedelta(hours=8))
T0 = datetime(2017, 8, 23, 8, 0, tzinfo=CST)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def record(**fields: object) -> bytes:
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v
                       for k, v in fields.items()}).encode()


@pytest.fixture(scope="module")
def data() -> OracleData:
    return OracleData.load()


def _inputs() -> dict[str, list[bytes]]:
    # 前山河南屏站 ZH-RIV-001: warning 1.60 m, guaranteed 2.30 m -> blue 1.30, yellow 1.60,
    # orange 2.00, red 2.30; a colour in force holds 0.05 m below its bound; down after 600 s
    river = [(0, 1.00), (5, 1.65), (10, 2.35), (15, 2.10), (20, 2.10), (25, 2.10),
             (25, 3.00),   # duplicate event time: counted once (the first)
             (-10, 3.00),  # 35 min older than the newest: too late
             (30, 1.00), (40, 1.00)]
    water = [record(station_id="ZH-RIV-001", observed_at=at(m), level_m=v) for m, v in river]
    # another river station keeps the feed's stream time going to 09:00
    water += [record(station_id="ZH-RIV-002", observed_at=at(m), level_m=0.5)
              for m in range(0, 61, 5)]
    weather = [record(station_id="ZH-AWS-026", observed_at=at(m), rain_mm=20.0,
                      wind_speed_ms=5.0, wind_gust_ms=8.0) for m in (60, 90, 120)]
    incident = [record(incident_id="119-T-1", observed_at=at(60), channel="119",
                       category="fire", lon=113.55, lat=22.26, injured=12),
                record(incident_id="119-T-1", observed_at=at(90), channel="119",
                       category="fire", lon=113.55, lat=22.26, injured=12, status="closed")]
    cap = [cap_message("T-CAP-1", at(0), msg_type="Alert", event="暴雨黄色预警信号",
                       severity="Moderate", headline="发布暴雨黄色预警信号", previous=None),
           cap_message("T-CAP-2", at(60), msg_type="Cancel", event="解除暴雨预警信号",
                       severity="Minor", headline="解除暴雨预警信号",
                       previous=("T-CAP-1", at(0)))]
    return {"water": water, "weather": weather, "incident": incident,
            "cap": [c.encode() for c in cap]}


def steps(records: list[HazardRecord], hazard_id: str) -> list[tuple[int, str, str]]:
    names = ("none", "blue", "yellow", "orange", "red")
    return [(int((h.observed_at - T0).total_seconds() // 60), names[h.previous_level], h.label)
            for h in records if h.hazard_id == hazard_id]


def test_hand_made_input_gives_the_hand_worked_hazards(data: OracleData) -> None:
    readings, rejected = read_inputs(_inputs(), data)
    assert rejected.empty
    records, too_late = hazards(readings, data)
    assert len(too_late) == 1
    assert steps(records, "water_level:ZH-RIV-001") == [
        (5, "none", "yellow"), (10, "yellow", "red"),
        (25, "red", "orange"),   # 2.10 m: below red's 2.25 m hold line from 08:15, 600 s later
        (40, "orange", "none")]  # below every colour from 08:30, 600 s later
    # 3 h rain 60 mm at 10:00 (orange: 50 mm in 3 h); 40 mm at 09:30 reached nothing
    assert steps(records, "rainstorm:ZH-AWS-026") == [(120, "none", "orange")]
    assert steps(records, "wind:ZH-AWS-026") == []
    # 12 injured: 较大 (yellow, 10+); closed ends it at once
    assert steps(records, "incident:119-T-1") == [(60, "none", "yellow"), (90, "yellow", "none")]
    assert steps(records, "cap_warning:T-CAP-1") == [(0, "none", "yellow"), (60, "yellow", "none")]
    # ZH-RIV-001 last reported at 08:40, the feed went on to 09:00: 20 min > 3 × 300 s
    assert steps(records, "sensor_silent:ZH-RIV-001") == [(40, "none", "yellow")]
    assert {h.hazard_id for h in records} == {
        "water_level:ZH-RIV-001", "rainstorm:ZH-AWS-026", "incident:119-T-1",
        "cap_warning:T-CAP-1", "sensor_silent:ZH-RIV-001"}
    river = next(h for h in records if h.hazard_id == "water_level:ZH-RIV-001")
    assert river.place[1] == "440402" and river.key_figure == "水位"  # 香洲区
    cap = next(h for h in records if h.hazard_id == "cap_warning:T-CAP-1")
    assert cap.place == ("440400", "", "", "")  # the polygon covers the whole city


def test_a_changed_threshold_changes_the_oracle(data: OracleData) -> None:
    readings, _ = read_inputs(_inputs(), data)
    changed = data.with_rule_value("rainstorm", ("levels", "orange", "rain_mm"), 70)
    records, _ = hazards(readings, changed)
    assert steps(records, "rainstorm:ZH-AWS-026") == [(120, "none", "yellow")]


def test_lifecycle_and_top_k_on_the_hand_made_hazards(data: OracleData) -> None:
    readings, _ = read_inputs(_inputs(), data)
    records, _ = hazards(readings, data)
    records.sort(key=lambda h: h.observed_at)
    alerts = lifecycle(records, data)
    river = [(a.seq, a.transition) for a in alerts if a.hazard_id == "water_level:ZH-RIV-001"]
    assert river == [(1, "new"), (2, "escalated"), (3, "de-escalated"), (4, "resolved")]
    top = top_k(entries(alerts), at(12), 5)
    assert [t[0] for t in top] == ["water_level:ZH-RIV-001", "cap_warning:T-CAP-1"]
    assert top[0][1] == "red"


def test_the_score_of_the_worked_example_in_docs_ranking(data: OracleData) -> None:
    """docs/ranking.md: an orange accelerating hazard point in a village of 9,000 with one
    school within 500 m, steady, a red rainstorm in the same town: 107.8."""
    place = ("440400", "440402", "440402001", "440402001001")
    slope = HazardRecord("geohazard:GH1", "geohazard", "geohazard", "GH1", 3, 2, T0, place,
                         113.55, 22.22, False, "位移速率", 12.0,
                         {"direction": "steady", "rate_per_h": None,
                          "hours_to_next_level": None, "accelerating": "yes"})
    rain = HazardRecord("rainstorm:R1", "rainstorm", "weather", "R1", 4, 0, T0, place,
                        113.55, 22.22, False, "3小时降雨", 120.0, {})
    scorer = Scorer(data, population=lambda _: 9_000,
                    sites=lambda h, r: {"school": 1} if r == 500 else {})
    score, parts = scorer.score(slope, [rain], T0)
    assert parts == {"level": 60.0, "exposure_population": 10.0, "exposure_sites": 8.0,
                     "trend": 0.0, "compound": 20.0, "freshness": 0.0, "confidence": 9.8}
    assert score == 107.8
    later = scorer.score(slope, [rain], T0 + timedelta(hours=1, minutes=10))[1]
    assert later["freshness"] == -24.5  # factor 0.75 an hour and ten minutes later
