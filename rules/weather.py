"""Rainstorm (rolling rainfall) and wind (mean and gust) levels for weather stations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from onemap.datafiles import RuleFile, StrictModel
from onemap.levels import COLOURS, WarningLevel, require_four_colours
from onemap.records import KeyFigure
from onemap.rules.candidate import Candidate, trend_of
from onemap.rules.windows import Series, window_sum


class RainBound(StrictModel):
    window_h: float = Field(gt=0, le=24)
    rain_mm: float = Field(gt=0)


class RainstormRule(RuleFile):
    rule: Literal["rainstorm"]
    levels: Annotated[dict[str, RainBound], AfterValidator(require_four_colours)]

    @property
    def longest_window_s(self) -> float:
        return max(b.window_h for b in self.levels.values()) * 3600.0


class WindBound(StrictModel):
    mean_ms: float = Field(gt=0)
    gust_ms: float = Field(gt=0)


class WindRule(RuleFile):
    rule: Literal["wind"]
    window_min: float = Field(ge=0, le=24 * 60)
    levels: Annotated[dict[str, WindBound], AfterValidator(require_four_colours)]


#: each colour with its rule-file name (``label`` is a property: this runs for every reading)
_LABELLED = tuple((c, c.label) for c in COLOURS)


def rainstorm_level(rain: Series, newest: float, rule: RainstormRule) -> Candidate:
    """The highest colour whose window holds its rainfall, as of ``newest`` (event time).

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).rainstorm
    >>> hour = 3600.0
    >>> rainstorm_level([[1 * hour, 30.0], [2 * hour, 25.0]], 2 * hour, rule).level.label
    'orange'
    """
    reached = WarningLevel.NONE
    by_window: dict[float, float] = {}  # colours often share a window (orange and red: 3 h)
    sums: list[float] = []  # per colour, in COLOURS order
    for colour, label in _LABELLED:
        bound = rule.levels[label]
        seconds = bound.window_h * 3600
        total = by_window.get(seconds)
        if total is None:
            total = by_window[seconds] = window_sum(rain, newest, seconds)
        sums.append(total)
        if total >= bound.rain_mm - 1e-9:
            reached = colour
    shown = reached if reached != WarningLevel.NONE else WarningLevel.BLUE
    bound = rule.levels[shown.label]
    total = sums[shown - 1]
    figure = KeyFigure(f"{bound.window_h:g}小时降雨", round(total, 1), "毫米",
                       f"{shown.chinese}预警线", bound.rain_mm)
    last_hour = by_window.get(3600.0)
    if last_hour is None:
        last_hour = window_sum(rain, newest, 3600.0)
    if reached == WarningLevel.NONE:
        reason = f"{bound.window_h:g}小时降雨{total:.1f}毫米，未达暴雨预警"
    else:
        reason = (f"{bound.window_h:g}小时降雨{total:.1f}毫米，"
                  f"达{reached.chinese}暴雨预警（{bound.rain_mm:g}毫米）")
    return Candidate("rainstorm", reached, figure, reason, "rainstorm",
                     trend_of(last_hour, None))


def wind_level(mean_ms: float | None, gust_ms: float | None, rule: WindRule) -> Candidate:
    """The highest colour reached by the mean wind or the gust.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).wind
    >>> wind_level(18.0, 30.0, rule).level.label  # mean 8级 (yellow), gust 11级 (orange)
    'yellow'
    >>> wind_level(18.0, 33.0, rule).level.label
    'orange'
    """
    reached = WarningLevel.NONE
    for colour, label in _LABELLED:
        bound = rule.levels[label]
        if (mean_ms or 0.0) >= bound.mean_ms - 1e-9 or (gust_ms or 0.0) >= bound.gust_ms - 1e-9:
            reached = colour
    gust = gust_ms or 0.0
    mean = mean_ms or 0.0
    shown = reached if reached != WarningLevel.NONE else WarningLevel.BLUE
    if (gust_ms is not None and gust >= rule.levels[shown.label].gust_ms - 1e-9) or mean_ms is None:
        figure = KeyFigure("阵风", gust, "米/秒", f"{shown.chinese}预警线",
                           rule.levels[shown.label].gust_ms)
    else:
        figure = KeyFigure("平均风速", mean, "米/秒", f"{shown.chinese}预警线",
                           rule.levels[shown.label].mean_ms)
    reason = f"平均风速{mean:.1f}米/秒，阵风{gust:.1f}米/秒" + (
        f"，达{reached.chinese}台风（大风）预警" if reached else "，未达大风预警")
    return Candidate("wind", reached, figure, reason, "wind")
