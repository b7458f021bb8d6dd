"""The urgency model: every part of the breakdown against hand-computed values."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from onemap.datafiles import validate_model
from onemap.errors import ConfigError
from onemap.levels import WarningLevel
from onemap.records import Hazard, KeyFigure, Place
from onemap.rules.urgency import (
    PARTS,
    UrgencyContext,
    UrgencyModel,
    compound_pairs,
    example_hazard,
    same_area,
    urgency,
)

M = UrgencyModel.load_default()
T = example_hazard().observed_at
TOWN = example_hazard().place
OTHER_VILLAGE = Place(TOWN.city_code, "", TOWN.district_code, "", TOWN.town_code, "",
                      "440402001002")
OTHER_TOWN = Place(TOWN.city_code, "", TOWN.district_code, "", "440402002", "",
                   "440402002001")


def steady(**changes: Any) -> Any:
    """A plain orange geohazard: steady, not accelerating, read just now."""
    return example_hazard(trend={"direction": "steady"}, **changes)


def rain(level: WarningLevel = WarningLevel.RED, place: Place = TOWN, **kw: Any) -> Any:
    return example_hazard(hazard_id=f"rainstorm:R{level}", hazard_type="rainstorm",
                          feed="weather", source_id="R1", level=level, place=place, trend={},
                          key_figure=KeyFigure("3小时降雨", 120.0, "毫米"), **kw)


def score(h: Hazard, ctx: UrgencyContext | None = None, model: UrgencyModel = M,
          age_s: float = 0.0) -> tuple[float, dict[str, float]]:
    return urgency(h, ctx or UrgencyContext(), model, h.observed_at + timedelta(seconds=age_s))


def with_changes(**top: Any) -> UrgencyModel:
    data = M.model_dump()
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return UrgencyModel.model_validate(data)


# -- the rule file -----------------------------------------------------------------------


def test_default_file_loads_and_names_its_kind() -> None:
    assert M.rule == "urgency" and M.version >= 1
    assert {p.name for p in M.compound.pairs} >= {"rain_on_moving_slope",
                                                  "river_near_guaranteed_and_waterlogging"}


def test_unknown_keys_and_bad_values_are_rejected_with_the_field(tmp_path: Path) -> None:
    data = M.model_dump()
    data["population"]["per_decade"] = 3
    with pytest.raises(ConfigError, match=r"population\.per_decade"):
        validate_model(UrgencyModel, data, {}, tmp_path / "urgency.yaml")
    data = M.model_dump()
    data["freshness"]["floor"] = 1.5
    with pytest.raises(ConfigError, match=r"freshness\.floor"):
        validate_model(UrgencyModel, data, {}, tmp_path / "urgency.yaml")
    data = M.model_dump()
    data["sites"]["weights"]["castle"] = 3
    with pytest.raises(ConfigError, match="castle"):
        validate_model(UrgencyModel, data, {}, tmp_path / "urgency.yaml")


# -- level -------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "points"), [
    (WarningLevel.BLUE, 10.0), (WarningLevel.YELLOW, 30.0), (WarningLevel.ORANGE, 60.0),
    (WarningLevel.RED, 100.0)])
def test_level_points(level: WarningLevel, points: float) -> None:
    total, parts = score(steady(level=level))
    assert parts["level"] == points == total
    assert list(parts) == list(PARTS)


def test_resolved_hazard_scores_zero_everywhere() -> None:
    total, parts = score(steady(level=WarningLevel.NONE), UrgencyContext(population=10**6))
    assert total == 0.0 and set(parts.values()) == {0.0}


# -- exposure ----------------------------------------------------------------------------


@pytest.mark.parametrize(("people", "points"), [
    (0, 0.0), (1000, 10 * math.log10(2)), (9_000, 10.0), (99_000, 20.0), (10**8, 25.0)])
def test_population_is_log_scaled_and_capped(people: int, points: float) -> None:
    _, parts = score(steady(), UrgencyContext(population=people))
    assert parts["exposure_population"] == pytest.approx(points, abs=1e-3)


def test_area_hazard_takes_the_area_weighted_population_from_the_context() -> None:
    # e.g. a CAP polygon covering 30 % of a 20,000 village and all of a 3,000 one: 9,000.
    area = example_hazard(hazard_type="cap_warning", place=Place("440400", "", "440402"))
    _, parts = score(area, UrgencyContext(population=round(0.3 * 20_000) + 3_000))
    assert parts["exposure_population"] == 10.0


def test_sites_are_weighted_by_kind_and_capped() -> None:
    _, parts = score(steady(), UrgencyContext(sites={"school": 1, "elderly_home": 2}))
    assert parts["exposure_sites"] == 8 + 2 * 10
    _, parts = score(steady(), UrgencyContext(sites={"kindergarten": 5}))
    assert parts["exposure_sites"] == 30.0  # 50 capped
    _, parts = score(steady(), UrgencyContext(sites={"shelter": 1, "unknown": 9}))
    assert parts["exposure_sites"] == 2.0


def test_site_radius_per_kind_with_default_and_waterlogging_refined() -> None:
    assert M.radius_m("geohazard") == 500.0
    assert M.radius_m("something_new") == 1000.0
    ponding = example_hazard(hazard_type="water_level",
                             key_figure=KeyFigure("积水深度", 0.4, "米"))
    river = example_hazard(hazard_type="water_level", key_figure=KeyFigure("水位", 3.4, "米"))
    assert M.kind_of(ponding) == "waterlogging" and M.kind_of(river) == "water_level"
    assert M.radius_m(M.kind_of(river)) == 2000.0


# -- trend -------------------------------------------------------------------------------


@pytest.mark.parametrize(("trend", "points"), [
    ({"direction": "rising"}, 10.0),
    ({"direction": "falling"}, -5.0),
    ({"direction": "steady"}, 0.0),
    ({}, 0.0),
    ({"direction": "rising", "hours_to_next_level": 3.0}, 10.0 + 15 * 0.5),
    ({"direction": "rising", "hours_to_next_level": 0.0}, 25.0),
    ({"direction": "rising", "hours_to_next_level": 9.0}, 10.0),
    ({"direction": "rising", "hours_to_next_level": None}, 10.0),
    ({"direction": "rising", "hours_to_next_level": float("inf")}, 10.0),
])
def test_trend_points(trend: dict[str, Any], points: float) -> None:
    _, parts = score(example_hazard(trend=trend))
    assert parts["trend"] == pytest.approx(points)


def test_red_has_no_next_level_to_approach() -> None:
    _, parts = score(example_hazard(level=WarningLevel.RED,
                                    trend={"direction": "rising", "hours_to_next_level": 0.5}))
    assert parts["trend"] == 10.0


# -- compound ----------------------------------------------------------------------------


def test_red_rain_over_an_accelerating_slope_raises_both() -> None:
    slope, storm = example_hazard(), rain()
    _, slope_parts = score(slope, UrgencyContext(colocated=[storm]))
    _, rain_parts = score(storm, UrgencyContext(colocated=[slope]))
    assert slope_parts["compound"] == 20.0 and rain_parts["compound"] == 20.0
    assert compound_pairs(slope, [storm], M) == [("rain_on_moving_slope", storm.hazard_id)]


@pytest.mark.parametrize("partner", [
    rain(WarningLevel.YELLOW),                        # rain below orange
    rain(place=OTHER_TOWN),                           # another town
    rain(exercise=True),                              # a drill never pairs with the real
])
def test_no_compound_bonus_without_a_matching_partner(partner: Any) -> None:
    assert score(example_hazard(), UrgencyContext(colocated=[partner]))[1]["compound"] == 0.0


def test_a_slope_that_is_not_accelerating_does_not_pair() -> None:
    slope = steady()
    assert score(slope, UrgencyContext(colocated=[rain()]))[1]["compound"] == 0.0


def test_town_scope_pairs_across_villages_and_district_wide_areas_pair_inside() -> None:
    assert score(example_hazard(), UrgencyContext(colocated=[rain(place=OTHER_VILLAGE)]))[1][
        "compound"] == 20.0
    district_rain = rain(place=Place(TOWN.city_code, "", TOWN.district_code))
    assert score(example_hazard(), UrgencyContext(colocated=[district_rain]))[1][
        "compound"] == 20.0
    assert same_area(TOWN, OTHER_TOWN, "district") and not same_area(TOWN, OTHER_TOWN, "town")


def test_river_near_guaranteed_level_with_waterlogging_in_the_same_town() -> None:
    river = example_hazard(hazard_id="water_level:S1", hazard_type="water_level",
                           feed="water", source_id="S1", trend={},
                           key_figure=KeyFigure("水位", 4.8, "米", "保证水位", 5.0))
    ponding = example_hazard(hazard_id="water_level:W1", hazard_type="water_level",
                             feed="water", source_id="W1", level=WarningLevel.YELLOW,
                             place=OTHER_VILLAGE, trend={},
                             key_figure=KeyFigure("积水深度", 0.3, "米", "警戒水位", 0.3))
    assert score(river, UrgencyContext(colocated=[ponding]))[1]["compound"] == 15.0
    assert score(ponding, UrgencyContext(colocated=[river]))[1]["compound"] == 15.0
    yellow_river = example_hazard(hazard_type="water_level", level=WarningLevel.YELLOW,
                                  key_figure=KeyFigure("水位", 4.0, "米"))
    assert score(ponding, UrgencyContext(colocated=[yellow_river]))[1]["compound"] == 0.0


def test_each_pair_counts_once_and_the_sum_is_capped() -> None:
    slope = example_hazard()
    two_storms = [rain(), rain(WarningLevel.ORANGE)]
    assert score(slope, UrgencyContext(colocated=two_storms))[1]["compound"] == 20.0
    small_cap = with_changes(compound={"cap": 12.0})
    assert score(slope, UrgencyContext(colocated=two_storms), small_cap)[1]["compound"] == 12.0


# -- freshness ---------------------------------------------------------------------------


@pytest.mark.parametrize(("age_s", "factor"), [
    (0, 1.0), (600, 1.0), (600 + 3600, 0.75), (600 + 7200, 0.625), (10**7, 0.5),
    (-300, 1.0)])  # a reading stamped slightly ahead of `now` is fresh, not a bonus
def test_freshness_decays_with_age(age_s: float, factor: float) -> None:
    total, parts = score(steady(), age_s=age_s)  # base = 60
    assert parts["freshness"] == pytest.approx(60 * (factor - 1))
    assert total == pytest.approx(60 * factor)


# -- confidence --------------------------------------------------------------------------


def _other_feed(feed: str, place: Place = OTHER_VILLAGE, **kw: Any) -> Any:
    return example_hazard(hazard_id=f"{feed}:X", hazard_type=feed, feed=feed,
                          source_id=f"{feed}-X", place=place, trend={}, **kw)


def test_corroborating_feeds_in_the_same_town_raise_confidence() -> None:
    ctx = UrgencyContext(colocated=[_other_feed("weather"), _other_feed("incident")])
    total, parts = score(steady(), ctx)
    assert parts["confidence"] == pytest.approx(60 * 0.2) and total == pytest.approx(72.0)
    five = [_other_feed(f) for f in ("weather", "incident", "cap", "water", "x")]
    assert score(steady(), UrgencyContext(colocated=five))[1]["confidence"] == pytest.approx(18)


def test_same_feed_other_town_drills_and_silences_do_not_corroborate() -> None:
    ctx = UrgencyContext(colocated=[
        _other_feed("geohazard"),                       # same feed as the hazard
        _other_feed("weather", place=OTHER_TOWN),       # another town
        _other_feed("incident", exercise=True),         # a drill
        example_hazard(hazard_id="sensor_silent:Z", hazard_type="sensor_silent",
                       feed="water", source_id="Z"),    # a silent sensor is no evidence
    ])
    assert score(steady(), ctx)[1]["confidence"] == 0.0


def test_a_silent_own_source_lowers_confidence() -> None:
    silent = example_hazard(hazard_id="sensor_silent:GH1", hazard_type="sensor_silent",
                            feed="geohazard", source_id="GH1")
    total, parts = score(steady(), UrgencyContext(colocated=[silent]))
    assert parts["confidence"] == pytest.approx(-18.0) and total == pytest.approx(42.0)
    # the silent-sensor hazard itself is not penalised for its own silence
    assert score(silent, UrgencyContext(colocated=[steady()]))[1]["confidence"] == 0.0


def test_confidence_never_below_its_floor() -> None:
    harsh = with_changes(confidence={"silent_penalty": 0.9, "floor": 0.5})
    silent = example_hazard(hazard_id="sensor_silent:GH1", hazard_type="sensor_silent",
                            source_id="GH1")
    assert score(steady(), UrgencyContext(colocated=[silent]), harsh)[0] == pytest.approx(30.0)


# -- the whole ---------------------------------------------------------------------------


def test_all_parts_together_sum_to_the_score() -> None:
    h = example_hazard(trend={"direction": "rising", "hours_to_next_level": 3.0,
                              "accelerating": "yes"})
    ctx = UrgencyContext(population=99_000, sites={"school": 2, "hospital": 1},
                         colocated=[rain(), _other_feed("incident")])
    total, parts = score(h, ctx, age_s=600 + 3600)
    # base = 60 + 20 + 24 + 17.5 + 20 = 141.5; freshness 0.75; confidence 1 + 2 × 0.1
    assert parts == {"level": 60.0, "exposure_population": 20.0, "exposure_sites": 24.0,
                     "trend": 17.5, "compound": 20.0, "freshness": -35.375,
                     "confidence": 21.225}
    assert total == pytest.approx(141.5 * 0.75 * 1.2)
    assert sum(parts.values()) == pytest.approx(total, abs=0.01)
