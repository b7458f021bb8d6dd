"""Coordinate conversions against published reference pairs and round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onemap.errors import ConfigError
from onemap.geo.crs import (
    Crs,
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

M_PER_DEG = 111_320.0

# (wgs lon, wgs lat, gcj lon, gcj lat): eviltransform's published test vectors
EVIL = [
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # Shanghai
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # Shenzhen
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # Beijing
]


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), EVIL)
def test_forward_gcj_matches_published_pairs(wlon: float, wlat: float, glon: float,
                                             glat: float) -> None:
    x, y = wgs84_to_gcj02(wlon, wlat)
    assert float(x) == pytest.approx(glon, abs=1e-9)
    assert float(y) == pytest.approx(glat, abs=1e-9)


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), EVIL)
def test_inverse_gcj_recovers_wgs_to_a_millimetre(wlon: float, wlat: float, glon: float,
                                                  glat: float) -> None:
    x, y = gcj02_to_wgs84(glon, glat)
    assert abs(float(x) - wlon) * M_PER_DEG < 0.005
    assert abs(float(y) - wlat) * M_PER_DEG < 0.005


def test_coordtransform_reference_pairs() -> None:
    # wandergis/coordtransform's documented outputs for (116.404, 39.915)
    assert np.allclose(wgs84_to_gcj02(116.404, 39.915),
                       (116.41024449916938, 39.91640428150164), atol=1e-9)
    assert np.allclose(gcj02_to_bd09(116.404, 39.915),
                       (116.41036949371029, 39.92133699351021), atol=1e-9)
    # their inverses are one-step approximations; ours is within 0.1 m of them
    assert np.allclose(bd09_to_gcj02(116.404, 39.915),
                       (116.39762729119315, 39.90865673957631), atol=1e-6)
    assert np.allclose(gcj02_to_wgs84(116.404, 39.915),
                       (116.39775550083061, 39.91359571849836), atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.floats(73.0, 135.0), st.floats(3.0, 53.0))
def test_round_trips_inside_china_under_half_a_metre(lon: float, lat: float) -> None:
    gx, gy = wgs84_to_gcj02(lon, lat)
    wx, wy = gcj02_to_wgs84(gx, gy)
    assert abs(float(wx) - lon) * M_PER_DEG < 0.5
    assert abs(float(wy) - lat) * M_PER_DEG < 0.5
    bx, by = wgs84_to_bd09(lon, lat)
    wx, wy = bd09_to_wgs84(bx, by)
    assert abs(float(wx) - lon) * M_PER_DEG < 0.5
    assert abs(float(wy) - lat) * M_PER_DEG < 0.5


def test_outside_china_gcj_is_wgs() -> None:
    lon = np.array([2.35, -74.0, 151.2, 139.7])
    lat = np.array([48.85, 40.7, -33.9, 35.7])  # Paris, New York, Sydney, Tokyo
    x, y = wgs84_to_gcj02(lon, lat)
    assert np.array_equal(x, lon) and np.array_equal(y, lat)
    x, y = gcj02_to_wgs84(lon, lat)
    assert np.array_equal(x, lon) and np.array_equal(y, lat)


def test_vectorised_equals_scalar() -> None:
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(100, 120, 50), rng.uniform(20, 40, 50)
    x, y = gcj02_to_wgs84(lon, lat)
    for i in range(0, 50, 7):
        sx, sy = gcj02_to_wgs84(lon[i], lat[i])
        assert float(sx) == pytest.approx(x[i], abs=1e-10)
        assert float(sy) == pytest.approx(y[i], abs=1e-10)


def test_to_wgs84_dispatch_and_aliases() -> None:
    gx, gy = wgs84_to_gcj02(113.5, 22.2)
    x, y = to_wgs84([float(gx)], [float(gy)], "amap")
    assert abs(x[0] - 113.5) < 1e-8 and abs(y[0] - 22.2) < 1e-8
    x, y = to_wgs84([113.5], [22.2], "EPSG:4490")
    assert (x[0], y[0]) == (113.5, 22.2)
    bx, by = wgs84_to_bd09(113.5, 22.2)
    x, y = to_wgs84(bx, by, Crs.BD09)
    assert abs(float(x) - 113.5) < 1e-8
    x, y = to_wgs84([np.nan, float(gx)], [22.2, float(gy)], Crs.GCJ02)
    assert np.isnan(x[0]) and abs(x[1] - 113.5) < 1e-8
    with pytest.raises(ConfigError, match="unknown coordinate system 'utm'"):
        Crs.parse("utm")
