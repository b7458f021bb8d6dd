"""Checking a boundary set, with findings precise enough to fix the data from.

Why: a wrong boundary silently puts warnings in the wrong village, so ``onemap check
boundaries`` reports every defect with the feature (level, code, name, source row), what is
wrong, how much, and where (lon/lat of a representative point).

Checks (finding ``code`` values are stable identifiers):

========================  ========  ===========================================================
code                      severity  meaning
========================  ========  ===========================================================
missing-code              error     a feature has no code
duplicate-code            error     two features share a code (at any levels)
missing-geometry          error     null or empty geometry
not-polygon               error     geometry is not a (multi)polygon
missing-parent            error     parent_code empty, unknown, or at the wrong level
code-not-nested           error     code does not start with the parent's prefix (village 9
                                    digits of its town, town 6 of its district, district 4 of
                                    its city)
unexpected-code-format    warning   code is not 6/6/9/12 digits for city/district/town/village
invalid-geometry          warning   invalid shape (``explain_validity``), repaired by make_valid
child-outside-parent      error     part of a unit lies outside its parent
overlap                   error     two units of one level overlap
gap                       warning   a parent is not covered by its children (the locator
                                    still finds such points: they get town/district/city only)
no-children               warning   a parent (not a village) has no children at all
unreadable                error     the files could not be read (check_boundaries only)
========================  ========  ===========================================================

Tolerance (:class:`Tolerance`): a discrepancy (outside part, overlap, gap) is ignored when
it is thinner than ``metres`` everywhere (it vanishes under an inward buffer of metres/2 -
digitising slivers) or when its area is at most ``area_fraction`` of the feature's area.

Speed: predicates are vectorised shapely calls; overlap candidates come from GEOS's coverage
validator (exactly-noded neighbours are accepted in one pass) and then an STRtree, so a
25,000-village set validates in seconds.
"""

from __future__ import annotations

import enum
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import shapely

from onemap.errors import ConfigError
from onemap.geo.boundaries import (
    LEVELS,
    AdminLevel,
    AdminMap,
    FieldMap,
    GeomArray,
    RawBoundaries,
    RawLevel,
    read_boundaries,
    repair_polygonal,
)

_M_PER_DEG_LAT: Final = 110_574.0
_M_PER_DEG_LON_EQ: Final = 111_320.0
_CODE_LENGTHS: Final = {AdminLevel.CITY: 6, AdminLevel.DISTRICT: 6, AdminLevel.TOWN: 9,
                        AdminLevel.VILLAGE: 12}
_PREFIX: Final = {AdminLevel.DISTRICT: 4, AdminLevel.TOWN: 6, AdminLevel.VILLAGE: 9}


class Severity(enum.StrEnum):
    """Errors block loading (non-zero exit); warnings are reported and tolerated."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One defect, about one feature (``level``/``feature_code``/``feature_name``)."""

    severity: Severity
    code: str
    message: str
    level: AdminLevel | None = None
    feature_code: str | None = None
    feature_name: str | None = None
    lon: float | None = None
    lat: float | None = None
    source: str | None = None

    def describe(self) -> str:
        """One line: severity, code, feature, message, location, source row.

        >>> Finding(Severity.ERROR, "missing-code", "feature has no code",
        ...         AdminLevel.TOWN, "", "拱北街道", source="town.geojson#3").describe()
        'error missing-code: town 拱北街道: feature has no code [town.geojson#3]'
        """
        who = ""
        if self.level is not None:
            ident = " ".join(x for x in (self.feature_code, self.feature_name) if x)
            who = f" {self.level.label} {ident}".rstrip()
        where = ""
        if self.lon is not None and self.lat is not None:
            where = f" (at {self.lon:.6f}, {self.lat:.6f})"
        src = f" [{self.source}]" if self.source else ""
        return f"{self.severity.value} {self.code}:{who}: {self.message}{where}{src}"


@dataclass(frozen=True)
class Tolerance:
    """How large a geometric discrepancy must be to count (see module docstring).

    >>> Tolerance(metres=5.0).metres
    5.0
    """

    metres: float = 1.0
    area_fraction: float = 0.0


# -- entry points -----------------------------------------------------------------------


