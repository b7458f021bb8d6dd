"""Hazard areas and lines -> affected villages, fractions, populations, lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from pyproj import Geod

from onemap.errors import LocateError
from onemap.geo.areas import AreaIndex, affected_villages, circle
from onemap.geo.boundaries import AdminMap

GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def zhuhai_index(zhuhai_map: AdminMap) -> AreaIndex:
    return AreaIndex(zhuhai_map)


@pytest.fixture(scope="module")
def synthetic_index(synthetic_map: AdminMap) -> AreaIndex:
    return AreaIndex(synthetic_map)


def test_circle_vertices_are_at_the_radius() -> None:
    c = circle(113.5, 22.25, 2500.0, segments=64)
    xy = np.asarray(c.exterior.coords)[:-1]
    _, _, d = GEOD.inv(np.full(64, 113.5), np.full(64, 22.25), xy[:, 0], xy[:, 1])
    assert np.allclose(d, 2500.0, atol=1e-6)
    assert c.is_valid and c.exterior.is_ccw


def test_circle_covering_a_village_gives_fraction_one(
        zhuhai_index: AreaIndex, zhuhai_map: AdminMap) -> None:
    t = zhuhai_map.village
    i = int(np.argsort(zhuhai_index.village_area_m2)[len(t) // 2])  # a median village
    centre = shapely.centroid(t.geometry[i])
    xy = shapely.get_coordinates(t.geometry[i])
    _, _, d = GEOD.inv(np.full(len(xy), centre.x), np.full(len(xy), centre.y),
                       xy[:, 0], xy[:, 1])
    impact = zhuhai_index.affected(circle(centre.x, centre.y, float(d.max()) * 1.2))
    share = next(v for v in impact.villages if v.index == i)
    assert share.fraction == 1.0
    assert share.population == int(t.population[i])
    assert share.code == t.codes[i] and share.name == t.names[i]
    assert [v.code for v in impact.villages] == sorted(v.code for v in impact.villages)


def test_fractions_sum_to_the_circles_area(zhuhai_index: AreaIndex) -> None:
    c = circle(113.545, 22.262, 1200.0)  # 香洲 city centre, on land, many villages
    impact = zhuhai_index.affected(c)
    assert len(impact.villages) >= 3
    overlap = sum(v.fraction * float(zhuhai_index.village_area_m2[v.index])
                  for v in impact.villages)
    area = zhuhai_index.area_m2(c)
    assert impact.area_m2 == pytest.approx(area)
    assert overlap + impact.outside_m2 == pytest.approx(area, rel=1e-9)
    assert impact.outside_m2 < 1e-6 * area  # all on land: no sea inside
    # the equal-area projection agrees with the geodesic area of the polygon
    geodesic_area = abs(GEOD.geometry_area_perimeter(c)[0])
    assert area == pytest.approx(geodesic_area, rel=1e-6)
    assert area == pytest.approx(math.pi * 1200.0**2, rel=1e-3)  # chord loss ~0.04 %


def test_polygon_equal_to_a_town_gives_its_villages(
        zhuhai_index: AreaIndex, zhuhai_map: AdminMap) -> None:
    towns = zhuhai_map.town
    ti = towns.index_of("440402006")  # 香湾街道
    impact = zhuhai_index.affected(towns.geometry[ti])
    mine = np.flatnonzero(zhuhai_map.village_town == ti).tolist()
    assert [v.index for v in impact.villages] == mine
    assert all(v.fraction == pytest.approx(1.0, abs=1e-9) for v in impact.villages)
    assert impact.population == int(towns.population[ti])


def test_line_across_two_villages(synthetic_index: AreaIndex) -> None:
    # 甲村 (113.0-113.1) and 乙村 (113.1-113.2) along lat 22.05
    line = shapely.LineString([(113.05, 22.05), (113.15, 22.05)])
    impact = synthetic_index.affected(line)
    assert impact.kind == "line"
    assert impact.codes == ("440402001001", "440402001002")
    total = GEOD.line_length([113.05, 113.15], [22.05, 22.05])
    assert sum(c.length_m for c in impact.crossings) == pytest.approx(total, abs=0.01)
    assert impact.length_m == pytest.approx(total, abs=1e-6)
    half = GEOD.line_length([113.05, 113.1], [22.05, 22.05])
    assert impact.crossings[0].length_m == pytest.approx(half, abs=0.01)
    assert impact.outside_length_m == pytest.approx(0.0, abs=0.01)


def test_line_into_a_gap_and_out_of_area(synthetic_index: AreaIndex) -> None:
    line = shapely.LineString([(113.32, 22.065), (113.5, 22.065)])  # 己村, its hole, sea
    impact = synthetic_index.affected(line)
    assert impact.codes == ("440403001002",)
    inside = GEOD.line_length([113.32, 113.35], [22.065, 22.065]) + GEOD.line_length(
        [113.38, 113.4], [22.065, 22.065])
    assert impact.crossings[0].length_m == pytest.approx(inside, abs=0.01)
    assert impact.outside_length_m > 10_000


def test_touching_only_is_not_affected(synthetic_index: AreaIndex) -> None:
    touching = shapely.box(113.2, 22.0, 113.25, 22.05)  # shares an edge with 乙村
    impact = synthetic_index.affected(touching)
    assert impact.codes == ("440403001001",)
    assert impact.villages[0].fraction == pytest.approx(0.125, rel=1e-3)


def test_affected_villages_helper_and_partial_population(synthetic_map: AdminMap) -> None:
    half = shapely.box(113.0, 22.0, 113.05, 22.1)  # west half of 甲村 (population 1000)
    impact = affected_villages(synthetic_map, half)
    assert impact.codes == ("440402001001",)
    assert impact.villages[0].fraction == pytest.approx(0.5, rel=1e-3)
    assert impact.population == 500


def test_invalid_polygon_is_repaired(synthetic_index: AreaIndex) -> None:
    bow = shapely.Polygon([(113.02, 22.02), (113.08, 22.08), (113.08, 22.02),
                           (113.02, 22.08), (113.02, 22.02)])
    assert not bow.is_valid
    impact = synthetic_index.affected(bow)
    assert impact.codes == ("440402001001",)
    assert 0 < impact.villages[0].fraction < 0.5


@pytest.mark.parametrize("bad", [
    shapely.Point(113.1, 22.1),
    shapely.Polygon(),
    shapely.LineString([(113.0, 22.0), (200.0, 22.1)]),
    shapely.box(113.0, 95.0, 113.1, 96.0),
    "POLYGON ((0 0, 1 0, 1 1, 0 0))",
])
def test_bad_areas_are_rejected(synthetic_index: AreaIndex, bad: object) -> None:
    with pytest.raises(LocateError):
        synthetic_index.affected(bad)  # type: ignore[arg-type, unused-ignore]


def test_bad_circles_are_rejected() -> None:
    with pytest.raises(LocateError):
        circle(113.0, 22.0, -5.0)
    with pytest.raises(LocateError):
        circle(float("inf"), 22.0, 5.0)
