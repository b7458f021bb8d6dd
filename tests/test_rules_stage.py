"""The rules stage in process on the shipped registries and rules: windows by event time,
late and duplicate readings, hysteresis in time, each feed's criteria at its thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from onemap.levels import WarningLevel
from onemap.records import Hazard, Observation, Place
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import Decision, RulesResult, RulesStage
from onemap.rules.rulebook import default_rules_dir, load_rulebook

BOOK = load_rulebook(default_rules_dir())
REGISTRIES = Registries.load(default_registries_dir())
CST = timezone(timedelta(hours=8))
T0 = datetime(2017, 8, 23, 8, 0, tzinfo=CST)
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001", "x")


def obs(feed: str, source: str, minutes: float, values: dict[str, float],
        attrs: dict[str, str] | None = None) -> Observation:
    return Observation(feed=feed, source_id=source, source_kind=feed,
                       observed_at=T0 + timedelta(minutes=minutes), lon=113.3, lat=22.1,
                       place=PLACE, values=values, attrs=attrs or {})


class Run:
    def __init__(self) -> None:
        self.stage = RulesStage(REGISTRIES)
        self.state: dict[str, Any] = {}
        self.hazards: list[Hazard] = []
        self.last = RulesResult()

    def feed(self, *observations: Observation) -> RulesResult:
        self.last = self.stage.process(list(observations), self.state, BOOK)
        self.hazards += self.last.hazards
        return self.last

    def levels(self, hazard_type: str) -> list[str]:
        return [h.level.label for h in self.hazards if h.hazard_type == hazard_type]


def rain(minutes: float, mm: float, station: str = "ZH-AWS-028") -> Observation:
    return obs("weather", station, minutes, {"rain_mm": mm})


@pytest.mark.parametrize(("hourly", "expected"), [
    ([49.9], []), ([50.0], ["orange"]),  # 50 mm in 3 h -> orange (and so yellow, blue)
    ([20.0, 20.0, 9.9], []), ([20.0, 20.0, 10.0], ["orange"]),
    ([40.0, 30.0, 29.9], ["orange"]), ([40.0, 30.0, 30.0], ["orange", "red"]),
])
def test_rainstorm_thresholds_in_rolling_three_hours(hourly: list[float],
                                                     expected: list[str]) -> None:
    run = Run()
    for i, mm in enumerate(hourly):
        run.feed(rain(60 * (i + 1), mm))
    assert run.levels("rainstorm") == expected


def test_rain_windows_slide_across_hour_boundaries_by_event_time() -> None:
    run = Run()
    # 10 mm every 30 minutes from 08:30: 50 mm in 6 h is reached at 10:30 (5 readings),
    # all within 3 h -> orange at 10:30
    for k in range(1, 6):
        run.feed(rain(30 * k, 10.0))
    assert run.levels("rainstorm") == ["orange"]
    # at 14:00 the 3 h window is nearly dry, but (08:00, 14:00] still holds 50.5 mm: yellow,
    # held at orange until the readings have stayed below for the 10-minute hold time
    run.feed(rain(360, 0.5))
    assert run.levels("rainstorm") == ["orange"]
    run.feed(rain(370, 0.0))
    assert run.levels("rainstorm") == ["orange", "yellow"]
    # at 14:40 the 08:30 reading leaves the 6 h window: 40.5 mm in 6 h, 50.5 in 12 h: blue
    run.feed(rain(400, 0.0), rain(410, 0.0))
    assert run.levels("rainstorm") == ["orange", "yellow", "blue"]


def test_late_reading_within_lateness_is_applied_in_event_time_order() -> None:
    run = Run()
    run.feed(rain(60, 30.0))
    run.feed(rain(120, 10.0))
    assert run.levels("rainstorm") == []
    result = run.feed(rain(110, 10.0))  # 10 minutes late: 50 mm in 3 h as of 10:00
    assert result.decisions[Decision.LEVEL_CHANGED] == 1
    assert run.levels("rainstorm") == ["orange"]


def test_duplicate_counts_once_and_too_late_goes_to_dead_letter() -> None:
    run = Run()
    run.feed(rain(60, 30.0), rain(120, 10.0))
    dup = run.feed(rain(120, 10.0))
    assert dup.decisions[Decision.DUPLICATE] == 1
    assert run.levels("rainstorm") == []  # 40 mm, not 50: the duplicate did not count
    late = run.feed(rain(120 - 16, 20.0))  # 16 minutes older than the newest: beyond 15
    assert late.decisions[Decision.TOO_LATE] == 1
    assert [r.reason for r in late.rejected] == ["too-late"]
    assert run.levels("rainstorm") == []


def test_accumulations_become_increments_and_reset() -> None:
    run = Run()
    since = "2017-08-23T08:00:00+08:00"
    for minutes, accum in ((60, 20.0), (120, 45.0), (150, 60.0)):
        run.feed(obs("weather", "ZH-AWS-028", minutes, {"rain_accum_mm": accum},
                     {"accum_since": since}))
    assert run.levels("rainstorm") == ["orange"]  # 60 mm within 3 h
    series = run.state["weather:ZH-AWS-028"]["series"]["rain"]
    assert [v for _, v in series] == [20.0, 25.0, 15.0]


def test_water_level_goes_down_only_after_the_hold_time() -> None:
    run = Run()  # 前山河南屏站: warning 1.60, guaranteed 2.30; hold 600 s
    run.feed(obs("water", "ZH-RIV-001", 0, {"level_m": 2.40}))
    run.feed(obs("water", "ZH-RIV-001", 5, {"level_m": 2.10}))   # below red: hold
    run.feed(obs("water", "ZH-RIV-001", 10, {"level_m": 2.35}))  # back up: clock reset
    run.feed(obs("water", "ZH-RIV-001", 15, {"level_m": 2.10}))
    run.feed(obs("water", "ZH-RIV-001", 24, {"level_m": 2.10}))  # 9 min below: still red
    assert run.levels("water_level") == ["red"]
    run.feed(obs("water", "ZH-RIV-001", 25, {"level_m": 2.10}))  # 10 min below: orange
    assert run.levels("water_level") == ["red", "orange"]


def test_water_trend_extrapolates_time_to_next_level() -> None:
    run = Run()
    for k in range(5):  # rising 0.1 m per 15 min = 0.4 m/h
        run.feed(obs("water", "ZH-RIV-001", 15 * k, {"level_m": 1.20 + 0.1 * k}))
    hazard = run.hazards[-1]  # 1.60 at 60 min: yellow (warning); next: orange at 2.00
    assert hazard.level == WarningLevel.YELLOW
    assert hazard.trend["direction"] == "rising"
    assert hazard.trend["rate_per_h"] == pytest.approx(0.4, abs=1e-6)
    assert hazard.trend["hours_to_next_level"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(("mean", "gust", "expected"), [
    (10.7, 17.1, []), (10.8, None, ["blue"]), (None, 17.2, ["blue"]),
    (17.2, 0.0, ["yellow"]), (0.0, 32.7, ["orange"]), (32.7, 0.0, ["red"]),
    (0.0, 41.5, ["red"]),
])
def test_wind_levels_by_mean_or_gust(mean: float | None, gust: float | None,
                                     expected: list[str]) -> None:
    values = {k: v for k, v in (("wind_speed_ms", mean), ("wind_gust_ms", gust))
              if v is not None}
    run = Run()
    run.feed(obs("weather", "ZH-AWS-028", 0, values))
    assert run.levels("wind") == expected


def test_geohazard_acceleration_raises_and_rain_counts() -> None:
    run = Run()
    # 0.25 mm/h for 18 h (6 mm/day: yellow), then 1 mm/h: accelerating -> orange
    for h in range(19):
        run.feed(obs("geohazard", "ZH-GEO-001", 60 * h, {"displacement_mm": 0.25 * h},
                     {"sensor": "gnss"}))
    assert run.levels("geohazard") == ["yellow"]
    for h in range(19, 25):
        run.feed(obs("geohazard", "ZH-GEO-001", 60 * h,
                     {"displacement_mm": 4.5 + 1.0 * (h - 18)}, {"sensor": "gnss"}))
    assert run.levels("geohazard")[-1] in ("orange", "red")
    last = [h for h in run.hazards if h.hazard_type == "geohazard"][-1]
    assert last.trend["accelerating"] == "yes"


def test_incident_grades_follow_reports_and_close_at_once() -> None:
    run = Run()
    base = {"deaths": 0.0, "injured": 0.0, "trapped": 0.0, "missing": 0.0}
    a = {"category": "building_collapse", "channel": "119", "status": "reported"}
    run.feed(obs("incident", "119-7", 0, base, a))          # collapse starts at yellow
    run.feed(obs("incident", "119-7", 20, {**base, "deaths": 9, "missing": 1},
                 {**a, "status": "on_scene"}))              # 10 dead or missing: 重大
    run.feed(obs("incident", "119-7", 90, {**base, "deaths": 9, "missing": 1},
                 {**a, "status": "closed"}))
    assert run.levels("incident") == ["yellow", "orange", "none"]
    assert "重大" in run.hazards[1].reason and run.hazards[1].source_name.startswith("房屋倒塌")


def test_every_hazard_records_the_rule_version() -> None:
    run = Run()
    run.feed(rain(60, 60.0))
    assert run.hazards[0].rule_version == BOOK.rule_version("rainstorm")
    assert run.hazards[0].rule_version.startswith("rainstorm@v1+")


def test_a_silent_source_raises_a_hazard_in_stream_time_and_clears_on_return() -> None:
    run = Run()
    # 香洲港潮位站 (5-minute interval, silence after 3 intervals) at red, then silent
    run.feed(obs("water", "ZH-TIDE-005", 0, {"level_m": 3.2}))
    for k in range(1, 4):
        run.feed(obs("water", "ZH-RIV-001", 5 * k, {"level_m": 1.0}))
    assert run.stage.silent_sources(run.state.items(), BOOK) == []  # 15 min: not yet
    run.feed(obs("water", "ZH-RIV-001", 16, {"level_m": 1.0}))
    [silent] = run.stage.silent_sources(run.state.items(), BOOK)
    assert silent.hazard_type == "sensor_silent" and silent.source_id == "ZH-TIDE-005"
    assert silent.level == WarningLevel.ORANGE, "silent while red: orange"
    assert "16分钟未报送" in silent.reason and silent.place == PLACE
    assert run.stage.silent_sources(run.state.items(), BOOK) == [], "reported once"
    back = run.feed(obs("water", "ZH-TIDE-005", 30, {"level_m": 1.0}))
    assert [(h.hazard_type, h.level) for h in back.hazards if h.hazard_type ==
            "sensor_silent"] == [("sensor_silent", WarningLevel.NONE)]
