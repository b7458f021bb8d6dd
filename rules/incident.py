"""Incident levels from reported casualties and category (national four-level grading)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from onemap.datafiles import RuleFile, StrictModel
from onemap.levels import COLOURS, WarningLevel, require_four_colours
from onemap.records import KeyFigure
from onemap.rules.candidate import Candidate

Colour = Literal["blue", "yellow", "orange", "red"]

GRADE_CHINESE = {WarningLevel.BLUE: "一般", WarningLevel.YELLOW: "较大",
                 WarningLevel.ORANGE: "重大", WarningLevel.RED: "特别重大"}
CATEGORY_CHINESE = {
    "fire": "火灾", "traffic": "交通事故", "flood": "洪涝", "waterlogging": "内涝",
    "landslide": "山体滑坡", "building_collapse": "房屋倒塌", "hazmat": "危化品事故",
    "drowning": "溺水", "tree_down": "树木倒伏", "power": "停电", "other": "突发事件"}


class Grade(StrictModel):
    deaths: int = Field(ge=0)
    injured: int = Field(ge=0)


class IncidentRule(RuleFile):
    rule: Literal["incident"]
    grades: Annotated[dict[str, Grade], AfterValidator(require_four_colours)]
    category_floor: dict[str, Colour] = Field(default_factory=dict)
    closing_statuses: tuple[str, ...] = ("handled", "closed")


def incident_level(values: dict[str, float], attrs: dict[str, str],
                   rule: IncidentRule) -> Candidate:
    """The incident's grade from its latest casualty figures; NONE once handled or closed.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).incident
    >>> base = {"deaths": 0.0, "injured": 0.0, "trapped": 0.0, "missing": 0.0}
    >>> incident_level(base, {"category": "fire", "status": "reported"}, rule).level.label
    'blue'
    >>> incident_level({**base, "deaths": 2, "missing": 1}, {"category": "fire",
    ...                "status": "on_scene"}, rule).level.label   # 死亡含失踪: 3 -> 较大
    'yellow'
    >>> incident_level(base, {"category": "fire", "status": "closed"}, rule).level.label
    'none'
    """
    deaths = int(values.get("deaths", 0) + values.get("missing", 0))
    injured = int(values.get("injured", 0) + values.get("trapped", 0))
    category = attrs.get("category", "other")
    name = CATEGORY_CHINESE.get(category, "突发事件")
    if attrs.get("status") in rule.closing_statuses:
        figure = KeyFigure("死亡失踪", deaths, "人")
        return Candidate("incident", WarningLevel.NONE, figure,
                         f"{name}已处置（{attrs.get('status')}）", "incident")
    level = WarningLevel.NONE
    for colour in COLOURS:
        grade = rule.grades[colour.label]
        if deaths >= grade.deaths or injured >= grade.injured:
            level = colour
    floor = rule.category_floor.get(category)
    if floor is not None:
        level = max(level, WarningLevel.parse(floor))
    if deaths:
        figure = KeyFigure("死亡失踪", deaths, "人", f"{GRADE_CHINESE[level]}标准",
                           rule.grades[level.label].deaths)
    else:
        figure = KeyFigure("受伤被困", injured, "人", f"{GRADE_CHINESE[level]}标准",
                           rule.grades[level.label].injured)
    reason = (f"{name}，死亡（含失踪）{deaths}人，受伤（含被困）{injured}人，"
              f"{GRADE_CHINESE[level]}（{level.roman}级）")
    return Candidate("incident", level, figure, reason, "incident")
