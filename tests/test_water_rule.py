"""Water level against a station's thresholds, hand-computed at and around every bound."""

from __future__ import annotations

import pytest

from onemap.levels import WarningLevel
from onemap.registries import WaterStation
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.rules.water_level import evaluate_water_level

RULES = load_rulebook(default_rules_dir()).water_level
RIVER = WaterStation(station_id="R", name="前山河南屏站", kind="river", lon=113.5, lat=22.2,
                     warning_level_m=1.60, guaranteed_level_m=2.30)
RESERVOIR = WaterStation(station_id="V", name="竹仙洞水库", kind="reservoir", lon=113.5,
                         lat=22.2, warning_level_m=43.0, guaranteed_level_m=44.6,
                         flood_limit_level_m=42.0)
N, B, Y, O, R = (  # noqa: E741 (colour initials read best in the tables)
    WarningLevel.NONE, WarningLevel.BLUE, WarningLevel.YELLOW,
                 WarningLevel.ORANGE, WarningLevel.RED)


@pytest.mark.parametrize(("level_m", "expected"), [
    (1.29, N), (1.30, B), (1.59, B), (1.60, Y), (1.99, Y), (2.00, O), (2.29, O), (2.30, R),
    (5.00, R), (-1.0, N),
])
def test_river_levels_from_rising_readings(level_m: float, expected: WarningLevel) -> None:
    # river: blue = warning - 0.30, yellow = warning, orange = guaranteed - 0.30, red = guaranteed
    assert evaluate_water_level(level_m, RIVER, RULES, N).level == expected


@pytest.mark.parametrize(("level_m", "current", "expected"), [
    (2.25, R, R), (2.24, R, O),  # red holds until 0.05 below its bound
    (1.55, Y, Y), (1.549, Y, B),  # yellow likewise
    (1.25, B, B), (1.249, B, N),
    (1.25, N, N),  # rising needs the bound itself
    (2.29, O, O), (2.30, O, R),
])
def test_hysteresis_only_on_the_way_down(
    level_m: float, current: WarningLevel, expected: WarningLevel,
) -> None:
    assert evaluate_water_level(level_m, RIVER, RULES, current).level == expected


@pytest.mark.parametrize(("level_m", "expected"), [
    (41.99, N), (42.0, B), (42.99, B), (43.0, Y), (44.29, Y), (44.30, O), (44.60, R),
])
def test_reservoir_starts_at_flood_limit(level_m: float, expected: WarningLevel) -> None:
    assert evaluate_water_level(level_m, RESERVOIR, RULES, N).level == expected


def test_decision_explains_itself_with_the_key_figure() -> None:
    d = evaluate_water_level(2.42, RIVER, RULES, N)
    assert d.level == R
    assert d.key_figure.threshold == 2.30 and d.key_figure.threshold_name == "保证水位"
    assert "超保证水位0.12米" in d.reason and "前山河南屏站" in d.reason