def validate(data: AdminMap | RawBoundaries, *, tolerance: Tolerance | None = None
             ) -> list[Finding]:
    """Every finding for a boundary set, errors first, then by level and code."""
    tol = tolerance or Tolerance()
    raw = _as_raw(data) if isinstance(data, AdminMap) else data
    findings = structural_findings(raw)
    findings.extend(_nesting_findings(raw))
    findings.extend(_geometric_findings(raw, tol))
    findings.sort(key=lambda f: (f.severity is not Severity.ERROR,
                                 -1 if f.level is None else int(f.level),
                                 f.feature_code or "", f.code))
    return findings


def check_boundaries(
    path: str | os.PathLike[str],
    *,
    fields: FieldMap | None = None,
    assume_crs: str | int | None = None,
    layer: str | None = None,
    tolerance: Tolerance | None = None,
) -> tuple[list[Finding], int]:
    """What ``onemap check boundaries PATH`` runs: (findings, exit code).

    Exit 0 when there are no errors (warnings allowed), 1 when there are errors, 2 when the
    files cannot be read at all. ``path`` is a file with a level column or a folder with
    ``city``/``district``/``town``/``village`` files.
    """
    try:
        raw = read_boundaries(path, fields=fields, assume_crs=assume_crs, layer=layer)
    except ConfigError as exc:
        return [Finding(Severity.ERROR, "unreadable", str(exc),
                        source=exc.path or os.fspath(path))], 2
    findings = validate(raw, tolerance=tolerance)
    return findings, 1 if any(f.severity is Severity.ERROR for f in findings) else 0


def format_findings(findings: Sequence[Finding]) -> str:
    """Human report: one line per finding and a summary line.

    >>> print(format_findings([]))
    boundaries OK: no errors, no warnings
    """
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = len(findings) - errors
    lines = [f.describe() for f in findings]
    status = "boundaries FAILED" if errors else "boundaries OK"
    lines.append(f"{status}: {_plural(errors, 'error') if errors else 'no errors'}, "
                 f"{_plural(warnings, 'warning') if warnings else 'no warnings'}")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- structural -----------------------------------------------------------------------------


def structural_findings(raw: RawBoundaries) -> list[Finding]:
    """Checks that need no geometry maths: codes, parents, geometry presence and validity.

    The errors among them are exactly what :meth:`AdminMap.from_raw` refuses to build from.
    """
    out: list[Finding] = []
    seen: dict[str, list[tuple[AdminLevel, int]]] = defaultdict(list)
    for rl in raw.levels:
        for i, code in enumerate(rl.codes):
            if not code:
                out.append(_f(Severity.ERROR, "missing-code",
                              f"feature has no code (column empty); every {rl.level.label} "
                              "needs its administrative code", rl, i))
            else:
                seen[code].append((rl.level, i))
    for code, where in seen.items():
        if len(where) > 1:
            lvl, i = where[0]
            others = ", ".join(
                f"{lv.label} {raw[lv].names[j]!r} [{raw[lv].sources[j]}]" for lv, j in where[1:])
            out.append(_f(Severity.ERROR, "duplicate-code",
                          f"code {code} is used {len(where)} times; also by {others}. "
                          "Codes must be unique: fix or remove the duplicate", raw[lvl], i))
    for rl in raw.levels:
        out.extend(_geometry_presence(rl))
        out.extend(_parent_findings(raw, rl, seen))
        out.extend(_code_format(rl))
    return out


def _f(sev: Severity, code: str, message: str, rl: RawLevel, i: int, *,
       at: shapely.Point | None = None) -> Finding:
    lon = lat = None
    if at is not None and not at.is_empty:
        lon, lat = float(at.x), float(at.y)
    return Finding(sev, code, message, rl.level, rl.codes[i], rl.names[i], lon, lat,
                   rl.sources[i])


def _geometry_presence(rl: RawLevel) -> list[Finding]:
    out: list[Finding] = []
    g = rl.geometry
    if not len(g):
        return out
    missing = shapely.is_missing(g) | shapely.is_empty(g)
    types = shapely.get_type_id(g)
    polygonal = np.isin(types, (3, 6))  # Polygon, MultiPolygon
    for i in np.flatnonzero(missing):
        out.append(_f(Severity.ERROR, "missing-geometry",
                      "feature has no geometry (null or empty); draw its boundary", rl, int(i)))
    for i in np.flatnonzero(~missing & ~polygonal):
        out.append(_f(Severity.ERROR, "not-polygon",
                      f"geometry is a {g[i].geom_type}, but a boundary must be a Polygon or "
                      "MultiPolygon", rl, int(i), at=shapely.point_on_surface(g[i])))
    ok = ~missing & polygonal
    invalid = np.flatnonzero(ok & ~shapely.is_valid(g))
    for i in invalid:
        reason = shapely.is_valid_reason(g[i])
        out.append(_f(Severity.WARNING, "invalid-geometry",
                      f"invalid geometry ({reason}); repaired with make_valid for use - "
                      "fix the source so the repair is not a guess",
                      rl, int(i), at=_reason_point(reason) or shapely.point_on_surface(g[i])))
    return out


