"""Locator rules on the synthetic map, properties, and a brute-force cross-check on Zhuhai."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from onemap.errors import LocateError
from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.geo.crs import wgs84_to_gcj02
from onemap.geo.locator import Locator


@pytest.fixture(scope="module")
def loc(synthetic_map: AdminMap) -> Locator:
    return Locator(synthetic_map)


def _codes(loc: Locator, lon: float, lat: float) -> tuple[str | None, ...]:
    batch = loc.locate([lon], [lat])
    one = loc.locate_one(lon, lat)
    assert batch.codes(0) == one.codes
    return one.codes


@pytest.mark.parametrize(("lon", "lat", "village"), [
    (113.05, 22.05, "440402001001"),
    (113.1, 22.05, "440402001001"),   # shared edge of two villages -> smaller code
    (113.05, 22.1, "440402001001"),   # shared edge between two towns
    (113.1, 22.1, "440402001001"),    # vertex shared by four villages
    (113.2, 22.05, "440402001002"),   # district boundary: 440402... < 440403...
    (113.3, 22.2, "440403001001"),    # vertex on the city's outer edge
    (113.0, 22.05, "440402001001"),   # outer boundary is inside (closed polygons)
    (113.4, 22.0, "440403001002"),    # the city's corner
])
def test_boundaries_go_to_the_smallest_code(loc: Locator, lon: float, lat: float,
                                            village: str) -> None:
    codes = _codes(loc, lon, lat)
    assert codes[3] == village
    assert codes[2] == village[:9]
    assert codes[1] == village[:6]
    assert codes[0] == "440400"


def test_gap_between_villages_still_gets_town(loc: Locator) -> None:
    p = loc.locate_one(113.365, 22.065)
    assert p.in_area and p.village is None
    assert p.codes == ("440400", "440403", "440403001", None)
    assert p.finest is not None and p.finest.level is AdminLevel.TOWN
    # on the gap's rim the village wins (closed polygons)
    assert loc.locate_one(113.35, 22.065).codes[3] == "440403001002"


@pytest.mark.parametrize(("lon", "lat"), [(114.0, 23.0), (113.2, 21.99999), (0.0, 0.0),
                                          (-180.0, -90.0), (180.0, 90.0)])
def test_out_of_area_is_flagged_not_dropped(loc: Locator, lon: float, lat: float) -> None:
    r = loc.locate([113.05, lon], [22.05, lat])
    assert len(r) == 2
    assert r.in_area.tolist() == [True, False]
    assert r.chain[1].tolist() == [-1, -1, -1, -1]
    assert r.village_code[1] == "" and r.city_code[0] == "440400"
    assert not loc.locate_one(lon, lat).in_area


@pytest.mark.parametrize(("lon", "lat", "message"), [
    (np.nan, 22.0, "index 1: lon=nan"),
    (113.0, np.inf, "index 1: lat=inf"),
    (-np.inf, 22.0, "index 1: lon=-inf"),
    (181.0, 22.0, "lon=181.0 outside [-180, 180]"),
    (113.0, -90.5, "lat=-90.5 outside [-90, 90]"),
])
def test_bad_coordinates_raise(loc: Locator, lon: float, lat: float, message: str) -> None:
    with pytest.raises(LocateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loc.locate([113.05, lon], [22.05, lat])
    with pytest.raises(LocateError, match="index 0"):
        loc.locate_one(lon, lat)


def test_batch_error_lists_the_first_few(loc: Locator) -> None:
    x = np.full(20, 113.05)
    x[[3, 4, 9, 11, 12, 15, 17]] = np.nan
    with pytest.raises(LocateError) as err:
        loc.locate(x, np.full(20, 22.05))
    text = str(err.value)
    assert "cannot locate 7 of 20" in text
    assert "index 3:" in text and "index 12:" in text and "index 15" not in text
    assert "(and 2 more)" in text
    with pytest.raises(LocateError, match="lon has 2 values but lat has 3"):
        loc.locate([1.0, 2.0], [1.0, 2.0, 3.0])


def test_batch_equals_one_at_a_time_on_a_lattice(loc: Locator) -> None:
    # a lattice through every edge and vertex of the synthetic map, and beyond it
    xs, ys = np.meshgrid(np.linspace(112.99, 113.41, 85), np.linspace(21.99, 22.21, 45))
    x, y = xs.ravel(), ys.ravel()
    batch = loc.locate(x, y)
    for i in range(x.size):
        assert batch.codes(i) == loc.locate_one(float(x[i]), float(y[i])).codes


def test_names_and_codes_vectorised(loc: Locator) -> None:
    r = loc.locate(np.array([113.05, 113.365, 120.0]), np.array([22.15, 22.065, 22.0]))
    assert r.village_code.tolist() == ["440402002001", "", ""]
    assert r.town_code.tolist() == ["440402002", "440403001", ""]
    assert r.name(AdminLevel.VILLAGE).tolist() == ["丙村", "", ""]
    assert r.district_idx.dtype == np.int32
    assert r.placement(0).village is not None
    assert r.placement(0).village.name == "丙村"  # type: ignore[union-attr]


def test_gcj_input_is_converted_before_locating(loc: Locator) -> None:
    gx, gy = wgs84_to_gcj02(113.099, 22.05)  # just west of a village edge in WGS84
    assert loc.locate_one(float(gx), float(gy), crs="gcj02").codes[3] == "440402001001"
    assert loc.locate(gx, gy, crs="amap").village_code[0] == "440402001001"


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 5), st.floats(0.001, 0.999), st.floats(0.001, 0.999))
def test_points_inside_a_village_locate_to_it(synthetic_map: AdminMap, loc: Locator, v: int,
                                             u: float, w: float) -> None:
    g = synthetic_map.village.geometry[v]
    minx, miny, maxx, maxy = g.bounds
    x, y = minx + u * (maxx - minx), miny + w * (maxy - miny)
    r = loc.locate([x], [y])
    # closed polygons: a boundary point is inside; on a shared edge the smallest code wins
    hits = [i for i, gi in enumerate(synthetic_map.village.geometry)
            if shapely.intersects_xy(gi, x, y)]
    if hits:
        assert r.village_idx[0] == min(hits)
        assert r.chain[0].tolist() == synthetic_map.village.chain[min(hits)].tolist()
    else:  # the gap hole in the last village
        assert r.village_idx[0] == -1 and r.town_idx[0] >= 0
    assert r.codes(0) == loc.locate_one(x, y).codes


# -- the real Zhuhai map -------------------------------------------------------------------


@pytest.fixture(scope="module")
def zloc(zhuhai_map: AdminMap) -> Locator:
    return Locator(zhuhai_map)


def _brute(m: AdminMap, x: np.ndarray, y: np.ndarray, level: AdminLevel) -> np.ndarray:
    """Smallest-code polygon of ``level`` covering each point, by testing every polygon."""
    best = np.full(x.size, -1)
    geoms = m[level].geometry
    for i in range(len(geoms) - 1, -1, -1):
        best[shapely.intersects_xy(geoms[i], x, y)] = i
    return best


def test_cross_check_against_district_polygons(zhuhai_map: AdminMap, zloc: Locator) -> None:
    rng = np.random.default_rng(20240601)
    minx, miny, maxx, maxy = zhuhai_map.bounds
    x = rng.uniform(minx, maxx, 20_000)
    y = rng.uniform(miny, maxy, 20_000)
    r = zloc.locate(x, y)
    district = _brute(zhuhai_map, x, y, AdminLevel.DISTRICT)
    assert (district >= 0).sum() > 1000  # enough points on land
    assert np.array_equal(r.district_idx, district)
    assert np.array_equal(r.in_area, district >= 0)
    village = _brute(zhuhai_map, x, y, AdminLevel.VILLAGE)
    assert np.array_equal(r.village_idx, village)


def test_zhuhai_vertices_and_edges_match_brute_force(zhuhai_map: AdminMap, zloc: Locator
                                                     ) -> None:
    c = shapely.get_coordinates(zhuhai_map.village.geometry)[::3]
    x, y = c[:, 0], c[:, 1]
    r = zloc.locate(x, y)
    assert np.array_equal(r.village_idx, _brute(zhuhai_map, x, y, AdminLevel.VILLAGE))
    for i in range(0, x.size, 25):
        assert r.codes(i) == zloc.locate_one(float(x[i]), float(y[i])).codes


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_zhuhai_points_inside_villages(zhuhai_map: AdminMap, zloc: Locator,
                                       triangles: Triangles, data: st.DataObject) -> None:
    loc, tris = zloc, triangles
    k = data.draw(st.integers(0, len(tris[0]) - 1))
    a = data.draw(st.floats(0.01, 0.98))
    b = data.draw(st.floats(0.01, 0.99 - a))
    v, (p0, p1, p2) = tris[0][k], tris[1][k]
    x, y = p0 + a * (p1 - p0) + b * (p2 - p0)
    r = loc.locate([x], [y])
    g = zhuhai_map.village.geometry[v]
    if shapely.contains_properly(g, shapely.Point(x, y)):
        assert r.village_idx[0] == v
        assert r.chain[0].tolist() == zhuhai_map.village.chain[v].tolist()
    assert r.codes(0) == loc.locate_one(float(x), float(y)).codes


Triangles = tuple[list[int], list[np.ndarray]]


@pytest.fixture(scope="module")
def triangles(zhuhai_map: AdminMap) -> Triangles:
    """Every village cut into triangles, to sample points inside villages uniformly-ish."""
    m = zhuhai_map
    owners: list[int] = []
    corners: list[np.ndarray] = []
    for v, g in enumerate(m.village.geometry):
        for tri in shapely.get_parts(shapely.constrained_delaunay_triangles(g)):
            owners.append(v)
            corners.append(shapely.get_coordinates(tri)[:3])
    return owners, corners
