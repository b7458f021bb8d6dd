"""Water level against a station's own thresholds: the level evaluation, as a pure function."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field

from onemap.datafiles import RuleFile, StrictModel
from onemap.levels import WarningLevel
from onemap.records import KeyFigure
from onemap.registries import WaterKind, WaterStation
from onemap.rules.candidate import Candidate, trend_of
from onemap.rules.windows import Series, hours_to_reach, rate_per_hour

ThresholdName = Literal["warning", "guaranteed", "flood_limit"]

THRESHOLD_CHINESE = {"warning": "警戒水位", "guaranteed": "保证水位", "flood_limit": "汛限水位"}
#: Readings are compared with a tolerance far below any gauge's resolution, so 44.6 - 0.3
#: (= 44.300000000000004 in binary floating point) is reached by a reading of 44.30.
EPSILON_M = 1e-9
_COLOURS = (WarningLevel.BLUE, WarningLevel.YELLOW, WarningLevel.ORANGE, WarningLevel.RED)
#: each colour's field name (``WarningLevel.label`` is a property: this runs per reading)
_FIELD = {c: c.label for c in _COLOURS}


class LevelBound(StrictModel):
    threshold: ThresholdName
    offset_m: float = 0.0


class KindCriteria(StrictModel):
    blue: LevelBound
    yellow: LevelBound
    orange: LevelBound
    red: LevelBound

    def bound(self, level: WarningLevel) -> LevelBound:
        bound: LevelBound = getattr(self, _FIELD[level])
        return bound


class WaterLevelRule(RuleFile):
    rule: Literal["water_level"]
    hysteresis_m: float = Field(ge=0.0, le=5.0)
    kinds: dict[WaterKind, KindCriteria]


@dataclasses.dataclass(frozen=True, slots=True)
class LevelDecision:
    """The level a reading deserves, the bound that set it, and why (for the hazard record)."""

    level: WarningLevel
    key_figure: KeyFigure
    reason: str


def _reached(level_m: float, station: WaterStation, rule: WaterLevelRule,
             current: WarningLevel) -> tuple[WarningLevel, tuple[float, ThresholdName] | None]:
    """The colour a reading reaches (with hysteresis against ``current``) and the station
    threshold that set it (None when none is reached)."""
    criteria = rule.kinds.get(station.kind)
    reached = WarningLevel.NONE
    reached_bound: tuple[float, ThresholdName] | None = None
    if criteria is not None:
        for colour in _COLOURS:
            spec = criteria.bound(colour)
            threshold = station.threshold(spec.threshold)
            if threshold is None:
                continue
            bound = threshold + spec.offset_m
            if colour <= current:
                bound -= rule.hysteresis_m
            if level_m >= bound - EPSILON_M:
                reached, reached_bound = colour, (threshold, spec.threshold)
    return reached, reached_bound


def water_level_reached(levels: Series, station: WaterStation, rule: WaterLevelRule,
                        current: WarningLevel) -> WarningLevel:
    """The level of the newest reading of ``levels``: :func:`water_candidate`'s level
    without its explanation and trend, for every reading.

    >>> from onemap.registries import WaterStation
    >>> st = WaterStation(station_id="S", name="前山河", kind="river", lon=113.5, lat=22.2,
    ...                   warning_level_m=2.0, guaranteed_level_m=2.8)
    >>> from onemap.rules.rulebook import default_rules_dir, load_rulebook
    >>> rule = load_rulebook(default_rules_dir()).water_level
    >>> water_level_reached([[0.0, 2.1]], st, rule, WarningLevel.NONE).label
    'yellow'
    """
    return _reached(levels[-1][1], station, rule, current)[0]


def evaluate_water_level(
    level_m: float, station: WaterStation, rule: WaterLevelRule, current: WarningLevel,
) -> LevelDecision:
    """The warning level for a reading, with hysteresis against ``current``.

    A colour at or below the current level stays while the reading is within
    ``hysteresis_m`` below its bound; a higher colour needs the bound itself.

    >>> from onemap.registries import WaterStation
    >>> st = WaterStation(station_id="S", name="前山河", kind="river", lon=113.5, lat=22.2,
    ...                   warning_level_m=2.0, guaranteed_level_m=2.8)
    >>> rule = WaterLevelRule.model_validate({"rule": "water_level", "version": 1,
    ...     "source": "x", "hysteresis_m": 0.05, "kinds": {"river": {
    ...     "blue": {"threshold": "warning", "offset_m": -0.3},
    ...     "yellow": {"threshold": "warning"}, "orange": {"threshold": "guaranteed",
    ...     "offset_m": -0.3}, "red": {"threshold": "guaranteed"}}}})
    >>> evaluate_water_level(2.1, st, rule, WarningLevel.NONE).level.label
    'yellow'
    >>> evaluate_water_level(1.97, st, rule, WarningLevel.YELLOW).level.label  # hysteresis
    'yellow'
    >>> evaluate_water_level(1.94, st, rule, WarningLevel.YELLOW).level.label
    'blue'
    """
    quantity = "积水深度" if station.kind == "waterlogging" else "水位"
    reached, reached_bound = _reached(level_m, station, rule, current)
    if reached_bound is None:
        figure = KeyFigure(quantity, level_m, "米", "警戒水位", station.warning_level_m)
        reason = f"{quantity}{level_m:.2f}米，低于预警线（警戒水位{station.warning_level_m:.2f}米）"
        return LevelDecision(WarningLevel.NONE, figure, reason)
    threshold, name = reached_bound
    figure = KeyFigure(quantity, level_m, "米", THRESHOLD_CHINESE[name], threshold)
    delta = level_m - threshold
    if abs(delta) < 0.005:
        relation = f"达{THRESHOLD_CHINESE[name]}"
    elif delta > 0:
        relation = f"超{THRESHOLD_CHINESE[name]}{delta:.2f}米"
    else:
        relation = f"距{THRESHOLD_CHINESE[name]}{-delta:.2f}米"
    reason = f"{station.name}{quantity}{level_m:.2f}米，{relation}（{reached.chinese}）"
    return LevelDecision(reached, figure, reason)


def water_candidate(levels: Series, newest: float, station: WaterStation, rule: WaterLevelRule,
                    current: WarningLevel) -> Candidate:
    """The level for the newest reading, with the rise rate over the last hour and the hours
    to the next colour's bound at that rate (linear extrapolation)."""
    value = levels[-1][1]
    decision = evaluate_water_level(value, station, rule, current)
    rate = rate_per_hour(levels, newest, 3600.0)
    to_next: float | None = None
    criteria = rule.kinds.get(station.kind)
    if criteria is not None and decision.level < WarningLevel.RED:
        spec = criteria.bound(WarningLevel(decision.level + 1))
        threshold = station.threshold(spec.threshold)
        if threshold is not None:
            to_next = hours_to_reach(value, threshold + spec.offset_m, rate)
    return Candidate("water_level", decision.level, decision.key_figure, decision.reason,
                     "water_level", trend_of(rate, to_next))
