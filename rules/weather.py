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
        return max([b.window_h for b in self.levels.values()]) * 3600.0

    @property
    def lowest_mm(self) -> float:
        """The smallest rainfall bound of any colour."""
        return min([b.rain_mm for b in self.levels.values()])


class WindBound(StrictModel):
    mean_ms: float = Field(gt=0)
    gust_ms: float = Field(gt=0)


class WindRule(RuleFile):
    rule: Literal["wind"]
    window_min: float = Field(ge=0, le=24 * 60)
    levels: Annotated[dict[str, WindBound], AfterValidator(require_four_colours)]


#: how far below a bound a value still reaches it (float sums of rounded readings)
TOLERANCE = 1e-9
#: each colour with its rule-file name (``label`` is a property: this runs for every reading)
_LABELLED = tuple((c, c.label) for c in COLOURS)


def rainstorm_reached(rain: Series, newest: float, rule: RainstormRule,
                      at_most: float | None = None) -> tuple[WarningLevel, float]:
    """The highest colour whose window holds its rainfall, as of ``newest`` (event time):
    :func:`rainstorm_level`'s level without its explanation, for every reading. Also returns
    a number at least the longest window's rainfall, for :func:`~onemap.rules.windows.
    carry_bound` to carry to the source's next reading.

    Most readings are far below every bound, and then one number decides: the longest
    window's rainfall is at least any shorter window's (the windows end together, rain is
    never negative - the feeds reject it - and a float sum of non-negative values only grows
    when points are added in front of it, as rounding is monotonic), so below the lowest
    bound nothing is reached. That number is ``at_most`` (a bound of the longest window's
    rainfall carried from the previous reading) when given and low enough, else the
    longest window's sum; otherwise every colour's window is summed, as before.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).rainstorm
    >>> hour = 3600.0
    >>> level, longest = rainstorm_reached([[1 * hour, 30.0], [2 * hour, 25.0]], 2 * hour, rule)
    >>> level.label, longest
    ('orange', 55.0)
    >>> rainstorm_reached([[1 * hour, 30.0], [2 * hour, 19.9]], 2 * hour, rule)[0].label
    'none'
    >>> rainstorm_reached([[1 * hour, 30.0]], 2 * hour, rule, at_most=31.0)  # not summed
    (<WarningLevel.NONE: 0>, 31.0)
    """
    lowest = rule.lowest_mm - TOLERANCE
    if at_most is not None and at_most < lowest:
        return WarningLevel.NONE, at_most
    longest = rule.longest_window_s
    in_longest = window_sum(rain, newest, longest)
    if in_longest < lowest:
        return WarningLevel.NONE, in_longest
    reached = WarningLevel.NONE
    by_window = {longest: in_longest}  # colours often share a window (orange and red: 3 h)
    for colour, label in _LABELLED:
        bound = rule.levels[label]
        seconds = bound.window_h * 3600
        total = by_window.get(seconds)
        if total is None:
            total = by_window[seconds] = window_sum(rain, newest, seconds)
        if total >= bound.rain_mm - TOLERANCE:
            reached = colour
    return reached, in_longest


def rainstorm_level(rain: Series, newest: float, rule: RainstormRule) -> Candidate:
    """The highest colour whose window holds its rainfall, as of ``newest`` (event time),
    with the window's rainfall as its key figure and the last hour's as its trend.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).rainstorm
    >>> hour = 3600.0
    >>> c = rainstorm_level([[1 * hour, 30.0], [2 * hour, 25.0]], 2 * hour, rule)
    >>> c.level.label, c.reason
    ('orange', '3小时降雨55.0毫米，达橙色暴雨预警（50毫米）')
    """
    reached, _ = rainstorm_reached(rain, newest, rule)
    shown = reached if reached != WarningLevel.NONE else WarningLevel.BLUE
    bound = rule.levels[shown.label]
    total = window_sum(rain, newest, bound.window_h * 3600)
    figure = KeyFigure(f"{bound.window_h:g}小时降雨", round(total, 1), "毫米",
                       f"{shown.chinese}预警线", bound.rain_mm)
    last_hour = window_sum(rain, newest, 3600.0)
    if reached == WarningLevel.NONE:
        reason = f"{bound.window_h:g}小时降雨{total:.1f}毫米，未达暴雨预警"
    else:
        reason = (f"{bound.window_h:g}小时降雨{total:.1f}毫米，"
                  f"达{reached.chinese}暴雨预警（{bound.rain_mm:g}毫米）")
    return Candidate("rainstorm", reached, figure, reason, "rainstorm",
                     trend_of(last_hour, None))


def wind_reached(mean_ms: float | None, gust_ms: float | None, rule: WindRule) -> WarningLevel:
    """The highest colour reached by the mean wind or the gust: :func:`wind_level`'s level
    without its explanation, for every reading.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> wind_reached(18.0, 33.0, load_rulebook(default_rules_dir()).wind).label
    'orange'
    """
    mean = mean_ms or 0.0
    gust = gust_ms or 0.0
    reached = WarningLevel.NONE
    for colour, label in _LABELLED:
        bound = rule.levels[label]
        if mean >= bound.mean_ms - TOLERANCE or gust >= bound.gust_ms - TOLERANCE:
            reached = colour
    return reached


def wind_level(mean_ms: float | None, gust_ms: float | None, rule: WindRule) -> Candidate:
    """The highest colour reached by the mean wind or the gust.

    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).wind
    >>> wind_level(18.0, 30.0, rule).level.label  # mean 8级 (yellow), gust 11级 (orange)
    'yellow'
    >>> wind_level(18.0, 33.0, rule).level.label
    'orange'
    """
    reached = wind_reached(mean_ms, gust_ms, rule)
    gust = gust_ms or 0.0
    mean = mean_ms or 0.0
    shown = reached if reached != WarningLevel.NONE else WarningLevel.BLUE
    if (gust_ms is not None and gust >= rule.levels[shown.label].gust_ms - TOLERANCE) \
            or mean_ms is None:
        figure = KeyFigure("阵风", gust, "米/秒", f"{shown.chinese}预警线",
                           rule.levels[shown.label].gust_ms)
    else:
        figure = KeyFigure("平均风速", mean, "米/秒", f"{shown.chinese}预警线",
                           rule.levels[shown.label].mean_ms)
    reason = f"平均风速{mean:.1f}米/秒，阵风{gust:.1f}米/秒" + (
        f"，达{reached.chinese}台风（大风）预警" if reached else "，未达大风预警")
    return Candidate("wind", reached, figure, reason, "wind")
