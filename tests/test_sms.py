"""SMS routing and text: who gets what, in Chinese, within the real length limits."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.registries import default_registries_dir
from onemap.sinks.sms.roster import load_roster
from onemap.sinks.sms.routing import recipients as messages_recipients
from onemap.sinks.sms.sink import messages_for
from onemap.sinks.sms.templates import render, segments

ROSTER = load_roster(default_registries_dir() / "duty_roster.yaml")
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
NOW = datetime(2017, 8, 23, 4, 0, tzinfo=UTC)


def alert(level: WarningLevel, previous: WarningLevel, transition: str,
          hazard_type: str = "rainstorm", exercise: bool = False) -> Alert:
    figure = KeyFigure("3小时降雨", 112.0, "毫米", "红色预警线", 100.0)
    h = Hazard(hazard_id=f"{hazard_type}:ZH-AWS-028", hazard_type=hazard_type, feed="weather",
               source_id="ZH-AWS-028", source_name="平沙自动气象站", level=level,
               previous_level=previous, place=PLACE, lon=113.2, lat=22.1, observed_at=NOW,
               key_figure=figure, reason="r", rule_id=hazard_type, rule_version="v",
               exercise=exercise)
    return Alert(alert_id=f"{h.hazard_id}#1", hazard_id=h.hazard_id, seq=1,
                 transition=transition, level=level, previous_level=previous, hazard=h,
                 score=100.0, score_breakdown={}, issued_at=NOW)


def test_red_rainstorm_text_names_place_hazard_level_figure_and_action() -> None:
    text = render(alert(WarningLevel.RED, WarningLevel.NONE, "new"))
    assert text == ("【珠海应急】红色暴雨预警 金湾区平沙镇美平社区平沙自动气象站 3小时降雨112毫米 "
                    "请立即转移危险区域人员 回复1确认")
    assert len(segments(text)) == 1


def test_drill_text_is_marked_at_the_start() -> None:
    text = render(alert(WarningLevel.RED, WarningLevel.NONE, "new", exercise=True))
    assert text.startswith("【演练】【珠海应急】")


def test_resolution_names_the_level_it_leaves() -> None:
    text = render(alert(WarningLevel.NONE, WarningLevel.ORANGE, "resolved"))
    assert text.startswith("【珠海应急】解除橙色暴雨预警 金湾区平沙镇")


def test_recipients_by_area_type_and_minimum_level() -> None:
    blue = {m.recipient_id for m in messages_for(alert(WarningLevel.BLUE, WarningLevel.NONE,
                                                       "new", "water_level"), ROSTER)}
    red = {m.recipient_id for m in messages_for(alert(WarningLevel.RED, WarningLevel.NONE,
                                                      "new", "water_level"), ROSTER)}
    areas = {o.id: o.area_code for o in ROSTER.officers}
    assert blue < red, "more people hear of a red alert than of a blue one"
    assert all(PLACE.village_code.startswith(areas[r]) or areas[r] == PLACE.city_code
               for r in red)
    assert any(areas[r] == "440400" for r in red), "the city duty officer hears of red"
    assert not any(areas[r] == "440400" for r in blue)


def test_one_message_per_recipient_with_idempotency_key() -> None:
    msgs = messages_for(alert(WarningLevel.RED, WarningLevel.NONE, "new", "water_level"),
                        ROSTER)
    assert len({m.key for m in msgs}) == len(msgs) == len({m.recipient_id for m in msgs})
    assert all(m.key.startswith("water_level:ZH-AWS-028#1/") for m in msgs)


def test_outside_a_shift_the_deputy_takes_the_message() -> None:
    from onemap.sinks.sms.roster import DutyRoster

    roster = DutyRoster.model_validate({"version": 1, "officers": [
        {"id": "day", "name": "日班", "area_code": "440404", "phone": "13800000101",
         "shifts": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00",
                     "end": "20:00"}], "deputy": "night"},
        {"id": "night", "name": "夜班", "area_code": "440404", "phone": "13800000102",
         "shifts": [{"start": "20:00", "end": "08:00"}]},
    ]})
    a = alert(WarningLevel.RED, WarningLevel.NONE, "new")  # NOW = Wed 12:00 +08:00
    assert [o.id for o in messages_recipients(a, roster)] == ["day"]
    night = dataclasses.replace(a, issued_at=datetime(2017, 8, 23, 15, 0, tzinfo=UTC))  # 23:00
    assert [o.id for o in messages_recipients(night, roster)] == ["night"], "once each"
    sunday_noon = dataclasses.replace(a, issued_at=datetime(2017, 8, 27, 4, 0, tzinfo=UTC))
    assert messages_recipients(sunday_noon, roster) == [], "nobody on duty: nobody texted"


def test_a_deputy_must_exist() -> None:
    import pytest
    from pydantic import ValidationError

    from onemap.sinks.sms.roster import DutyRoster

    with pytest.raises(ValidationError, match="deputy 'ghost'"):
        DutyRoster.model_validate({"version": 1, "officers": [
            {"id": "a", "name": "甲", "area_code": "440404", "phone": "13800000101",
             "deputy": "ghost"}]})


def test_a_hazard_points_responsible_person_hears_of_every_level() -> None:
    from onemap.registries import Registries

    registries = Registries.load(default_registries_dir())
    point = registries.hazard_points["ZH-GEO-001"]
    a = alert(WarningLevel.BLUE, WarningLevel.NONE, "new", "geohazard")
    a = dataclasses.replace(a, hazard=dataclasses.replace(a.hazard, source_id="ZH-GEO-001"))
    msgs = messages_for(a, ROSTER, registries)
    responsible = [m for m in msgs if m.recipient_id == "responsible:ZH-GEO-001"]
    assert [m.phone for m in responsible] == [point.responsible_phone]
    assert "地质灾害预警" in responsible[0].text
