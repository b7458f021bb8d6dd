"""Which villages a hazard *area* or *line* touches, and how much of each.

Why: a typhoon wind circle, a CAP warning polygon or a flood extent is not a point; the
rules and the SMS routing need the villages it covers, what share of each village's land
(and therefore, as an estimate, of its people) is inside, and for a river reach the
villages it runs through and for how many metres.

How:

* :class:`AreaIndex` is built once per :class:`~onemap.geo.boundaries.AdminMap`: an
  ``STRtree`` of the village polygons (WGS84) and each village's area in m². Queries are
  vectorised: one tree query, one ``shapely.covers`` (a village wholly inside counts as
  exactly 1.0, with no intersection computed) and one ``shapely.intersection`` over the
  remaining candidates.
* Areas are measured in a Lambert azimuthal **equal-area** projection centred on the map
  (pyproj, WGS84 ellipsoid), never in square degrees: equal-area means the projected area
  of any shape is its true ellipsoidal area, so the fractions are true area fractions.
  Vertices are projected, edges stay straight: the same straight-in-lon/lat edges the
  boundary files describe, whose area differs from a geodesic-edged polygon's by far less
  than the boundaries' own accuracy.
* Line lengths are geodesic (``pyproj.Geod.geometry_length`` on WGS84, per piece after the
  intersection), so they agree with ``Geod`` to float precision.
* The population of an affected village is an **area-proportional estimate**:
  ``round(fraction * village population)``. People are not spread evenly, so this is a
  planning figure, not a count; ``None`` where the village's population is unknown.
  The total is the sum of the rounded per-village figures.

Conventions: results are ordered by village code (= village index). Villages the area
only *touches* (a shared edge or a corner, zero overlapping area) are not listed, nor are
villages a line only touches at a point. A line running exactly along a shared edge counts
for both villages. Area outside every village (sea, a gap) is reported as
``outside_m2``. An invalid input polygon (e.g. a self-intersecting CAP polygon) is
repaired with ``make_valid``; non-finite or out-of-range coordinates raise
:class:`~onemap.errors.LocateError`.

>>> from onemap.geo.boundaries import AdminMap
>>> index = AreaIndex(AdminMap.load_default())
>>> impact = index.affected(circle(113.5767, 22.2710, 1500))   # 1.5 km around a point
>>> len(impact.villages) > 0, impact.kind
(True, 'area')
>>> all(0.0 < v.fraction <= 1.0 for v in impact.villages)
True
>>> river = shapely.LineString([(113.30, 22.20), (113.33, 22.22)])
>>> sum(c.length_m for c in index.affected(river).crossings) > 3000
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry

from onemap.errors import LocateError
from onemap.geo.boundaries import AdminMap

GEOD: Final = Geod(ellps="WGS84")
_POLYGONAL: Final = ("Polygon", "MultiPolygon")
_LINEAR: Final = ("LineString", "MultiLineString", "LinearRing")
#: Overlaps below this fraction of a village are numerical slivers of a shared edge.
SLIVER_FRACTION: Final = 1e-9


def circle(lon: float, lat: float, radius_m: float, segments: int = 128) -> shapely.Polygon:
    """A geodesic circle as a WGS84 polygon: ``segments`` vertices at exactly ``radius_m``
    (ellipsoidal geodesic distance) from the centre.

    The vertices are the ellipsoidal azimuthal-equidistant circle (``Geod.fwd`` from the
    centre, which is what an aeqd projection centred there does), so the radius is exact
    at every vertex; the straight chords between them lose ``(2 pi / n)^2 / 6`` of the area
    (0.04 % at the default 128).

    >>> c = circle(113.5, 22.2, 1000.0)
    >>> _, _, d = GEOD.inv([113.5] * 4, [22.2] * 4, *np.asarray(c.exterior.coords)[:4].T)
    >>> [round(float(x), 6) for x in d]
    [1000.0, 1000.0, 1000.0, 1000.0]
    """
    if not (math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90):
        raise LocateError(f"circle centre lon={lon!r}, lat={lat!r} is not a valid coordinate")
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise LocateError(f"circle radius must be a positive number of metres, got {radius_m!r}")
    if segments < 8:
        raise ValueError(f"segments must be at least 8, got {segments}")
    az = np.linspace(0.0, 360.0, segments, endpoint=False)
    x, y, _ = GEOD.fwd(np.full(segments, lon), np.full(segments, lat), az,
                       np.full(segments, float(radius_m)))
    ring = np.column_stack([x, y])[::-1]  # counter-clockwise shell
    return shapely.Polygon(np.concatenate([ring, ring[:1]]))


@dataclass(frozen=True)
class VillageShare:
    """One village an area overlaps. ``population`` is an area-proportional estimate."""

    index: int
    code: str
    name: str
    fraction: float  # of the village's area that lies inside the hazard area, (0, 1]
    overlap_m2: float
    population: int | None  # round(fraction * village population); None if unknown


@dataclass(frozen=True)
class VillageCrossing:
    """One village a line runs through, with the geodesic length inside it."""

    index: int
    code: str
    name: str
    length_m: float


@dataclass(frozen=True)
class AreaImpact:
    """What a hazard geometry touches. For an area, ``villages`` is filled; for a line,
    ``crossings``. Both are ordered by village code."""

    kind: Literal["area", "line"]
    villages: tuple[VillageShare, ...] = ()
    crossings: tuple[VillageCrossing, ...] = ()
    area_m2: float = 0.0  # the hazard area's own area (equal-area projection)
    outside_m2: float = 0.0  # of it, outside every village (sea, gaps)
    length_m: float = 0.0  # the line's geodesic length
    outside_length_m: float = 0.0  # of it, outside every village

    @property
    def population(self) -> int:
        """Total estimated people affected: sum of the per-village estimates (known ones)."""
        return sum(v.population for v in self.villages if v.population is not None)

    @property
    def codes(self) -> tuple[str, ...]:
        """Codes of the villages affected (areas) or crossed (lines)."""
        if self.kind == "area":
            return tuple(v.code for v in self.villages)
        return tuple(c.code for c in self.crossings)


class AreaIndex:
    """Build once per map; then :meth:`affected` for any hazard polygon, circle or line.

    The equal-area projection is a Lambert azimuthal equal-area centred on the map's
    bounds, so it suits any map from a city to a province.
    """

    def __init__(self, admin_map: AdminMap) -> None:
        self.admin_map = admin_map
        villages = admin_map.village
        self._geoms = np.asarray(villages.geometry)
        self._tree = shapely.STRtree(self._geoms)
        minx, miny, maxx, maxy = admin_map.bounds
        lon0, lat0 = (minx + maxx) / 2.0, (miny + maxy) / 2.0
        self.equal_area = CRS.from_proj4(
            f"+proj=laea +lat_0={lat0:.6f} +lon_0={lon0:.6f} +datum=WGS84 +units=m +no_defs")
        self._to_m = Transformer.from_crs(CRS.from_epsg(4326), self.equal_area,
                                          always_xy=True)
        self.village_area_m2: npt.NDArray[np.float64] = shapely.area(
            self._project(self._geoms))
        self.village_area_m2.flags.writeable = False

    def _project(self, geoms: npt.NDArray[np.object_] | BaseGeometry
                 ) -> npt.NDArray[np.object_]:
        def fn(c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            x, y = self._to_m.transform(c[:, 0], c[:, 1])
            return np.column_stack([x, y])
        out: npt.NDArray[np.object_] = shapely.transform(np.asarray(geoms, dtype=object), fn)
        return out

    def area_m2(self, geom: BaseGeometry) -> float:
        """Area of a WGS84 geometry in m² (equal-area projection)."""
        return float(shapely.area(self._project(np.array([geom], dtype=object)))[0])

    def affected(self, area: BaseGeometry) -> AreaImpact:
        """Villages touched by a (multi)polygon or (multi)line in WGS84."""
        geom = _checked(area)
        if geom.geom_type in _LINEAR:
            return self._line(geom)
        return self._area(geom)

    # -- polygons -----------------------------------------------------------------------

    def _area(self, area: BaseGeometry) -> AreaImpact:
        total_m2 = self.area_m2(area)
        shapely.prepare(area)
        cand = np.sort(self._tree.query(area, predicate="intersects"))
        fraction = np.zeros(cand.size)
        overlap = np.zeros(cand.size)
        whole = shapely.covers(area, self._geoms[cand])
        fraction[whole] = 1.0
        overlap[whole] = self.village_area_m2[cand[whole]]
        part = np.flatnonzero(~whole)
        if part.size:
            pieces = shapely.intersection(self._geoms[cand[part]], area)
            overlap[part] = shapely.area(self._project(_polygonal(pieces)))
            fraction[part] = np.minimum(overlap[part] / self.village_area_m2[cand[part]], 1.0)
        keep = fraction > SLIVER_FRACTION
        t = self.admin_map.village
        shares = []
        for i, f, a in zip(cand[keep].tolist(), fraction[keep].tolist(), overlap[keep].tolist(),
                           strict=True):
            pop = int(t.population[i])
            shares.append(VillageShare(
                index=i, code=t.codes[i], name=t.names[i], fraction=f, overlap_m2=a,
                population=round(f * pop) if pop >= 0 else None))
        inside = float(overlap[keep].sum())
        return AreaImpact(kind="area", villages=tuple(shares), area_m2=total_m2,
                          outside_m2=max(total_m2 - inside, 0.0))

    # -- lines --------------------------------------------------------------------------

    def _line(self, line: BaseGeometry) -> AreaImpact:
        total = float(GEOD.geometry_length(line))
        cand = np.sort(self._tree.query(line, predicate="intersects"))
        pieces = shapely.intersection(self._geoms[cand], line)
        t = self.admin_map.village
        crossings = []
        for i, piece in zip(cand.tolist(), pieces.tolist(), strict=True):
            linear = [p for p in shapely.get_parts(piece) if p.geom_type in _LINEAR]
            length = sum(float(GEOD.geometry_length(p)) for p in linear)
            if length > 0.0:
                crossings.append(VillageCrossing(i, t.codes[i], t.names[i], length))
        inside = sum(c.length_m for c in crossings)
        return AreaImpact(kind="line", crossings=tuple(crossings), length_m=total,
                          outside_length_m=max(total - inside, 0.0))


def affected_villages(admin_map: AdminMap, area: BaseGeometry) -> AreaImpact:
    """One-off convenience: builds an :class:`AreaIndex` (cached per map) and queries it."""
    index = _INDEXES.get(id(admin_map))
    if index is None or index.admin_map is not admin_map:
        index = AreaIndex(admin_map)
        _INDEXES[id(admin_map)] = index
    return index.affected(area)


_INDEXES: dict[int, AreaIndex] = {}


def _checked(area: object) -> BaseGeometry:
    if not isinstance(area, BaseGeometry):
        raise LocateError(f"a hazard area must be a shapely geometry, got {type(area).__name__}")
    if area.geom_type not in _POLYGONAL + _LINEAR:
        raise LocateError(
            f"a hazard area must be a Polygon, MultiPolygon, LineString or "
            f"MultiLineString, got {area.geom_type}")
    if area.is_empty:
        raise LocateError(f"the hazard {area.geom_type} is empty")
    xy = shapely.get_coordinates(area)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(xy).all(axis=1) & (np.abs(xy[:, 0]) <= 180) & (np.abs(xy[:, 1]) <= 90)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise LocateError(
            f"hazard {area.geom_type} vertex {i} ({xy[i, 0]!r}, {xy[i, 1]!r}) is not a valid "
            "WGS84 coordinate (finite, lon in [-180, 180], lat in [-90, 90])")
    if area.geom_type in _POLYGONAL and not area.is_valid:
        area = _polygonal(np.array([shapely.make_valid(area)], dtype=object))[0]
    return area


def _polygonal(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Keep only the polygonal part of each geometry (an intersection can add edges/points)."""
    out = np.array(geoms, dtype=object, copy=True)
    mixed = np.flatnonzero(shapely.get_type_id(out) == 7)  # GeometryCollection
    for i in mixed:
        parts = [p for p in shapely.get_parts(out[i]) if p.geom_type in _POLYGONAL]
        out[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return out
