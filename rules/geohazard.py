"""Geological-hazard point levels: displacement rate, its acceleration, and rainfall."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onemap.datafiles import RuleFile, StrictModel
from onemap.levels import COLOURS, WarningLevel
from onemap.records import KeyFigure
from onemap.registries import HazardPoint
from onemap.rules.candidate import Candidate, trend_of
from onemap.rules.colours import Thresholds
from onemap.rules.windows import Series, rate_per_hour, window_sum


class ColourFigures(Thresholds):
    """A threshold per colour (displacement rate, rainfall)."""


class Acceleration(StrictModel):
    window_h: float = Field(gt=0, le=24)
    ratio: float = Field(gt=1)


class GeohazardRule(RuleFile):
    rule: Literal["geohazard"]
    rate_window_h: float = Field(gt=0, le=72)
    rate_min_span_h: float = Field(ge=0, le=72)
    rate_mm_d: ColourFigures
    acceleration: Acceleration
    rain_24h_mm: ColourFigures


def point_rates(point: HazardPoint, rule: GeohazardRule) -> dict[WarningLevel, float]:
    """The point's own rate thresholds (mm/day), the rule's defaults where it has none."""
    own = {WarningLevel.BLUE: point.rate_blue_mm_d, WarningLevel.YELLOW: point.rate_yellow_mm_d,
           WarningLevel.ORANGE: point.rate_orange_mm_d, WarningLevel.RED: point.rate_red_mm_d}
    return {c: own[c] if own[c] is not None else rule.rate_mm_d.of(c)  # type: ignore[misc]
            for c in COLOURS}


def geohazard_level(displacement: Series, rain: Series, newest: float, point: HazardPoint,
                    rule: GeohazardRule) -> Candidate:
    """Level from the displacement rate (raised one step when accelerating) or 24 h rain.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).geohazard
    >>> p = HazardPoint(point_id="P", name="凤凰山北坡", kind="landslide", lon=113.5, lat=22.3,
    ...                 responsible_name="陈", responsible_phone="13900000101")
    >>> h = 3600.0
    >>> steady = [[i * h, 0.25 * i] for i in range(25)]       # 6 mm/day, steady: yellow
    >>> geohazard_level(steady, [], 24 * h, p, rule).level.label
    'yellow'
    >>> faster = [[i * h, 0.2 * i if i < 18 else 3.6 + 0.6 * (i - 18)] for i in range(25)]
    >>> geohazard_level(faster, [], 24 * h, p, rule).level.label  # accelerating: up a level
    'orange'
    """
    rates = point_rates(point, rule)
    span_h = (newest - displacement[0][0]) / 3600 if displacement else 0.0
    rate_h = rate_per_hour(displacement, newest, rule.rate_window_h * 3600) \
        if span_h >= rule.rate_min_span_h else None
    short_h = rate_per_hour(displacement, newest, rule.acceleration.window_h * 3600)
    rate_d = (rate_h or 0.0) * 24
    accelerating = (rate_h is not None and short_h is not None and rate_h > 0
                    and short_h >= rule.acceleration.ratio * rate_h)
    by_rate = WarningLevel.NONE
    for colour in COLOURS:
        if rate_d >= rates[colour] - 1e-9:
            by_rate = colour
    if accelerating and WarningLevel.NONE < by_rate < WarningLevel.RED:
        by_rate = WarningLevel(by_rate + 1)
    rain_24h = window_sum(rain, newest, 24 * 3600)
    by_rain = WarningLevel.NONE
    for colour in COLOURS:
        if rain_24h >= rule.rain_24h_mm.of(colour) - 1e-9:
            by_rain = colour
    level = max(by_rate, by_rain)
    # thresholds are on the rate itself, so there is no linear time-to-next-level here
    trend = trend_of(rate_h, None)
    trend["accelerating"] = "yes" if accelerating else "no"
    if by_rain > by_rate:
        figure = KeyFigure("24小时降雨", round(rain_24h, 1), "毫米", f"{level.chinese}预警线",
                           rule.rain_24h_mm.of(level))
        reason = f"{point.name}24小时降雨{rain_24h:.1f}毫米，达{level.chinese}预警"
    else:
        shown = level if level != WarningLevel.NONE else WarningLevel.BLUE
        figure = KeyFigure("位移速率", round(rate_d, 2), "毫米/天", f"{shown.chinese}预警线",
                           rates[shown])
        speed = "加速变形" if accelerating else "变形"
        reason = (f"{point.name}{speed}，位移速率{rate_d:.2f}毫米/天"
                  + (f"，达{level.chinese}预警" if level else "，未达预警"))
    return Candidate("geohazard", level, figure, reason, "geohazard", trend)
