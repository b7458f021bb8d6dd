"""Each validation defect on a crafted fixture: exact finding code, feature named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import shapely
from conftest import ZHUHAI, Records

from onemap.geo.boundaries import AdminLevel, AdminMap, RawBoundaries
from onemap.geo.validate import (
    Finding,
    Severity,
    Tolerance,
    check_boundaries,
    format_findings,
    validate,
)

MakeRaw = Callable[[Records], RawBoundaries]
box = shapely.box


def _find(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def _only(findings: list[Finding], code: str, feature: str) -> Finding:
    hits = [f for f in _find(findings, code) if f.feature_code == feature]
    assert len(hits) == 1, format_findings(findings)
    f = hits[0]
    assert feature in f.describe()
    assert f.feature_name and f.feature_name in f.describe()
    return f


def _set(records: Records, which: str, /, **changes: object) -> None:
    for r in records:
        if r["code"] == which:
            r.update(changes)
            return
    raise AssertionError(which)


def test_clean_synthetic_has_only_the_planned_gap(records: Records, make_raw: MakeRaw) -> None:
    findings = validate(make_raw(records))
    assert [(f.code, f.feature_code) for f in findings] == [("gap", "440403001")]
    f = findings[0]
    assert f.severity is Severity.WARNING
    assert "1 gap(s)" in f.message
    assert f.lon is not None and f.lat is not None
    assert shapely.box(113.35, 22.05, 113.38, 22.08).covers(shapely.Point(f.lon, f.lat))
    # 0.03 x 0.03 degrees at 22 N is about 3.1 km x 3.3 km
    assert "10,3" in f.message or "10,2" in f.message


def test_duplicate_code(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402001002", code="440402001001")
    f = _only(validate(make_raw(records)), "duplicate-code", "440402001001")
    assert f.severity is Severity.ERROR and "used 2 times" in f.message and "乙村" in f.message


def test_missing_parent(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402002002", parent_code="440402009")
    f = _only(validate(make_raw(records)), "missing-parent", "440402002002")
    assert "parent_code 440402009 does not exist at the town level" in f.message


def test_parent_at_wrong_level(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402002002", parent_code="440402")
    f = _only(validate(make_raw(records)), "missing-parent", "440402002002")
    assert "440402 is a district, not a town" in f.message


def test_codes_not_nested(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402001002", code="440403001009")
    f = _only(validate(make_raw(records)), "code-not-nested", "440403001009")
    assert "does not start with 440402001" in f.message


def test_child_outside_parent(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402001002", geometry=box(113.1, 21.99, 113.2, 22.1))
    findings = validate(make_raw(records))
    f = _only(findings, "child-outside-parent", "440402001002")
    assert "outside its parent town 440402001" in f.message
    assert f.lat is not None and f.lat < 22.0


def test_sibling_overlap(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402001001", geometry=box(113.0, 22.0, 113.12, 22.1))
    findings = validate(make_raw(records))
    f = _only(findings, "overlap", "440402001001")
    assert "overlaps village 440402001002 乙村" in f.message
    assert f.lon is not None and 113.1 < f.lon < 113.12


def test_gap_reported_with_area_and_location(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402002002", geometry=box(113.1, 22.1, 113.19, 22.2))
    findings = validate(make_raw(records))
    f = _only(findings, "gap", "440402002")
    assert f.lon is not None and 113.19 < f.lon < 113.2
    # the district is covered by its towns, so no gap at district level
    assert not [g for g in _find(findings, "gap") if g.level is AdminLevel.DISTRICT]


def test_invalid_geometry_is_repaired_with_a_warning(records: Records, make_raw: MakeRaw
                                                     ) -> None:
    bow = shapely.from_wkt("POLYGON ((113.1 22.0, 113.2 22.1, 113.2 22.0, 113.1 22.1, "
                           "113.1 22.0))")
    _set(records, "440402001002", geometry=bow)
    raw = make_raw(records)
    f = _only(validate(raw), "invalid-geometry", "440402001002")
    assert f.severity is Severity.WARNING
    assert "Self-intersection" in f.message and "make_valid" in f.message
    assert f.lon is not None and abs(f.lon - 113.15) < 1e-9
    m = AdminMap.from_raw(raw)
    assert shapely.is_valid(m.village.geometry[m.village.index_of("440402001002")])


def test_missing_geometry_and_code(records: Records, make_raw: MakeRaw) -> None:
    _set(records, "440402001002", geometry=None)
    _set(records, "440402002002", code="")
    findings = validate(make_raw(records))
    _only(findings, "missing-geometry", "440402001002")
    assert len(_find(findings, "missing-code")) == 1
    assert _find(findings, "missing-code")[0].feature_name == "丁村"


def test_tolerance_ignores_slivers(records: Records, make_raw: MakeRaw) -> None:
    # 0.00000005 deg is about 5 mm of overlap
    _set(records, "440402001001", geometry=box(113.0, 22.0, 113.10000005, 22.1))
    assert not _find(validate(make_raw(records)), "overlap")
    strict = validate(make_raw(records), tolerance=Tolerance(metres=0.0))
    _only(strict, "overlap", "440402001001")
    lenient = validate(make_raw(records),
                       tolerance=Tolerance(metres=0.0, area_fraction=0.01))
    assert not _find(lenient, "overlap")


def test_validate_accepts_an_admin_map(synthetic_map: AdminMap) -> None:
    assert [f.code for f in validate(synthetic_map)] == ["gap"]


def test_check_boundaries_exit_codes(records: Records, tmp_path: Path) -> None:
    good = tmp_path / "good.gpkg"
    gpd.GeoDataFrame(records, crs=4326).to_file(good, driver="GPKG")
    findings, code = check_boundaries(good)
    assert code == 0 and [f.code for f in findings] == ["gap"]
    assert format_findings(findings).endswith("boundaries OK: no errors, 1 warning")

    _set(records, "440402001002", code="440402001001")
    bad = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame(records, crs=4326).to_file(bad, driver="GPKG")
    findings, code = check_boundaries(bad)
    assert code == 1
    report = format_findings(findings)
    assert report.splitlines()[0].startswith("error duplicate-code: village 440402001001")
    assert "boundaries FAILED: 1 error" in report

    findings, code = check_boundaries(tmp_path / "missing.geojson")
    assert code == 2 and findings[0].code == "unreadable"


def test_zhuhai_fixture_has_no_errors() -> None:
    if not (ZHUHAI / "village.geojson").exists():
        return
    findings, code = check_boundaries(ZHUHAI)
    assert code == 0, format_findings(findings)