def _reason_point(reason: str) -> shapely.Point | None:
    """GEOS puts the defect location in brackets: 'Self-intersection[113.5 22.2]'."""
    if "[" in reason and reason.endswith("]"):
        try:
            x, y = (float(v) for v in reason[reason.index("[") + 1:-1].split()[:2])
        except ValueError:
            return None
        return shapely.Point(x, y)
    return None


def _parent_findings(raw: RawBoundaries, rl: RawLevel,
                     seen: dict[str, list[tuple[AdminLevel, int]]]) -> list[Finding]:
    out: list[Finding] = []
    parent_level = rl.level.parent
    if parent_level is None:
        return out
    parent_codes = set(raw[parent_level].codes)
    for i, pc in enumerate(rl.parent_codes):
        if not pc:
            out.append(_f(Severity.ERROR, "missing-parent",
                          f"parent_code is empty; a {rl.level.label} must name its "
                          f"{parent_level.label}", rl, i))
        elif pc not in parent_codes:
            elsewhere = [lv.label for lv, _ in seen.get(pc, [])]
            hint = (f"; {pc} is a {'/'.join(elsewhere)}, not a {parent_level.label}"
                    if elsewhere else f"; no {parent_level.label} has that code")
            out.append(_f(Severity.ERROR, "missing-parent",
                          f"parent_code {pc} does not exist at the {parent_level.label} "
                          f"level{hint}", rl, i))
    return out


def _code_format(rl: RawLevel) -> list[Finding]:
    out: list[Finding] = []
    want = _CODE_LENGTHS[rl.level]
    for i, code in enumerate(rl.codes):
        if code and (not code.isdigit() or len(code) != want):
            out.append(_f(Severity.WARNING, "unexpected-code-format",
                          f"code {code!r} is not the {want}-digit form expected for a "
                          f"{rl.level.label}; prefix nesting cannot be checked reliably",
                          rl, i))
    return out


def _nesting_findings(raw: RawBoundaries) -> list[Finding]:
    out: list[Finding] = []
    for rl in raw.levels[1:]:
        parent_level = rl.level.parent
        assert parent_level is not None
        n = _PREFIX[rl.level]
        parent_codes = set(raw[parent_level].codes)
        for i, (code, pc) in enumerate(zip(rl.codes, rl.parent_codes, strict=True)):
            if code and pc and pc in parent_codes and code[:n] != pc[:n]:
                out.append(_f(Severity.ERROR, "code-not-nested",
                              f"code {code} does not start with {pc[:n]}, the first {n} "
                              f"digits of its {parent_level.label} {pc}; either the code or "
                              "the parent_code is wrong", rl, i))
    return out


# -- geometric ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Level:
    """Usable features of one level: index into the raw level, repaired geometry."""

    raw: RawLevel
    idx: npt.NDArray[np.intp]
    geom: GeomArray
    parent: npt.NDArray[np.intp]  # position in the parent _Level, -1 if none


def _usable(raw: RawBoundaries) -> list[_Level]:
    counts: dict[str, int] = defaultdict(int)
    for rl in raw.levels:
        for c in rl.codes:
            counts[c] += 1
    out: list[_Level] = []
    prev_pos: dict[str, int] = {}
    for rl in raw.levels:
        g = rl.geometry
        ok = np.zeros(len(rl), dtype=bool)
        if len(rl):
            ok = (~shapely.is_missing(g) & ~shapely.is_empty(g)
                  & np.isin(shapely.get_type_id(g), (3, 6)))
        ok &= np.array([bool(c) and counts[c] == 1 for c in rl.codes], dtype=bool)
        idx = np.flatnonzero(ok)
        geom = repair_polygonal(g[idx]) if len(idx) else np.empty(0, dtype=object)
        parent = np.array([prev_pos.get(rl.parent_codes[i] or "", -1) for i in idx],
                          dtype=np.intp)
        shapely.prepare(geom)
        out.append(_Level(rl, idx, geom, parent))
        prev_pos = {rl.codes[i]: k for k, i in enumerate(idx)}
    return out


