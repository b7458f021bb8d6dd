"""Loading a four-level administrative boundary set into an immutable :class:`AdminMap`.

Why: every record the pipeline sees is placed on city / district / town / village, so the
boundaries are loaded once, checked, reprojected to WGS84 and frozen into parallel arrays
that the locator and the rollups index by integer position.

Two steps, so that ``onemap check boundaries`` can report every defect instead of stopping at
the first: :func:`read_boundaries` reads files into a :class:`RawBoundaries` (anything goes,
only unreadable files, missing columns and coordinate-system problems raise), and
:meth:`AdminMap.from_raw` builds the runtime object, raising :class:`ConfigError` on
structural defects it cannot work around (duplicate or missing codes, broken parent chains,
missing geometry). Invalid geometry is repaired with ``make_valid`` (validation reports it).

Layouts accepted by :func:`read_boundaries` / :meth:`AdminMap.from_files`:

* one file whose features carry a level column (``FieldMap.level``);
* a mapping ``{"city": path, "district": path, ...}`` of one file per level (a level column,
  if present, must agree with the key);
* a directory holding ``city.*``, ``district.*``, ``town.*``, ``village.*``
  (GeoJSON, Shapefile or GeoPackage);
* a list of files that each carry a level column.

Coordinate systems: everything is converted to WGS84 (EPSG:4326). CGCS2000 (EPSG:4490) is
accepted as WGS84 without transformation (the frames differ by centimetres). A file without a
CRS is an error unless ``assume_crs`` says what it is; the CRS is never guessed.

Within each level, units are sorted by code, so "smallest index" means "smallest code".
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS

from onemap.errors import ConfigError

if TYPE_CHECKING:
    import geopandas as gpd

IntArray = npt.NDArray[np.int64]
GeomArray = npt.NDArray[np.object_]
PathLike = str | os.PathLike[str]

_WGS84: Final = CRS.from_epsg(4326)
_CGCS2000: Final = CRS.from_epsg(4490)
_SUFFIXES: Final = (".geojson", ".json", ".shp", ".gpkg")


class AdminLevel(enum.IntEnum):
    """The four administrative levels, coarse to fine (the value is the depth).

    >>> AdminLevel.parse("镇街") is AdminLevel.TOWN, AdminLevel.VILLAGE.parent
    (True, <AdminLevel.TOWN: 2>)
    """

    CITY = 0
    DISTRICT = 1
    TOWN = 2
    VILLAGE = 3

    @property
    def label(self) -> str:
        """The English lower-case name used in files and APIs."""
        return self.name.lower()

    @property
    def chinese(self) -> str:
        return ("市", "区", "镇街", "村居")[self.value]

    @property
    def parent(self) -> AdminLevel | None:
        return None if self is AdminLevel.CITY else AdminLevel(self.value - 1)

    @property
    def child(self) -> AdminLevel | None:
        return None if self is AdminLevel.VILLAGE else AdminLevel(self.value + 1)

    @classmethod
    def parse(cls, value: object) -> AdminLevel:
        """Accept the level spellings found in real boundary files."""
        if isinstance(value, AdminLevel):
            return value
        key = str(value).strip().lower()
        try:
            return _LEVEL_ALIASES[key]
        except KeyError:
            raise ValueError(
                f"unknown administrative level {value!r}; expected one of "
                "city, district, town, village"
            ) from None


_LEVEL_ALIASES: Final[dict[str, AdminLevel]] = {
    "city": AdminLevel.CITY, "市": AdminLevel.CITY, "prefecture": AdminLevel.CITY,
    "district": AdminLevel.DISTRICT, "county": AdminLevel.DISTRICT, "区": AdminLevel.DISTRICT,
    "县": AdminLevel.DISTRICT, "区县": AdminLevel.DISTRICT,
    "town": AdminLevel.TOWN, "township": AdminLevel.TOWN, "street": AdminLevel.TOWN,
    "镇": AdminLevel.TOWN, "街道": AdminLevel.TOWN, "镇街": AdminLevel.TOWN,
    "乡镇": AdminLevel.TOWN,
    "village": AdminLevel.VILLAGE, "community": AdminLevel.VILLAGE, "村": AdminLevel.VILLAGE,
    "社区": AdminLevel.VILLAGE, "村居": AdminLevel.VILLAGE,
}
LEVELS: Final = tuple(AdminLevel)


@dataclass(frozen=True)
class FieldMap:
    """Which attribute columns hold what; ``None`` for an optional column that is absent.

    >>> FieldMap(code="ADCODE", name="NAME").code
    'ADCODE'
    """

    code: str = "code"
    name: str = "name"
    level: str = "level"
    parent_code: str = "parent_code"
    population: str | None = "population"
    short_name: str | None = "short_name"


@dataclass(frozen=True, eq=False)
class RawLevel:
    """One level as read, before any checking; ``sources`` say where each feature came from."""

    level: AdminLevel
    codes: tuple[str, ...]
    names: tuple[str, ...]
    short_names: tuple[str, ...]
    parent_codes: tuple[str | None, ...]
    population: IntArray  # -1 where unknown
    geometry: GeomArray  # shapely geometries or None, possibly invalid
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True, eq=False)
class RawBoundaries:
    """The four levels as read from files (WGS84), input to validation and to AdminMap."""

    levels: tuple[RawLevel, RawLevel, RawLevel, RawLevel]
    source: str

    def __getitem__(self, level: AdminLevel) -> RawLevel:
        return self.levels[level]


@dataclass(frozen=True)
class AdminUnit:
    """One administrative unit, as returned by look-ups."""

    level: AdminLevel
    index: int
    code: str
    name: str


@dataclass(frozen=True, eq=False)
class LevelTable:
    """Parallel, read-only arrays for one level, sorted by code.

    ``chain[i]`` holds the indices of unit ``i`` and its ancestors at every level
    (columns city, district, town, village; -1 below the unit's own level), which is how the
    locator derives all four levels from a single village hit.
    """

    level: AdminLevel
    codes: tuple[str, ...]
    names: tuple[str, ...]
    short_names: tuple[str, ...]
    parent: IntArray
    population: IntArray
    geometry: GeomArray
    chain: IntArray
    code_array: npt.NDArray[np.str_]  # codes plus a trailing "" so index -1 gives ""
    name_array: npt.NDArray[np.str_]  # names plus a trailing ""

    def __len__(self) -> int:
        return len(self.codes)

    def index_of(self, code: str) -> int:
        """Position of ``code`` in this level, or -1."""
        pos = int(np.searchsorted(self.code_array[:-1], code))
        if pos < len(self.codes) and self.codes[pos] == code:
            return pos
        return -1


@dataclass(frozen=True, eq=False)
class AdminMap:
    """The immutable four-level map: one :class:`LevelTable` per level, WGS84 geometry.

    >>> m = AdminMap.load_default()
    >>> m.find("440402").name, m.city.codes
    ('香洲区', ('440400',))
    """

    levels: tuple[LevelTable, LevelTable, LevelTable, LevelTable]
    source: str

    def __getitem__(self, level: AdminLevel) -> LevelTable:
        return self.levels[level]

    def __iter__(self) -> Iterator[LevelTable]:
        return iter(self.levels)

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(t)} {t.level.label}" for t in self.levels)
        return f"AdminMap({counts}; {self.source})"

    @property
    def city(self) -> LevelTable:
        return self.levels[AdminLevel.CITY]

    @property
    def district(self) -> LevelTable:
        return self.levels[AdminLevel.DISTRICT]

    @property
    def town(self) -> LevelTable:
        return self.levels[AdminLevel.TOWN]

    @property
    def village(self) -> LevelTable:
        return self.levels[AdminLevel.VILLAGE]

    @property
    def village_town(self) -> IntArray:
        """Town index of each village."""
        return self.village.chain[:, AdminLevel.TOWN]

    @property
    def village_district(self) -> IntArray:
        """District index of each village."""
        return self.village.chain[:, AdminLevel.DISTRICT]

    @property
    def village_city(self) -> IntArray:
        """City index of each village."""
        return self.village.chain[:, AdminLevel.CITY]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) over every level's geometry."""
        b = np.array([shapely.total_bounds(t.geometry) for t in self.levels if len(t)])
        return (float(np.nanmin(b[:, 0])), float(np.nanmin(b[:, 1])),
                float(np.nanmax(b[:, 2])), float(np.nanmax(b[:, 3])))

    def unit(self, level: AdminLevel, index: int) -> AdminUnit | None:
        """The unit at ``index`` of ``level``; ``None`` for -1."""
        if index < 0:
            return None
        table = self.levels[level]
        return AdminUnit(level, index, table.codes[index], table.names[index])

    def find(self, code: str) -> AdminUnit | None:
        """Look a unit up by code at any level."""
        for table in self.levels:
            i = table.index_of(code)
            if i >= 0:
                return AdminUnit(table.level, i, code, table.names[i])
        return None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_raw(cls, raw: RawBoundaries) -> AdminMap:
        """Build from :func:`read_boundaries` output; ConfigError on structural defects."""
        from onemap.geo.validate import Severity, structural_findings

        errors = [f for f in structural_findings(raw) if f.severity is Severity.ERROR]
        if errors:
            shown = "\n  ".join(f.describe() for f in errors[:20])
            more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise ConfigError(
                f"{len(errors)} structural error(s) in the boundary set; run "
                f"`onemap check boundaries` for the full report:\n  {shown}{more}",
                path=raw.source,
            )
        tables: list[LevelTable] = []
        parent_lookup: dict[str, int] = {}
        parent_chain: IntArray | None = None
        for level in LEVELS:
            rl = raw[level]
            order = sorted(range(len(rl)), key=lambda i: rl.codes[i])
            codes = tuple(rl.codes[i] for i in order)
            geometry = repair_polygonal(rl.geometry[np.asarray(order, dtype=np.intp)])
            if level is AdminLevel.CITY:
                parent = np.full(len(order), -1, dtype=np.int64)
            else:
                parent = np.array([parent_lookup[str(rl.parent_codes[i])] for i in order],
                                  dtype=np.int64)
            chain = np.full((len(order), 4), -1, dtype=np.int64)
            if parent_chain is not None and order:
                chain[:] = parent_chain[parent]
            chain[:, level] = np.arange(len(order))
            shapely.prepare(geometry)
            table = LevelTable(
                level=level,
                codes=codes,
                names=tuple(rl.names[i] for i in order),
                short_names=tuple(rl.short_names[i] for i in order),
                parent=_frozen(parent),
                population=_frozen(rl.population[np.asarray(order, dtype=np.intp)]),
                geometry=_frozen(geometry),
                chain=_frozen(chain),
                code_array=_frozen(np.array([*codes, ""], dtype=np.str_)),
                name_array=_frozen(np.array([*(rl.names[i] for i in order), ""],
                                            dtype=np.str_)),
            )
            tables.append(table)
            parent_lookup = {c: i for i, c in enumerate(codes)}
            parent_chain = table.chain
        return cls(levels=(tables[0], tables[1], tables[2], tables[3]), source=raw.source)

    @classmethod
    def from_files(
        cls,
        source: PathLike | Sequence[PathLike] | Mapping[str | AdminLevel, PathLike],
        *,
        fields: FieldMap | None = None,
        assume_crs: str | int | None = None,
        layer: str | None = None,
    ) -> AdminMap:
        """Read and build in one step (see :func:`read_boundaries` for the layouts)."""
        return cls.from_raw(read_boundaries(source, fields=fields, assume_crs=assume_crs,
                                            layer=layer))

    @classmethod
    def load_default(cls) -> AdminMap:
        """The bundled Zhuhai four-level map (package data ``onemap.fixtures/zhuhai``)."""
        root = resources.files("onemap.fixtures").joinpath("zhuhai")
        with resources.as_file(root) as folder:
            return cls.from_files(Path(folder))


def _frozen(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def repair_polygonal(geoms: GeomArray) -> GeomArray:
    """``make_valid`` invalid polygons and keep only their polygonal parts.

    >>> bow = shapely.from_wkt("POLYGON ((0 0, 2 2, 2 0, 0 2, 0 0))")
    >>> repair_polygonal(np.array([bow], dtype=object))[0].geom_type
    'MultiPolygon'
    """
    out = np.array(geoms, dtype=object, copy=True)
    present = ~shapely.is_missing(out)
    bad = np.flatnonzero(present & ~shapely.is_valid(out))
    for i in bad:
        fixed = shapely.make_valid(out[i])
        parts = [p for p in shapely.get_parts(fixed)
                 if p.geom_type in ("Polygon", "MultiPolygon")]
        out[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return out


# -- reading ------------------------------------------------------------------------------


def read_boundaries(
    source: PathLike | Sequence[PathLike] | Mapping[str | AdminLevel, PathLike],
    *,
    fields: FieldMap | None = None,
    assume_crs: str | int | None = None,
    layer: str | None = None,
) -> RawBoundaries:
    """Read boundary files into :class:`RawBoundaries` in WGS84, without judging content.

    Raises :class:`ConfigError` only for what prevents reading: a missing file or column,
    an unknown level value, a file without a CRS (unless ``assume_crs``).
    """
    fm = fields or FieldMap()
    parts: list[tuple[gpd.GeoDataFrame, str, AdminLevel | None]] = []
    if isinstance(source, Mapping):
        for key, path in source.items():
            try:
                lvl = AdminLevel.parse(key)
            except ValueError as exc:
                raise ConfigError(str(exc), field="level") from None
            parts.append((_read_one(path, layer, assume_crs), os.fspath(path), lvl))
        label = ", ".join(os.fspath(p) for p in source.values())
    elif isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if folder.is_dir():
            for found_level, p in _level_files(folder).items():
                parts.append((_read_one(p, layer, assume_crs), os.fspath(p), found_level))
        else:
            parts.append((_read_one(folder, layer, assume_crs), os.fspath(folder), None))
        label = os.fspath(folder)
    else:
        for item in source:
            parts.append((_read_one(item, layer, assume_crs), os.fspath(item), None))
        label = ", ".join(os.fspath(p) for p in source)

    per_level: dict[AdminLevel, list[dict[str, Any]]] = {lvl: [] for lvl in LEVELS}
    for frame, where, file_level in parts:
        for row in _rows(frame, where, fm, file_level):
            per_level[row["level"]].append(row)
    levels = tuple(_raw_level(lvl, per_level[lvl]) for lvl in LEVELS)
    return RawBoundaries(levels=(levels[0], levels[1], levels[2], levels[3]), source=label)


def _level_files(folder: Path) -> dict[AdminLevel, Path]:
    found: dict[AdminLevel, Path] = {}
    for lvl in LEVELS:
        for suffix in _SUFFIXES:
            p = folder / f"{lvl.label}{suffix}"
            if p.exists():
                found[lvl] = p
                break
        else:
            raise ConfigError(
                f"no {lvl.label} file in the folder; expected {lvl.label}.geojson, "
                f"{lvl.label}.shp or {lvl.label}.gpkg",
                path=os.fspath(folder),
            )
    return found


def _read_one(path: PathLike, layer: str | None, assume_crs: str | int | None
              ) -> gpd.GeoDataFrame:
    import geopandas as gpd

    p = os.fspath(path)
    if not Path(p).exists():
        raise ConfigError("boundary file not found", path=p)
    try:
        frame = gpd.read_file(p, layer=layer, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several types for unreadable data
        raise ConfigError(f"cannot read boundary file: {exc}", path=p) from None
    return _normalise_crs(frame, p, assume_crs)


def _normalise_crs(frame: gpd.GeoDataFrame, path: str, assume_crs: str | int | None
                   ) -> gpd.GeoDataFrame:
    """WGS84 out; CGCS2000 relabelled; missing CRS only with an explicit assumption."""
    crs = frame.crs
    if crs is None:
        if assume_crs is None:
            raise ConfigError(
                "the file declares no coordinate reference system (e.g. a shapefile without "
                ".prj); give the real one with assume_crs / --assume-crs (for example "
                "EPSG:4326 or EPSG:4490) - it is never guessed",
                path=path, field="crs",
            )
        try:
            crs = CRS.from_user_input(assume_crs)
        except Exception:
            raise ConfigError(f"assume_crs {assume_crs!r} is not a valid CRS",
                              path=path, field="crs") from None
        frame = frame.set_crs(crs)
    crs = CRS.from_user_input(crs)
    if crs.equals(_WGS84, ignore_axis_order=True) or crs.equals(
            _CGCS2000, ignore_axis_order=True):
        return frame.set_crs(_WGS84, allow_override=True)
    try:
        return frame.to_crs(_WGS84)
    except Exception as exc:
        raise ConfigError(f"cannot reproject from {crs.to_string()} to WGS84: {exc}",
                          path=path, field="crs") from None


def _text(value: object) -> str:
    """Codes may arrive as ints or floats (440400.0); normalise to text, '' when missing."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, (np.integer, np.floating)):
        return _text(value.item())
    return str(value).strip()


def _population(value: object) -> int:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1
    if math.isnan(f) or math.isinf(f):
        return -1
    return int(f)


def _rows(frame: gpd.GeoDataFrame, path: str, fm: FieldMap, lvl: AdminLevel | None
          ) -> Iterator[dict[str, Any]]:
    columns = set(frame.columns)
    required = [fm.code, fm.name, fm.parent_code]
    if lvl is None:
        required.append(fm.level)
    for col in required:
        if col not in columns:
            raise ConfigError(
                f"column {col!r} is missing; the file has "
                f"{sorted(c for c in columns if c != 'geometry')} (map names with FieldMap)",
                path=path, field=col,
            )
    has_level = fm.level in columns
    has_pop = fm.population is not None and fm.population in columns
    has_short = fm.short_name is not None and fm.short_name in columns
    geoms = frame.geometry.to_numpy()
    records = frame.drop(columns=frame.geometry.name).to_dict("records")
    for i, rec in enumerate(records):
        where = f"{path}#{i}"
        row_level = lvl
        if has_level and _text(rec[fm.level]):
            try:
                parsed = AdminLevel.parse(_text(rec[fm.level]))
            except ValueError as exc:
                raise ConfigError(f"feature {i}: {exc}", path=path, field=fm.level) from None
            if lvl is not None and parsed is not lvl:
                raise ConfigError(
                    f"feature {i} (code {_text(rec[fm.code])!r}) has level "
                    f"{parsed.label!r} in a file given as the {lvl.label} file",
                    path=path, field=fm.level,
                )
            row_level = parsed
        if row_level is None:
            raise ConfigError(f"feature {i} (code {_text(rec[fm.code])!r}) has no level",
                              path=path, field=fm.level)
        parent = _text(rec[fm.parent_code])
        yield {
            "level": row_level,
            "code": _text(rec[fm.code]),
            "name": _text(rec[fm.name]),
            "short_name": _text(rec[fm.short_name]) if has_short else "",
            "parent_code": parent or None,
            "population": _population(rec[fm.population]) if has_pop else -1,
            "geometry": geoms[i],
            "source": where,
        }


def _raw_level(level: AdminLevel, rows: list[dict[str, Any]]) -> RawLevel:
    geometry = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        geometry[i] = r["geometry"]
    return RawLevel(
        level=level,
        codes=tuple(r["code"] for r in rows),
        names=tuple(r["name"] for r in rows),
        short_names=tuple(r["short_name"] for r in rows),
        parent_codes=tuple(r["parent_code"] for r in rows),
        population=np.array([r["population"] for r in rows], dtype=np.int64),
        geometry=geometry,
        sources=tuple(r["source"] for r in rows),
    )


def raw_from_records(
    records: Sequence[Mapping[str, Any]], *, source: str = "<memory>",
) -> RawBoundaries:
    """Build :class:`RawBoundaries` from dicts (keys as in :class:`FieldMap` defaults, plus
    ``geometry`` as a shapely geometry in WGS84). Handy for tests and generated data."""
    per_level: dict[AdminLevel, list[dict[str, Any]]] = {lvl: [] for lvl in LEVELS}
    for i, rec in enumerate(records):
        lvl = AdminLevel.parse(rec["level"])
        per_level[lvl].append({
            "level": lvl,
            "code": _text(rec.get("code")),
            "name": _text(rec.get("name")),
            "short_name": _text(rec.get("short_name")),
            "parent_code": _text(rec.get("parent_code")) or None,
            "population": _population(rec.get("population")),
            "geometry": rec.get("geometry"),
            "source": f"{source}#{i}",
        })
    levels = tuple(_raw_level(lvl, per_level[lvl]) for lvl in LEVELS)
    return RawBoundaries(levels=(levels[0], levels[1], levels[2], levels[3]), source=source)
