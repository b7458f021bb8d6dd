"""Coordinate systems that Chinese feeds arrive in, and their conversion to WGS84.

Why this exists: sensors and GPS report WGS84, but anything taken from Amap or Tencent maps
is in GCJ-02 (an obfuscated datum shifted by 100-700 m), and anything from Baidu is in BD-09
(GCJ-02 with a further shift). Boundaries are WGS84, so every coordinate is converted with
:func:`to_wgs84` before it is located.

Accuracy (all functions are vectorised numpy, float64):

* ``wgs84_to_gcj02`` is the publicly known GCJ-02 forward algorithm (Krasovsky ellipsoid
  constants), identical to the widely used reference implementations to ~1e-12 degrees.
* ``gcj02_to_wgs84`` inverts it by fixed-point iteration until the step is below 1e-11
  degrees (normally 3-5 iterations), so ``wgs84_to_gcj02(gcj02_to_wgs84(p)) == p`` to about
  1 mm; the common one-step approximation is off by up to ~1-2 m and is not used.
* ``gcj02_to_bd09`` is Baidu's forward formula; ``bd09_to_gcj02`` starts from the usual
  closed-form approximation and refines it by iteration (round trip < 1 mm).
* Outside the rough China bounding box used by every public implementation
  (lon 72.004-137.8347, lat 0.8293-55.8271) GCJ-02 equals WGS84 and points pass unchanged.
  The box is coarse (it includes e.g. parts of neighbouring countries), exactly as the
  providers' own SDKs behave. How faithfully the public algorithm matches the providers'
  servers is outside our control (reported as ~1 m); conversion adds < 1 mm to that.
* CGCS2000 (EPSG:4490) is treated as WGS84: the two frames differ by a few centimetres.
"""

from __future__ import annotations

import enum
from typing import Final

import numpy as np
import numpy.typing as npt

from onemap.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

_A: Final = 6378245.0  # Krasovsky 1940 semi-major axis used by GCJ-02
_EE: Final = 0.00669342162296594323  # its first eccentricity squared
_X_PI: Final = np.pi * 3000.0 / 180.0  # Baidu's constant
_TOL: Final = 1e-11  # degrees; iteration stop (about 1 micrometre)
_MAX_ITER: Final = 30


class Crs(enum.StrEnum):
    """A coordinate system a feed may use; parse user text with :meth:`parse`.

    >>> Crs.parse("Amap") is Crs.GCJ02, Crs.parse("EPSG:4490") is Crs.CGCS2000
    (True, True)
    """

    WGS84 = "wgs84"
    CGCS2000 = "cgcs2000"
    GCJ02 = "gcj02"
    BD09 = "bd09"

    @classmethod
    def parse(cls, value: str | Crs) -> Crs:
        """Accept the names and aliases people write in feed configs."""
        if isinstance(value, Crs):
            return value
        key = value.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        try:
            return _ALIASES[key]
        except KeyError:
            raise ConfigError(
                f"unknown coordinate system {value!r}; expected one of "
                "wgs84 (gps, epsg:4326), cgcs2000 (epsg:4490), gcj02 (amap, tencent), "
                "bd09 (baidu)",
                field="crs",
            ) from None


_ALIASES: Final[dict[str, Crs]] = {
    "wgs84": Crs.WGS84, "epsg:4326": Crs.WGS84, "4326": Crs.WGS84, "gps": Crs.WGS84,
    "cgcs2000": Crs.CGCS2000, "epsg:4490": Crs.CGCS2000, "4490": Crs.CGCS2000,
    "gcj02": Crs.GCJ02, "gcj": Crs.GCJ02, "amap": Crs.GCJ02, "gaode": Crs.GCJ02,
    "tencent": Crs.GCJ02, "qq": Crs.GCJ02, "mars": Crs.GCJ02,
    "bd09": Crs.BD09, "bd09ll": Crs.BD09, "baidu": Crs.BD09,
}


