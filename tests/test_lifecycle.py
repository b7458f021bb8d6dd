"""Alert lifecycle: every transition, sequence numbers, and no duplicate at the same level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.rules.lifecycle import LifecycleStage
from onemap.rules.rulebook import default_rules_dir, load_rulebook

SCORING = load_rulebook(default_rules_dir()).scoring
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
T0 = datetime(2017, 8, 23, 4, 0, tzinfo=UTC)


def hazard(level: WarningLevel, previous: WarningLevel, minutes: int = 0,
           exercise: bool = False) -> Hazard:
    return Hazard(
        hazard_id="water_level:S1", hazard_type="water_level", feed="water", source_id="S1",
        source_name="测试站", level=level, previous_level=previous, place=PLACE, lon=113.3,
        lat=22.1, observed_at=T0 + timedelta(minutes=minutes),
        key_figure=KeyFigure("水位", 2.0, "米", "警戒水位", 1.6), reason="r", rule_id="water_level",
        rule_version="v", exercise=exercise)


def run(levels: list[WarningLevel]) -> list[Alert]:
    stage = LifecycleStage(population_of=lambda code: 20_000 if code == PLACE.village_code else 0)
    state: dict[str, dict[str, int]] = {}
    out: list[Alert] = []
    previous = WarningLevel.NONE
    for i, level in enumerate(levels):
        out += stage.process([hazard(level, previous, i)], state, SCORING, T0)
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
    stage = LifecycleStage(population_of=lambda code: 0)
    state: dict[str, dict[str, int]] = {}
    record = hazard(WarningLevel.YELLOW, WarningLevel.NONE)
    out = [a for _ in range(3) for a in stage.process([record], state, SCORING, T0)]
    assert [a.transition for a in out] == ["new"]


def test_news_at_the_same_level_is_an_update_once() -> None:
    stage = LifecycleStage(population_of=lambda code: 0)
    state: dict[str, dict[str, int]] = {}
    Y = WarningLevel.YELLOW
    stage.process([hazard(Y, WarningLevel.NONE, 0)], state, SCORING, T0)
    news = hazard(Y, Y, 10)  # same level, newer: e.g. the slope started to accelerate
    out = stage.process([news, news], state, SCORING, T0)
    assert [(a.transition, a.seq) for a in out] == [("updated", 2)]


def test_resolution_of_nothing_open_is_silent() -> None:
    assert run([WarningLevel.NONE]) == []


def test_score_carries_its_breakdown() -> None:
    [alert] = run([WarningLevel.RED])
    # red = 100 points; 20,000 residents x 5 points per 10k = 10 points
    assert alert.score_breakdown == {"level": 100.0, "exposure": 10.0}
    assert alert.score == 110.0


def test_alert_json_round_trip() -> None:
    [alert] = run([WarningLevel.ORANGE])
    assert Alert.from_json(alert.to_json()) == alert