class _Metric:
    """Local metres for degree geometries (equirectangular at the map's mid-latitude)."""

    def __init__(self, levels: list[_Level]) -> None:
        geoms = [lv.geom for lv in levels if len(lv.geom)]
        lat = 0.0
        if geoms:
            b = shapely.total_bounds(np.concatenate(geoms))
            lat = float((b[1] + b[3]) / 2.0) if np.all(np.isfinite(b)) else 0.0
        self.kx = _M_PER_DEG_LON_EQ * float(np.cos(np.radians(lat)))
        self.ky = _M_PER_DEG_LAT

    def area_m2(self, g: GeomArray) -> npt.NDArray[np.float64]:
        return np.asarray(shapely.area(g), dtype=np.float64) * self.kx * self.ky

    def significant_parts(self, g: shapely.Geometry, ref_area_m2: float, tol: Tolerance
                          ) -> tuple[float, int, shapely.Point | None]:
        """(area m2, number of parts, location of the largest) of the parts that count."""
        parts = shapely.get_parts(g)
        parts = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
        if not len(parts):
            return 0.0, 0, None
        area = self.area_m2(parts)
        keep = area > tol.area_fraction * ref_area_m2
        if tol.metres > 0 and keep.any():
            kx, ky = self.kx, self.ky
            metric = shapely.transform(parts[keep], lambda c: c * np.array([kx, ky]))
            eroded = shapely.buffer(metric, -tol.metres / 2.0)
            keep[np.flatnonzero(keep)] = ~shapely.is_empty(eroded)
        if not keep.any():
            return 0.0, 0, None
        kept = parts[keep]
        largest = kept[int(np.argmax(area[keep]))]
        return float(area[keep].sum()), int(keep.sum()), shapely.point_on_surface(largest)


def _geometric_findings(raw: RawBoundaries, tol: Tolerance) -> list[Finding]:
    levels = _usable(raw)
    metric = _Metric(levels)
    out: list[Finding] = []
    valid_cov: list[npt.NDArray[np.bool_]] = []
    for lv in levels:
        ok_edges = np.ones(len(lv.geom), dtype=bool)
        if len(lv.geom):
            ok_edges = shapely.is_empty(shapely.coverage_invalid_edges(lv.geom))
        valid_cov.append(ok_edges)
        out.extend(_overlaps(lv, ok_edges, metric, tol))
    for k in range(1, 4):
        out.extend(_outside_parent(levels[k], levels[k - 1], metric, tol))
        out.extend(_gaps(levels[k - 1], levels[k], valid_cov[k], metric, tol))
    return out


def _name(lv: _Level, k: int) -> str:
    i = lv.idx[k]
    return f"{lv.raw.level.label} {lv.raw.codes[i]} {lv.raw.names[i]}".rstrip()


def _overlaps(lv: _Level, ok_edges: npt.NDArray[np.bool_], metric: _Metric, tol: Tolerance
              ) -> list[Finding]:
    suspects = np.flatnonzero(~ok_edges)
    if not len(suspects):
        return []
    tree = shapely.STRtree(lv.geom)
    qi, ti = tree.query(lv.geom[suspects], predicate="intersects")
    a = suspects[qi]
    b = ti
    keep = a < b
    # a pair where only one side is a suspect is still found from that side
    pairs = {(int(x), int(y)) for x, y in zip(a[keep], b[keep], strict=True)}
    pairs |= {(int(y), int(x)) for x, y in zip(a[~keep], b[~keep], strict=True) if x != y}
    if not pairs:
        return []
    pa = np.array(sorted(pairs), dtype=np.intp)
    ga, gb = lv.geom[pa[:, 0]], lv.geom[pa[:, 1]]
    interior = shapely.relate_pattern(ga, gb, "2********")
    out: list[Finding] = []
    if not interior.any():
        return out
    pa = pa[interior]
    inter = shapely.intersection(lv.geom[pa[:, 0]], lv.geom[pa[:, 1]])
    areas = metric.area_m2(lv.geom)
    for (x, y), g in zip(pa, inter, strict=True):
        ref = float(min(areas[x], areas[y]))
        area, n, where = metric.significant_parts(g, ref, tol)
        if n == 0:
            continue
        first = lv.idx[x]
        out.append(_f(
            Severity.ERROR, "overlap",
            f"overlaps {_name(lv, int(y))} by {area:,.0f} m2 "
            f"({100.0 * area / ref if ref else 100.0:.2f}% of the smaller) in {n} place(s); "
            f"points there go to the smaller code {lv.raw.codes[first]}. "
            "Fix the shared boundary", lv.raw, int(first), at=where))
    return out


