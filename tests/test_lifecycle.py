"""Alert lifecycle: every transition, sequence numbers, and no duplicate at the same level."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.rules.lifecycle import LIVE_PREFIX, Exposure, LifecycleStage, rank_area
from onemap.rules.rulebook import default_rules_dir, load_rulebook

BOOK = load_rulebook(default_rules_dir())
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
T0 = datetime(2017, 8, 23, 4, 0, tzinfo=UTC)


def hazard(level: WarningLevel, previous: WarningLevel, minutes: int = 0, *,
           exercise: bool = False, source: str = "S1", hazard_type: str = "water_level",
           place: Place = PLACE) -> Hazard:
    return Hazard(
        hazard_id=f"{hazard_type}:{source}", hazard_type=hazard_type, feed="water",
        source_id=source, source_name="测试站", level=level, previous_level=previous,
        place=place, lon=113.3, lat=22.1, observed_at=T0 + timedelta(minutes=minutes),
        key_figure=KeyFigure("水位", 2.0, "米", "警戒水位", 1.6), reason="r", rule_id="water_level",
        rule_version="v", exercise=exercise)


def stage(population: int = 0, sites: dict[str, int] | None = None) -> LifecycleStage:
    return LifecycleStage(Exposure(
        population_of=lambda code: population if code == PLACE.village_code else 0,
        sites_near=lambda lon, lat, r: dict(sites or {})))


def process(s: LifecycleStage, hazards: list[Hazard], state: dict[str, Any],
            **kw: Any) -> list[Alert]:
    return s.process(hazards, state, BOOK.urgency, BOOK.lifecycle, now=T0, **kw)


def run(levels: list[WarningLevel]) -> list[Alert]:
    s = stage(population=9_000)
    state: dict[str, Any] = {}
    out: list[Alert] = []
    previous = WarningLevel.NONE
    for i, level in enumerate(levels):
        out += process(s, [hazard(level, previous, i)], state)
        previous = level
    return out


def test_full_lifecycle_transitions_and_sequence() -> None:
    Y, R, B, N = (WarningLevel.YELLOW, WarningLevel.RED, WarningLevel.BLUE, WarningLevel.NONE)
    alerts = run([Y, R, B, N, Y])
    assert [(a.transition, a.level, a.previous_level, a.seq) for a in alerts] == [
        ("new", Y, N, 1), ("escalated", R, Y, 2), ("de-escalated", B, R, 3),
        ("resolved", N, B, 4), ("new", Y, N, 5)]
    assert [a.alert_id for a in alerts][:2] == ["water_level:S1#1", "water_level:S1#2"]


def test_same_hazard_record_again_does_not_alert_again() -> None:
    s = stage()
    state: dict[str, Any] = {}
    record = hazard(WarningLevel.YELLOW, WarningLevel.NONE)
    out = [a for _ in range(3) for a in process(s, [record], state)]
    assert [a.transition for a in out] == ["new"]


def test_news_at_the_same_level_is_an_update_once() -> None:
    s = stage()
    state: dict[str, Any] = {}
    Y = WarningLevel.YELLOW
    process(s, [hazard(Y, WarningLevel.NONE, 0)], state)
    news = hazard(Y, Y, 10)  # same level, newer: e.g. the slope started to accelerate
    out = process(s, [news, news], state)
    assert [(a.transition, a.seq) for a in out] == [("updated", 2)]


def test_resolution_of_nothing_open_is_silent() -> None:
    assert run([WarningLevel.NONE]) == []


def test_score_carries_its_urgency_breakdown() -> None:
    [alert] = run([WarningLevel.RED])
    # red = 100 points; 9,000 residents = 10 points (log-scaled, urgency.yaml); the rest 0
    assert alert.score_breakdown == {
        "level": 100.0, "exposure_population": 10.0, "exposure_sites": 0.0, "trend": 0.0,
        "compound": 0.0, "freshness": 0.0, "confidence": 0.0}
    assert alert.score == 110.0
    assert alert.notify == "send"


def test_alert_json_round_trip() -> None:
    [alert] = run([WarningLevel.ORANGE])
    assert Alert.from_json(alert.to_json()) == alert


def test_sites_near_the_hazard_raise_its_score_within_the_kind_radius() -> None:
    radii: list[float] = []

    def sites_near(lon: float, lat: float, radius: float) -> dict[str, int]:
        radii.append(radius)
        return {"school": 1, "elderly_home": 1}

    s = LifecycleStage(Exposure(population_of=lambda code: 0, sites_near=sites_near))
    [alert] = process(s, [hazard(WarningLevel.YELLOW, WarningLevel.NONE)], {})
    assert alert.score_breakdown["exposure_sites"] == 18.0  # school 8 + elderly home 10
    assert radii == [BOOK.urgency.radius_m("water_level")]


def test_area_hazard_is_exposed_to_its_whole_area() -> None:
    seen: list[str] = []
    s = LifecycleStage(Exposure(population_of=lambda code: seen.append(code) or 0))
    town_only = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇")
    process(s, [hazard(WarningLevel.BLUE, WarningLevel.NONE, place=town_only)], {})
    assert seen == ["440404104"]


def waterlogging(level: WarningLevel, source: str, minutes: int = 0, **kw: Any) -> Hazard:
    h = hazard(level, WarningLevel.NONE, minutes, source=source, **kw)
    return Hazard(**{**{f: getattr(h, f) for f in h.__dataclass_fields__},
                     "key_figure": KeyFigure("积水深度", 0.4, "米", "黄色", 0.3)})


def test_colocated_hazards_compound_and_corroborate_but_only_in_their_district() -> None:
    s = stage()
    state: dict[str, Any] = {}
    river = hazard(WarningLevel.ORANGE, WarningLevel.NONE, 0, source="RIVER")
    [first] = process(s, [river], state)
    assert first.score_breakdown["compound"] == 0.0
    # a waterlogging point in the same town while the river is near its guaranteed level
    [second] = process(s, [waterlogging(WarningLevel.YELLOW, "POND", 1)], state)
    assert second.score_breakdown["compound"] == 15.0
    assert state[LIVE_PREFIX + "440404"] == {"ids": ["water_level:POND", "water_level:RIVER"]}
    # the same in another district does not pair (different rank area, maybe another worker)
    other = Place("440400", "珠海市", "440402", "香洲区", "440402001", "拱北街道")
    [far] = process(s, [waterlogging(WarningLevel.YELLOW, "FAR", 2, place=other)], state)
    assert far.score_breakdown["compound"] == 0.0
    assert rank_area(other) == "440402"


def test_drills_never_raise_actual_alerts() -> None:
    s = stage()
    state: dict[str, Any] = {}
    process(s, [hazard(WarningLevel.ORANGE, WarningLevel.NONE, 0, source="RIVER",
                       exercise=True)], state)
    [actual] = process(s, [waterlogging(WarningLevel.YELLOW, "POND", 1)], state)
    assert actual.score_breakdown["compound"] == 0.0


def test_resolved_hazards_leave_the_live_index_and_stop_compounding() -> None:
    s = stage()
    state: dict[str, Any] = {}
    process(s, [hazard(WarningLevel.ORANGE, WarningLevel.NONE, 0, source="RIVER")], state)
    [resolved] = process(s, [hazard(WarningLevel.NONE, WarningLevel.ORANGE, 1,
                                    source="RIVER")], state)
    assert resolved.transition == "resolved" and resolved.score == 0.0
    assert state[LIVE_PREFIX + "440404"] == {"ids": []}
    assert "hazard" not in state["water_level:RIVER"]
    [pond] = process(s, [waterlogging(WarningLevel.YELLOW, "POND", 2)], state)
    assert pond.score_breakdown["compound"] == 0.0


def test_state_written_as_json_survives_a_restart() -> None:
    """A new stage (a restarted worker) finds the open hazards in the recovered state."""
    state: dict[str, Any] = {}
    process(stage(), [hazard(WarningLevel.ORANGE, WarningLevel.NONE, 0, source="RIVER")],
            state)
    recovered = json.loads(json.dumps(state))
    [pond] = process(stage(), [waterlogging(WarningLevel.YELLOW, "POND", 1)], recovered)
    assert pond.score_breakdown["compound"] == 15.0


def test_red_inhibits_lower_alerts_of_the_same_type_in_its_town() -> None:
    s = stage()
    state: dict[str, Any] = {}
    [red] = process(s, [hazard(WarningLevel.RED, WarningLevel.NONE, 0, source="A")], state)
    [yellow] = process(s, [hazard(WarningLevel.YELLOW, WarningLevel.NONE, 1, source="B")],
                       state)
    [orange] = process(s, [hazard(WarningLevel.ORANGE, WarningLevel.NONE, 2, source="C")],
                       state)
    other_type = process(s, [hazard(WarningLevel.YELLOW, WarningLevel.NONE, 3, source="D",
                                    hazard_type="rainstorm")], state)
    assert red.notify == "send"
    assert (yellow.notify, yellow.notify_reason) == (
        "inhibited", "red_mutes_lower_same_type_in_town: water_level:A")
    assert orange.notify == "send"  # only yellow and blue are muted by a red
    assert other_type[0].notify == "send"
    # the red resolves: a later yellow pages again
    process(s, [hazard(WarningLevel.NONE, WarningLevel.RED, 4, source="A")], state)
    [again] = process(s, [hazard(WarningLevel.BLUE, WarningLevel.YELLOW, 5, source="B")],
                      state)
    assert again.notify == "inhibited"  # the orange C still mutes blue in the town
    assert again.notify_reason.startswith("orange_mutes_blue_same_type_in_town")


def test_inhibition_stops_at_the_town_boundary() -> None:
    s = stage()
    state: dict[str, Any] = {}
    process(s, [hazard(WarningLevel.RED, WarningLevel.NONE, 0, source="A")], state)
    next_town = Place("440400", "珠海市", "440404", "金湾区", "440404105", "南水镇")
    [yellow] = process(s, [hazard(WarningLevel.YELLOW, WarningLevel.NONE, 1, source="B",
                                  place=next_town)], state)
    assert yellow.notify == "send"


def test_a_silence_mutes_and_says_why() -> None:
    s = stage()
    mute = {"water_level:S1": "silence 7: 测试站检修 (张工) until 18:00"}.get
    [alert] = process(s, [hazard(WarningLevel.RED, WarningLevel.NONE)], {},
                      mute=lambda h: mute(h.hazard_id))
    assert (alert.notify, alert.notify_reason) == (
        "silenced", "silence 7: 测试站检修 (张工) until 18:00")


def test_rule_file_rejects_an_unknown_equal_field(tmp_path: Path) -> None:
    import shutil

    from onemap.errors import ConfigError
    shutil.copytree(default_rules_dir(), tmp_path / "rules")
    f = tmp_path / "rules" / "lifecycle.yaml"
    f.write_text(f.read_text().replace("equal: [hazard_type]", "equal: [colour]", 1))
    with pytest.raises(ConfigError) as err:
        load_rulebook(tmp_path / "rules")
    assert "lifecycle.yaml" in str(err.value) and "equal" in str(err.value)
