"""Vulnerable sites near a hazard: schools, kindergartens, hospitals, elderly homes, shelters.

Why: "which kindergartens are within 2 km of this landslide" decides who is called first,
and a radius in degrees is wrong by up to 8 % east-west at Zhuhai's latitude (and more
further north), so every distance here is in metres on the WGS84 ellipsoid.

* :class:`SiteIndex` loads the registry (``fixtures/registries/vulnerable_sites.csv`` by
  default) strictly: each row is validated (unknown or missing columns, bad numbers,
  coordinates out of range, unknown kinds, duplicate ids) and errors name the file, the
  line and the column.
* A query first takes the sites in a lon/lat box from an ``STRtree`` and then measures
  exact geodesic distances (``pyproj.Geod.inv``, Karney's algorithm, accurate to ~15 nm)
  for those only. The box is *provably* wide enough: a point within ``r`` metres differs
  in latitude by at most ``r / M(0)`` radians (the meridional radius of curvature is
  smallest at the equator, ``M(0) = a (1 - e^2)``) and in longitude by at most
  ``r / (a cos phi_max)`` where ``phi_max`` is the box's highest absolute latitude (a
  parallel's radius ``N cos phi`` is never below ``a cos phi``). Near a pole the box spans
  all longitudes. Boxes are not wrapped across the antimeridian (the map is China).
* The radius is inclusive: a site at exactly ``radius_m`` is returned. Results are
  sorted by distance, ties by site id.

The distance error is therefore that of the coordinates themselves (a site digitised on
a GCJ-02 map and not converted is 100-700 m off; see :mod:`onemap.geo.crs`).

>>> sites = SiteIndex.load_default()
>>> hits = sites.within(113.5669, 22.2568, 500)
>>> hits[0].site.name, round(hits[0].distance_m)
('珠海市人民医院', 7)
>>> [h.site.kind for h in sites.within(113.5669, 22.2568, 3000, kinds={"shelter"})][:1]
['shelter']
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import shapely
from pydantic import Field
from pyproj import Geod

from onemap.datafiles import StrictModel, load_csv_models
from onemap.errors import ConfigError, LocateError

GEOD: Final = Geod(ellps="WGS84")
_A: Final = 6_378_137.0  # WGS84 semi-major axis, m
_E2: Final = 0.006_694_379_990_141_317  # WGS84 first eccentricity squared
_M0: Final = _A * (1.0 - _E2)  # smallest meridional radius of curvature (at the equator)
_WIDEN: Final = 1.0 + 1e-9  # relative safety margin on the prefilter box

SiteKind = Literal["school", "kindergarten", "hospital", "elderly_home", "shelter"]
SITE_KINDS: Final[tuple[str, ...]] = ("school", "kindergarten", "hospital", "elderly_home",
                                      "shelter")


class Site(StrictModel):
    """One vulnerable site; ``capacity`` is people (pupils, beds, residents, places)."""

    site_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    kind: SiteKind
    lon: Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
    lat: Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
    capacity: Annotated[int, Field(ge=0)]


class SiteHit(NamedTuple):
    """A site and its geodesic distance in metres from the hazard."""

    site: Site
    distance_m: float


def default_sites_path() -> Path:
    """The shipped registry (package data ``onemap.fixtures/registries``)."""
    import importlib.resources

    root = importlib.resources.files("onemap.fixtures").joinpath("registries")
    return Path(str(root)) / "vulnerable_sites.csv"


class SiteIndex:
    """The registry in parallel arrays plus an STRtree of the site points."""

    def __init__(self, sites: Sequence[Site], *, source: str = "<memory>") -> None:
        self.sites: tuple[Site, ...] = tuple(sites)
        self.source = source
        self._lon = np.array([s.lon for s in self.sites], dtype=np.float64)
        self._lat = np.array([s.lat for s in self.sites], dtype=np.float64)
        self._kind = np.array([s.kind for s in self.sites], dtype=object)
        # ties broken by site id: rank of each site in id order
        order = sorted(range(len(self.sites)), key=lambda i: self.sites[i].site_id)
        self._id_rank = np.empty(len(self.sites), dtype=np.int64)
        self._id_rank[order] = np.arange(len(self.sites))
        self._tree = shapely.STRtree(shapely.points(self._lon, self._lat))

    def __len__(self) -> int:
        return len(self.sites)

    @classmethod
    def from_csv(cls, path: str | Path) -> SiteIndex:
        """Load and validate a registry CSV; :class:`ConfigError` names line and column."""
        p = Path(path)
        sites = load_csv_models(Site, p)
        seen: dict[str, int] = {}
        for i, s in enumerate(sites):
            line = i + 2  # header is line 1 (rows hold no embedded newlines)
            if s.site_id in seen:
                raise ConfigError(f"duplicate site_id {s.site_id!r} (first on line "
                                  f"{seen[s.site_id]})", path=str(p), line=line,
                                  field="site_id")
            seen[s.site_id] = line
        return cls(sites, source=str(p))

    @classmethod
    def load_default(cls) -> SiteIndex:
        """The shipped Zhuhai registry (fictitious sites, see fixtures/README.md)."""
        return cls.from_csv(default_sites_path())

    def within(self, lon: float, lat: float, radius_m: float,
               kinds: Collection[str] | None = None) -> list[SiteHit]:
        """Sites within ``radius_m`` metres (inclusive) of one point, nearest first."""
        return self.within_many([lon], [lat], [radius_m], kinds=kinds)[0]

    def counts_near(self, lon: float, lat: float, radius_m: float) -> dict[str, int]:
        """Sites within ``radius_m`` of one point, counted per kind (the urgency's exposure).

        >>> index = SiteIndex.load_default()
        >>> sum(index.counts_near(113.55, 22.27, 0.0).values())
        0
        """
        counts: dict[str, int] = {}
        for hit in self.within(lon, lat, radius_m):
            counts[hit.site.kind] = counts.get(hit.site.kind, 0) + 1
        return counts

    def within_many(self, lon: npt.ArrayLike, lat: npt.ArrayLike, radius_m: npt.ArrayLike,
                    kinds: Collection[str] | None = None) -> list[list[SiteHit]]:
        """:meth:`within` for arrays of hazards (radius may be a scalar), in one tree
        query and one vectorised geodesic computation."""
        x = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        y = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        r = np.broadcast_to(np.asarray(radius_m, dtype=np.float64), x.shape)
        _check(x, y, r)
        if kinds is not None:
            unknown = set(kinds) - set(SITE_KINDS)
            if unknown:
                raise ValueError(f"unknown site kind(s) {sorted(unknown)}; "
                                 f"expected some of {list(SITE_KINDS)}")
        out: list[list[SiteHit]] = [[] for _ in range(x.size)]
        if not len(self.sites) or not x.size:
            return out
        dlat = np.degrees(r / _M0) * _WIDEN + 1e-12
        phi_max = np.minimum(np.abs(y) + dlat, 90.0)
        cos_max = np.cos(np.radians(phi_max))
        with np.errstate(divide="ignore"):
            dlon = np.where(cos_max > 1e-12, np.degrees(r / (_A * cos_max)) * _WIDEN + 1e-12,
                            360.0)
        boxes = shapely.box(np.maximum(x - dlon, -180.0), np.maximum(y - dlat, -90.0),
                            np.minimum(x + dlon, 180.0), np.minimum(y + dlat, 90.0))
        hz, site = self._tree.query(boxes)
        if kinds is not None and hz.size:
            keep = np.isin(self._kind[site], list(kinds))
            hz, site = hz[keep], site[keep]
        if not hz.size:
            return out
        _, _, dist = GEOD.inv(x[hz], y[hz], self._lon[site], self._lat[site])
        dist = np.asarray(dist, dtype=np.float64)
        inside = dist <= r[hz]
        hz, site, dist = hz[inside], site[inside], dist[inside]
        order = np.lexsort((self._id_rank[site], dist, hz))
        for h, s, d in zip(hz[order].tolist(), site[order].tolist(), dist[order].tolist(),
                           strict=True):
            out[h].append(SiteHit(self.sites[s], d))
        return out


def _check(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
           r: npt.NDArray[np.float64]) -> None:
    if x.shape != y.shape:
        raise LocateError(f"lon has {x.size} values but lat has {y.size}")
    with np.errstate(invalid="ignore"):
        ok = (np.abs(x) <= 180.0) & (np.abs(y) <= 90.0) & np.isfinite(r) & (r >= 0.0)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise LocateError(
            f"hazard {i}: lon={float(x[i])!r}, lat={float(y[i])!r}, "
            f"radius_m={float(r[i])!r}; coordinates must be finite WGS84 degrees and the "
            "radius a finite, non-negative number of metres")
