"""Loading boundary sets: layouts, field maps, coordinate systems, the AdminMap arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import Records

from onemap.errors import ConfigError
from onemap.geo.boundaries import AdminLevel, AdminMap, FieldMap, read_boundaries


def _frame(records: Records, crs: str | int | None = 4326) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(records, geometry="geometry", crs=crs)


def _write_per_level(records: Records, folder: Path, *, drop_level: bool = True) -> None:
    frame = _frame(records)
    for lvl in ("city", "district", "town", "village"):
        part = frame[frame["level"] == lvl]
        if drop_level:
            part = part.drop(columns="level")
        part.to_file(folder / f"{lvl}.geojson", driver="GeoJSON")


def test_per_level_files_as_folder_and_mapping(records: Records, tmp_path: Path) -> None:
    _write_per_level(records, tmp_path)
    by_folder = AdminMap.from_files(tmp_path)
    by_map = AdminMap.from_files({lvl: tmp_path / f"{lvl}.geojson"
                                  for lvl in ("city", "district", "town", "village")})
    for m in (by_folder, by_map):
        assert [len(t) for t in m] == [1, 2, 3, 6]
        assert m.village.codes[0] == "440402001001"
        assert m.village.names[0] == "甲村"


def test_one_file_with_level_column(records: Records, tmp_path: Path) -> None:
    path = tmp_path / "all.gpkg"
    _frame(records).to_file(path, driver="GPKG")
    m = AdminMap.from_files(path)
    assert [len(t) for t in m] == [1, 2, 3, 6]
    assert m.find("440403001").name == "东镇"  # type: ignore[union-attr]


def test_ancestors_are_derived_from_parent_codes(synthetic_map: AdminMap) -> None:
    m = synthetic_map
    v = m.village.index_of("440403001002")
    assert m.town.codes[m.village_town[v]] == "440403001"
    assert m.district.codes[m.village_district[v]] == "440403"
    assert m.city.codes[m.village_city[v]] == "440400"
    assert m.village.chain.shape == (6, 4)
    assert m.town.chain[m.town.index_of("440402002")].tolist() == [0, 0, 1, -1]
    assert m.village.population.tolist() == [1000] * 6


def test_admin_map_is_immutable(synthetic_map: AdminMap) -> None:
    with pytest.raises(ValueError, match="read-only"):
        synthetic_map.village.parent[0] = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        synthetic_map.source = "x"  # type: ignore[misc]


def test_units_sorted_by_code(records: Records, make_raw) -> None:  # type: ignore[no-untyped-def]
    m = AdminMap.from_raw(make_raw(list(reversed(records))))
    assert list(m.village.codes) == sorted(m.village.codes)


def test_custom_field_names(records: Records, tmp_path: Path) -> None:
    renamed = [{"ADCODE": r["code"], "MC": r["name"], "JB": r["level"],
                "SJDM": r["parent_code"], "RK": r["population"], "geometry": r["geometry"]}
               for r in records]
    path = tmp_path / "renamed.gpkg"
    _frame(renamed).to_file(path, driver="GPKG")
    fields = FieldMap(code="ADCODE", name="MC", level="JB", parent_code="SJDM",
                      population="RK", short_name=None)
    m = AdminMap.from_files(path, fields=fields)
    assert m.district.names == ("香洲区", "斗门区")
    with pytest.raises(ConfigError, match="column 'code' is missing"):
        AdminMap.from_files(path)


def test_missing_crs_is_an_error_unless_assumed(records: Records, tmp_path: Path) -> None:
    short = [{"code": r["code"], "name": r["name"], "level": r["level"],
              "parent": r["parent_code"], "geometry": r["geometry"]} for r in records]
    path = tmp_path / "nocrs.shp"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        _frame(short, crs=None).to_file(path)
    assert not path.with_suffix(".prj").exists()
    fields = FieldMap(parent_code="parent", population=None, short_name=None)
    with pytest.raises(ConfigError, match="no coordinate reference system") as err:
        read_boundaries(path, fields=fields)
    assert err.value.path == str(path)
    m = AdminMap.from_files(path, fields=fields, assume_crs="EPSG:4326")
    assert len(m.village) == 6


def test_cgcs2000_accepted_without_transformation(records: Records, tmp_path: Path) -> None:
    path = tmp_path / "cgcs.gpkg"
    _frame(records, crs=4490).to_file(path, driver="GPKG")
    m = AdminMap.from_files(path)
    assert shapely.equals_exact(m.village.geometry[0], records[6]["geometry"], 0.0)


def test_projected_crs_is_reprojected(records: Records, tmp_path: Path) -> None:
    path = tmp_path / "utm.gpkg"
    _frame(records).to_crs(32649).to_file(path, driver="GPKG")
    m = AdminMap.from_files(path)
    got = shapely.get_coordinates(m.village.geometry[0])
    want = shapely.get_coordinates(records[6]["geometry"])
    assert np.allclose(got, want, atol=1e-7)


def test_level_mismatch_and_unknown_level(records: Records, tmp_path: Path) -> None:
    _write_per_level(records, tmp_path, drop_level=False)
    with pytest.raises(ConfigError, match="has level 'village' in a file given as the town"):
        read_boundaries({"town": tmp_path / "village.geojson"})
    bad = [dict(records[0], level="province")]
    path = tmp_path / "bad.gpkg"
    _frame(bad).to_file(path, driver="GPKG")
    with pytest.raises(ConfigError, match="unknown administrative level 'province'"):
        read_boundaries(path)


def test_structural_errors_refuse_to_build(records: Records, make_raw) -> None:  # type: ignore[no-untyped-def]
    records[7]["code"] = records[6]["code"]
    with pytest.raises(ConfigError, match="duplicate-code"):
        AdminMap.from_raw(make_raw(records))


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="boundary file not found"):
        read_boundaries(tmp_path / "nope.geojson")
    with pytest.raises(ConfigError, match="no city file in the folder"):
        read_boundaries(tmp_path)


def test_load_default_zhuhai() -> None:
    m = AdminMap.load_default()
    assert len(m.city) == 1 and m.city.codes[0] == "440400"
    assert len(m.village) > 100
    assert all(c.startswith(m.town.codes[t][:9])
               for c, t in zip(m.village.codes, m.village_town, strict=True))
    assert m[AdminLevel.DISTRICT].level is AdminLevel.DISTRICT