def _arrays(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x, y = np.broadcast_arrays(np.asarray(lon, dtype=np.float64),
                               np.asarray(lat, dtype=np.float64))
    return x.copy(), y.copy()


def in_china_box(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True where GCJ-02 applies (the public implementations' China bounding box).

    >>> bool(in_china_box(113.5, 22.2)), bool(in_china_box(2.35, 48.85))
    (True, False)
    """
    x, y = _arrays(lon, lat)
    return (x >= 72.004) & (x <= 137.8347) & (y >= 0.8293) & (y <= 55.8271)


def _gcj_offset(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 shift (degrees) at WGS84 (x, y); no China-box test."""
    # computed for every point, used only inside China: far outside (the poles, the inverse's
    # iterations on absurd input) the discarded values overflow; say nothing about them
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dx = x - 105.0
        dy = y - 35.0
        dxpi = dx * np.pi
        dypi = dy * np.pi
        common = (20.0 * np.sin(6.0 * dxpi) + 20.0 * np.sin(2.0 * dxpi)) * 2.0 / 3.0
        t_lat = (-100.0 + 2.0 * dx + 3.0 * dy + 0.2 * dy * dy + 0.1 * dx * dy
                 + 0.2 * np.sqrt(np.abs(dx)) + common
                 + (20.0 * np.sin(dypi) + 40.0 * np.sin(dypi / 3.0)) * 2.0 / 3.0
                 + (160.0 * np.sin(dypi / 12.0) + 320.0 * np.sin(dypi / 30.0)) * 2.0 / 3.0)
        t_lon = (300.0 + dx + 2.0 * dy + 0.1 * dx * dx + 0.1 * dx * dy
                 + 0.1 * np.sqrt(np.abs(dx)) + common
                 + (20.0 * np.sin(dxpi) + 40.0 * np.sin(dxpi / 3.0)) * 2.0 / 3.0
                 + (150.0 * np.sin(dxpi / 12.0) + 300.0 * np.sin(dxpi / 30.0)) * 2.0 / 3.0)
        radlat = y / 180.0 * np.pi
        magic = 1.0 - _EE * np.sin(radlat) ** 2
        sqrtmagic = np.sqrt(magic)
        d_lat = (t_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * np.pi)
        d_lon = (t_lon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * np.pi)
        return d_lon, d_lat


def wgs84_to_gcj02(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS84 -> GCJ-02 (Amap, Tencent); identity outside the China box.

    >>> x, y = wgs84_to_gcj02(116.404, 39.915)
    >>> round(float(x), 8), round(float(y), 8)
    (116.4102445, 39.91640428)
    """
    x, y = _arrays(lon, lat)
    inside = in_china_box(x, y)
    d_lon, d_lat = _gcj_offset(x, y)
    return np.where(inside, x + d_lon, x), np.where(inside, y + d_lat, y)


def gcj02_to_wgs84(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 -> WGS84 by iterating the forward transform (error < 1 mm, not ~1 m).

    >>> x, y = gcj02_to_wgs84(*wgs84_to_gcj02(113.5767, 22.2707))
    >>> round(float(x), 9), round(float(y), 9)
    (113.5767, 22.2707)
    """
    gx, gy = _arrays(lon, lat)
    inside = in_china_box(gx, gy)
    wx, wy = gx.copy(), gy.copy()
    for _ in range(_MAX_ITER):
        d_lon, d_lat = _gcj_offset(wx, wy)
        nx = gx - d_lon
        ny = gy - d_lat
        step = max(float(np.max(np.abs(nx - wx), initial=0.0)),
                   float(np.max(np.abs(ny - wy), initial=0.0)))
        wx, wy = nx, ny
        if step < _TOL:
            break
    return np.where(inside, wx, gx), np.where(inside, wy, gy)


def gcj02_to_bd09(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 -> BD-09 (Baidu's forward formula).

    >>> x, y = gcj02_to_bd09(116.404, 39.915)
    >>> round(float(x), 8), round(float(y), 8)
    (116.41036949, 39.92133699)
    """
    x, y = _arrays(lon, lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """BD-09 -> GCJ-02: closed-form approximation refined until it round-trips (< 1 mm).

    >>> x, y = bd09_to_gcj02(116.404, 39.915)
    >>> round(float(x), 5), round(float(y), 5)
    (116.39763, 39.90866)
    """
    bx, by = _arrays(lon, lat)
    x = bx - 0.0065
    y = by - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    gx, gy = z * np.cos(theta), z * np.sin(theta)
    for _ in range(_MAX_ITER):
        fx, fy = gcj02_to_bd09(gx, gy)
        ex, ey = bx - fx, by - fy
        gx, gy = gx + ex, gy + ey
        if max(float(np.max(np.abs(ex), initial=0.0)),
               float(np.max(np.abs(ey), initial=0.0))) < _TOL:
            break
    return gx, gy


def bd09_to_wgs84(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """BD-09 -> WGS84 (through GCJ-02)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def wgs84_to_bd09(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS84 -> BD-09 (through GCJ-02); mainly for tests and for drawing on Baidu tiles."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def to_wgs84(
    lon: npt.ArrayLike, lat: npt.ArrayLike, crs: Crs | str = Crs.WGS84,
) -> tuple[FloatArray, FloatArray]:
    """Convert feed coordinates in ``crs`` to WGS84, the frame boundaries are in.

    Non-finite values pass through unchanged so the locator can report them by index.

    >>> x, y = to_wgs84(113.5, 22.2, "wgs84")
    >>> float(x), float(y)
    (113.5, 22.2)
    """
    kind = Crs.parse(crs)
    if kind in (Crs.WGS84, Crs.CGCS2000):
        x, y = _arrays(lon, lat)
        return x, y
    x, y = _arrays(lon, lat)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.all():
        x0 = np.where(ok, x, 0.0)
        y0 = np.where(ok, y, 0.0)
        cx, cy = (gcj02_to_wgs84(x0, y0) if kind is Crs.GCJ02 else bd09_to_wgs84(x0, y0))
        return np.where(ok, cx, x), np.where(ok, cy, y)
    return gcj02_to_wgs84(x, y) if kind is Crs.GCJ02 else bd09_to_wgs84(x, y)