def _outside_parent(child: _Level, parent: _Level, metric: _Metric, tol: Tolerance
                    ) -> list[Finding]:
    has = np.flatnonzero(child.parent >= 0)
    if not len(has):
        return []
    pg = parent.geom[child.parent[has]]
    cg = child.geom[has]
    inside = shapely.covers(pg, cg)
    bad = has[~inside]
    if not len(bad):
        return []
    diff = shapely.difference(child.geom[bad], parent.geom[child.parent[bad]])
    areas = metric.area_m2(child.geom[bad])
    out: list[Finding] = []
    for k, d, ref in zip(bad, diff, areas, strict=True):
        area, n, where = metric.significant_parts(d, float(ref), tol)
        if n == 0:
            continue
        out.append(_f(
            Severity.ERROR, "child-outside-parent",
            f"{area:,.0f} m2 ({100.0 * area / ref if ref else 100.0:.2f}% of its area, "
            f"{n} part(s)) lies outside its parent {_name(parent, int(child.parent[k]))}; "
            "fix the boundary or the parent_code",
            child.raw, int(child.idx[k]), at=where))
    return out


def _gaps(parent: _Level, child: _Level, child_cov_ok: npt.NDArray[np.bool_],
          metric: _Metric, tol: Tolerance) -> list[Finding]:
    groups: dict[int, list[int]] = defaultdict(list)
    for k, p in enumerate(child.parent):
        if p >= 0:
            groups[int(p)].append(k)
    out: list[Finding] = []
    child_label = parent.raw.level.child
    assert child_label is not None
    if not len(parent.geom):
        return out
    unions = np.empty(len(parent.geom), dtype=object)
    for p in range(len(parent.geom)):
        members = groups.get(p)
        if not members:
            out.append(_f(Severity.WARNING, "no-children",
                          f"has no {child_label.label}s; points inside it get no "
                          f"{child_label.label}", parent.raw, int(parent.idx[p]),
                          at=shapely.point_on_surface(parent.geom[p])))
            unions[p] = None
            continue
        mg = child.geom[members]
        if child_cov_ok[members].all():
            unions[p] = shapely.coverage_union_all(mg)
        else:
            unions[p] = shapely.union_all(mg)
    has = np.flatnonzero(~shapely.is_missing(unions))
    if not len(has):
        return out
    covered = shapely.covers(unions[has], parent.geom[has])
    todo = has[~covered]
    if not len(todo):
        return out
    gaps = shapely.difference(parent.geom[todo], unions[todo])
    areas = metric.area_m2(parent.geom[todo])
    for p, g, ref in zip(todo, gaps, areas, strict=True):
        area, n, where = metric.significant_parts(g, float(ref), tol)
        if n == 0:
            continue
        out.append(_f(
            Severity.WARNING, "gap",
            f"not covered by its {child_label.label}s: {n} gap(s) totalling {area:,.0f} m2 "
            f"({100.0 * area / ref if ref else 100.0:.2f}% of its area), largest gap at the "
            f"location given; points there get this {parent.raw.level.label} but no "
            f"{child_label.label}", parent.raw, int(parent.idx[p]), at=where))
    return out


def _as_raw(m: AdminMap) -> RawBoundaries:
    levels: list[RawLevel] = []
    for lvl in LEVELS:
        t = m[lvl]
        parent_codes: tuple[str | None, ...]
        if lvl is AdminLevel.CITY:
            parent_codes = (None,) * len(t)
        else:
            pt = m[AdminLevel(lvl - 1)]
            parent_codes = tuple(pt.codes[int(p)] for p in t.parent)
        levels.append(RawLevel(
            level=lvl, codes=t.codes, names=t.names, short_names=t.short_names,
            parent_codes=parent_codes, population=t.population,
            geometry=np.array(t.geometry, dtype=object),
            sources=tuple(f"{m.source}:{lvl.label}[{i}]" for i in range(len(t))),
        ))
    return RawBoundaries(levels=(levels[0], levels[1], levels[2], levels[3]), source=m.source)
