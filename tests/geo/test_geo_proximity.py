"""Vulnerable sites registry and proximity queries, distances in metres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Geod

from onemap.errors import ConfigError, LocateError
from onemap.geo.boundaries import AdminMap
from onemap.geo.locator import Locator
from onemap.geo.proximity import SITE_KINDS, Site, SiteIndex, default_sites_path

GEOD = Geod(ellps="WGS84")
HEADER = "site_id,name,kind,lon,lat,capacity\n"


@pytest.fixture(scope="module")
def sites() -> SiteIndex:
    return SiteIndex.load_default()


def test_registry_is_plausible_and_inside_zhuhai(sites: SiteIndex, zhuhai_map: AdminMap
                                                 ) -> None:
    assert 60 <= len(sites) <= 120
    assert {s.kind for s in sites.sites} == set(SITE_KINDS)
    city = zhuhai_map.city.geometry[0]
    lon = np.array([s.lon for s in sites.sites])
    lat = np.array([s.lat for s in sites.sites])
    assert shapely.contains_xy(city, lon, lat).all()
    located = Locator(zhuhai_map).locate(lon, lat)
    assert (located.village_idx >= 0).all()  # on land, in a village
    assert len({s.site_id for s in sites.sites}) == len(sites)


def test_distances_match_geod_and_are_sorted(sites: SiteIndex) -> None:
    lon, lat = 113.55, 22.26
    hits = sites.within(lon, lat, 5000)
    assert len(hits) >= 5
    for site, d in hits:
        _, _, ref = GEOD.inv(lon, lat, site.lon, site.lat)
        assert abs(d - ref) < 0.5
        assert d <= 5000
    assert [h.distance_m for h in hits] == sorted(h.distance_m for h in hits)
    # nothing within the radius was missed by the prefilter
    _, _, all_d = GEOD.inv(np.full(len(sites), lon), np.full(len(sites), lat),
                           [s.lon for s in sites.sites], [s.lat for s in sites.sites])
    assert len(hits) == int((np.asarray(all_d) <= 5000).sum())


def test_radius_boundary_is_inclusive(sites: SiteIndex) -> None:
    site = sites.sites[0]
    # a hazard 800 m due east-north-east of the site
    lon, lat, _ = GEOD.fwd(site.lon, site.lat, 70.0, 800.0)
    _, _, d = GEOD.inv(lon, lat, site.lon, site.lat)
    assert site in [h.site for h in sites.within(lon, lat, d)]
    assert site not in [h.site for h in sites.within(lon, lat, np.nextafter(d, 0.0))]


def test_batch_equals_single_queries(sites: SiteIndex) -> None:
    rng = np.random.default_rng(7)
    lon = rng.uniform(113.1, 113.7, 50)
    lat = rng.uniform(21.9, 22.4, 50)
    radii = rng.uniform(100, 8000, 50)
    batch = sites.within_many(lon, lat, radii)
    for i in range(50):
        assert batch[i] == sites.within(float(lon[i]), float(lat[i]), float(radii[i]))
    assert sites.within_many(lon[:3], lat[:3], 2000.0) == [
        sites.within(float(lon[i]), float(lat[i]), 2000.0) for i in range(3)]


def test_prefilter_is_wide_enough_far_north() -> None:
    # at 70N a degree of longitude is ~38 km: a degree-based box would miss these sites
    index = SiteIndex([
        Site(site_id=f"N{i}", name=f"n{i}", kind="shelter", lon=10.0 + dx, lat=70.0,
             capacity=1) for i, dx in enumerate((0.1, 0.2, 0.25))])
    hits = index.within(10.0, 70.0, 8500.0)
    _, _, ref = GEOD.inv([10.0] * 3, [70.0] * 3, [10.1, 10.2, 10.25], [70.0] * 3)
    assert [h.site.site_id for h in hits] == [f"N{i}" for i in range(3) if ref[i] <= 8500]
    assert len(hits) == 2


def test_kind_filter(sites: SiteIndex) -> None:
    hits = sites.within(113.55, 22.26, 6000, kinds={"kindergarten", "school"})
    assert hits and {h.site.kind for h in hits} <= {"kindergarten", "school"}
    with pytest.raises(ValueError, match="unknown site kind"):
        sites.within(113.55, 22.26, 100, kinds={"zoo"})


def test_bad_queries_rejected(sites: SiteIndex) -> None:
    with pytest.raises(LocateError, match="radius_m"):
        sites.within(113.5, 22.2, -1.0)
    with pytest.raises(LocateError):
        sites.within(float("nan"), 22.2, 10.0)


@pytest.mark.parametrize(("row", "line", "field", "message"), [
    ("X1,某小学,school,113.5,22.2,abc", 3, "capacity", "valid integer"),
    ("X1,某小学,zoo,113.5,22.2,10", 3, "kind", "Input should be"),
    ("X1,某小学,school,213.5,22.2,10", 3, "lon", "less than or equal to 180"),
    ("X1,某小学,school,nan,22.2,10", 3, "lon", "finite"),
    ("X1,,school,113.5,22.2,10", 3, "name", None),
    ("X1,某小学,school,113.5,22.2,10,extra", 3, None, "more cells than the header"),
    ("X0,某小学,school,113.5,22.2,10", 3, "site_id", "duplicate site_id"),
])
def test_bad_csv_rows_are_rejected_with_line_and_column(
        tmp_path: Path, row: str, line: int, field: str | None, message: str | None) -> None:
    path = tmp_path / "sites.csv"
    path.write_text(HEADER + "X0,某幼儿园,kindergarten,113.51,22.21,100\n" + row + "\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        SiteIndex.from_csv(path)
    err = info.value
    assert err.line == line and err.field == field
    assert err.path == str(path)
    if message:
        assert message in str(err)


def test_unknown_column_rejected(tmp_path: Path) -> None:
    path = tmp_path / "sites.csv"
    path.write_text("site_id,name,kind,lon,lat,capacity,beds\nX,n,school,113,22,1,5\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="Extra inputs") as info:
        SiteIndex.from_csv(path)
    assert info.value.line == 2 and info.value.field == "beds"


def test_default_path_is_the_shipped_file() -> None:
    assert default_sites_path().name == "vulnerable_sites.csv"
    assert default_sites_path().exists()
