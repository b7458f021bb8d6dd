"""The typhoon scenario: reproducible, and its key moments produce the expected levels at the
expected places when run through the whole pure pipeline."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from onemap.records import Alert
from onemap.streams import typhoon
from tests.test_pipeline_inprocess import Pipeline

CST = typhoon.CST


@pytest.fixture(scope="module")
def run() -> list[Alert]:
    p = Pipeline()
    alerts: list[Alert] = []
    for line in typhoon.generate():
        rec = line["record"]
        raw = rec.encode() if isinstance(rec, str) else json.dumps(rec).encode()
        alerts += p.push(line["feed"], raw)
    assert p.dead == [], "every generated record is valid"
    return alerts


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2017, 8, 23, hour, minute, tzinfo=CST)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = typhoon.write(tmp_path / "a.jsonl").read_bytes()
    b = typhoon.write(tmp_path / "b.jsonl").read_bytes()
    assert a == b and len(a.splitlines()) > 10_000
    assert typhoon.generate(seed=1) != typhoon.generate(seed=2)


def test_cap_typhoon_signal_escalates_to_red_then_is_cancelled(run: list[Alert]) -> None:
    steps = [(a.transition, a.level.label) for a in run
             if a.hazard_id.startswith("cap_warning:") and "_TY_" in a.hazard_id]
    assert steps == [("new", "yellow"), ("escalated", "orange"), ("escalated", "red"),
                     ("de-escalated", "orange"), ("resolved", "none")]


def test_storm_surge_puts_the_east_coast_tide_stations_over_guaranteed_level(
        run: list[Alert]) -> None:
    red_tides = {a.hazard.source_name for a in run if a.hazard.hazard_type == "water_level"
                 and a.level.label == "red" and "潮位站" in a.hazard.source_name}
    assert {"香洲港潮位站", "横琴潮位站"} <= red_tides
    first = min(a.hazard.observed_at for a in run if a.hazard.source_name == "香洲港潮位站"
                and a.level.label == "red")
    assert at(11) <= first <= at(13)  # around landfall (12:50)


def test_xiangzhou_underpasses_flood(run: list[Alert]) -> None:
    flooded = {a.hazard.source_name for a in run if a.hazard.source_id.startswith("ZH-WLG-")
               and a.level.label in ("orange", "red")}
    assert len(flooded) >= 3
    assert all(a.hazard.place.district_name == "香洲区" for a in run
               if a.hazard.source_id.startswith("ZH-WLG-"))


def test_a_few_hazard_points_accelerate(run: list[Alert]) -> None:
    accelerating = {a.hazard.source_id for a in run if a.hazard.hazard_type == "geohazard"
                    and a.hazard.trend.get("accelerating") == "yes"}
    # the rain alone takes most points to orange or red; a few also start to slide
    assert 1 <= len(accelerating) <= 8


def test_red_wind_reaches_jinwan_around_landfall(run: list[Alert]) -> None:
    jinwan = [a for a in run if a.hazard.hazard_type == "wind" and a.level.label == "red"
              and a.hazard.place.district_name == "金湾区"]
    assert jinwan and min(a.hazard.observed_at for a in jinwan) <= at(12, 50)


def test_incidents_surge_with_the_storm() -> None:
    reported = Counter(
        datetime.fromisoformat(line["record"]["observed_at"]).hour
        for line in typhoon.generate()
        if line["feed"] == "incident" and line["record"]["status"] == "reported")
    assert sum(reported[h] for h in (11, 12, 13)) > 3 * sum(reported[h] for h in (8, 9))


def test_a_sensor_drops_out_at_the_height_of_the_storm() -> None:
    last = max(datetime.fromisoformat(line["record"]["observed_at"])
               for line in typhoon.generate()
               if line["feed"] == "water" and line["record"]["station_id"] == "ZH-TIDE-005")
    assert last < typhoon.DROPOUT_AT <= last + timedelta(minutes=5)
