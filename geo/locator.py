"""Vectorised point-in-polygon locator: lon/lat arrays -> village, town, district, city.

Why it looks like this: the pipeline locates every record, so the common case must cost a
few array operations, and the exact polygon test must only run where a boundary is near.

Index (built once, in :class:`Locator`):

* A two-level uniform grid over the map bounds. Fine cells are about 1/32 of the median
  village width; 8x8 fine cells form a coarse cell. Every polygon ring of every level is
  rasterised conservatively onto the fine grid; a fine cell that no boundary touches lies
  in the interior of one set of polygons, so its answer is computed once at build time and
  stored. Only coarse cells that some boundary touches get a fine block, which keeps memory
  proportional to boundary length, not area.
* Points in a cell that a boundary touches ("mixed") are resolved exactly: an STRtree of
  each level gives bounding-box candidates, ``shapely.intersects_xy`` on prepared polygons
  decides.

Rules (the same on the grid and on the exact path; they are pinned by tests):

* Polygons are closed: a point on a unit's boundary is inside it.
* A point inside several units of a level - on a shared edge or vertex, or in an overlap -
  goes to the one with the **smallest code**.
* The village is found first and the town, district and city are the village's ancestors
  (from parent codes), never separate look-ups. A point in no village (a gap between
  villages, or an island not split into villages) falls back to the smallest-code town that
  contains it, then district, then city, so it still gets its coarser levels
  (``village_idx == -1``).
* A point in no polygon at all (at sea, outside the city) is **out of area**:
  ``in_area`` False and every index -1. It is never dropped and never snapped.
* NaN, infinite, |lon| > 180 or |lat| > 90 raise :class:`LocateError` naming the first
  offending indices and values; nothing is located from a batch that contains one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import shapely

from onemap.errors import LocateError
from onemap.geo.boundaries import AdminLevel, AdminMap, AdminUnit
from onemap.geo.crs import Crs, to_wgs84

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
_CentreFn = Callable[[npt.NDArray[np.intp], npt.NDArray[np.intp]], tuple[F64, F64]]

_M_PER_DEG_LAT: Final = 110_574.0
_M_PER_DEG_LON_EQ: Final = 111_320.0
_EPS: Final = 1e-6  # fine-cell units of safety margin when rasterising boundaries
_MIXED: Final = -2
_OUT: Final = -1
_SHOW_BAD: Final = 5


@dataclass(frozen=True, eq=False)
class Placement:
    """Where one point is: a unit per level (``None`` when there is none)."""

    lon: float
    lat: float
    in_area: bool
    city: AdminUnit | None
    district: AdminUnit | None
    town: AdminUnit | None
    village: AdminUnit | None

    def unit(self, level: AdminLevel) -> AdminUnit | None:
        return (self.city, self.district, self.town, self.village)[level]

    @property
    def codes(self) -> tuple[str | None, str | None, str | None, str | None]:
        """(city, district, town, village) codes."""
        return tuple(u.code if u else None for u in (  # type: ignore[return-value]
            self.city, self.district, self.town, self.village))

    @property
    def finest(self) -> AdminUnit | None:
        """The most precise unit found (village, else town, ...)."""
        return self.village or self.town or self.district or self.city


@dataclass(frozen=True, eq=False)
class Located:
    """Result of :meth:`Locator.locate`: per point, the index at each level (-1 = none).

    ``chain[:, level]`` is the index into ``admin_map[level]``; the named properties are
    views of it. Codes and names come out as numpy string arrays ('' where none).
    """

    admin_map: AdminMap
    lon: F64
    lat: F64
    chain: I32  # shape (n, 4): city, district, town, village

    def __len__(self) -> int:
        return int(self.chain.shape[0])

    @property
    def city_idx(self) -> I32:
        return self.chain[:, AdminLevel.CITY]

    @property
    def district_idx(self) -> I32:
        return self.chain[:, AdminLevel.DISTRICT]

    @property
    def town_idx(self) -> I32:
        return self.chain[:, AdminLevel.TOWN]

    @property
    def village_idx(self) -> I32:
        return self.chain[:, AdminLevel.VILLAGE]

    @property
    def in_area(self) -> npt.NDArray[np.bool_]:
        """False for points outside every polygon (out of area, all indices -1)."""
        return self.chain[:, AdminLevel.CITY] >= 0

    def index(self, level: AdminLevel) -> I32:
        return self.chain[:, level]

    def code(self, level: AdminLevel) -> npt.NDArray[np.str_]:
        """Codes at ``level`` for every point ('' where none)."""
        codes: npt.NDArray[np.str_] = self.admin_map[level].code_array[self.chain[:, level]]
        return codes

    def name(self, level: AdminLevel) -> npt.NDArray[np.str_]:
        """Names at ``level`` for every point ('' where none)."""
        names: npt.NDArray[np.str_] = self.admin_map[level].name_array[self.chain[:, level]]
        return names

    @property
    def village_code(self) -> npt.NDArray[np.str_]:
        return self.code(AdminLevel.VILLAGE)

    @property
    def town_code(self) -> npt.NDArray[np.str_]:
        return self.code(AdminLevel.TOWN)

    @property
    def district_code(self) -> npt.NDArray[np.str_]:
        return self.code(AdminLevel.DISTRICT)

    @property
    def city_code(self) -> npt.NDArray[np.str_]:
        return self.code(AdminLevel.CITY)

    def codes(self, i: int) -> tuple[str | None, str | None, str | None, str | None]:
        """(city, district, town, village) codes of point ``i``."""
        return self.placement(i).codes

    def placement(self, i: int) -> Placement:
        """Point ``i`` as a :class:`Placement` with codes and names."""
        row = self.chain[i]
        m = self.admin_map
        return Placement(
            lon=float(self.lon[i]), lat=float(self.lat[i]), in_area=bool(row[0] >= 0),
            city=m.unit(AdminLevel.CITY, int(row[0])),
            district=m.unit(AdminLevel.DISTRICT, int(row[1])),
            town=m.unit(AdminLevel.TOWN, int(row[2])),
            village=m.unit(AdminLevel.VILLAGE, int(row[3])),
        )


class Locator:
    """Build once per :class:`AdminMap`, then :meth:`locate` arrays of points.

    ``cell_metres`` overrides the fine-cell size (default: median village width / 32, made
    coarser when the boundaries would cross more than about ``max_mixed_cells`` fine cells,
    which bounds build time and memory on very large maps, and when the coarse grid would
    exceed ``max_coarse_cells``). ``block`` fine cells per side form a coarse cell.

    >>> from onemap.geo.boundaries import raw_from_records
    >>> box = shapely.box
    >>> m = AdminMap.from_raw(raw_from_records([
    ...   dict(level="city", code="440400", name="C", geometry=box(0, 0, 2, 1)),
    ...   dict(level="district", code="440402", name="D", parent_code="440400",
    ...        geometry=box(0, 0, 2, 1)),
    ...   dict(level="town", code="440402001", name="T", parent_code="440402",
    ...        geometry=box(0, 0, 2, 1)),
    ...   dict(level="village", code="440402001001", name="V1", parent_code="440402001",
    ...        geometry=box(0, 0, 1, 1)),
    ...   dict(level="village", code="440402001002", name="V2", parent_code="440402001",
    ...        geometry=box(1, 0, 2, 1))]))
    >>> loc = Locator(m)
    >>> loc.locate([0.5, 1.0, 5.0], [0.5, 0.5, 5.0]).village_code.tolist()
    ['440402001001', '440402001001', '']
    >>> loc.locate_one(1.5, 0.5).codes
    ('440400', '440402', '440402001', '440402001002')
    """

    def __init__(
        self,
        admin_map: AdminMap,
        *,
        cell_metres: float | None = None,
        block: int = 8,
        max_coarse_cells: int = 4_000_000,
        max_mixed_cells: int = 600_000,
    ) -> None:
        if block < 1 or block & (block - 1):
            raise ValueError(f"block must be a power of two, got {block}")
        self.admin_map = admin_map
        m = admin_map
        order = (AdminLevel.VILLAGE, AdminLevel.TOWN, AdminLevel.DISTRICT, AdminLevel.CITY)
        # Unified "row" space: villages, towns, districts, cities, each sorted by code, so
        # the smallest row among the polygons containing a point is the rule's answer.
        self._offsets = np.cumsum([0] + [len(m[lv]) for lv in order])
        self._geoms = np.concatenate([np.asarray(m[lv].geometry) for lv in order])
        self._trees = [shapely.STRtree(m[lv].geometry) for lv in order]
        chains = [m[lv].chain for lv in order]
        rows = np.concatenate([*chains, np.full((1, 4), -1)]).astype(np.int32)
        self._rows: I32 = rows  # row -1 (the last) is "out of area"
        self._rows_list: list[tuple[int, int, int, int]] = [
            (int(a), int(b), int(c), int(d)) for a, b, c, d in rows.tolist()]
        self._units = tuple(
            tuple(AdminUnit(t.level, i, t.codes[i], t.names[i]) for i in range(len(t)))
            for t in m.levels)
        self._candidates: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        self._max_mixed = max_mixed_cells
        self._build_grid(cell_metres, block, max_coarse_cells)

    # -- public -----------------------------------------------------------------------

    def locate(self, lon: npt.ArrayLike, lat: npt.ArrayLike, crs: Crs | str = Crs.WGS84
               ) -> Located:
        """Locate points given as equal-length arrays (or scalars) in ``crs``."""
        x = np.ascontiguousarray(lon, dtype=np.float64).reshape(-1)
        y = np.ascontiguousarray(lat, dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise LocateError(f"lon has {x.size} values but lat has {y.size}")
        _check(x, y)
        if crs != Crs.WGS84:
            x, y = to_wgs84(x, y, crs)
        return Located(self.admin_map, x, y, self._rows[self._locate_rows(x, y)])

    def locate_one(self, lon: float, lat: float, crs: Crs | str = Crs.WGS84) -> Placement:
        """One point, same index and rules as :meth:`locate` (tests pin them equal).

        Uses scalar arithmetic for the grid step: a numpy call per step costs more than the
        whole look-up for one point.
        """
        x, y = float(lon), float(lat)
        if not (abs(x) <= 180.0 and abs(y) <= 90.0):  # also False for NaN
            _check(np.array([x]), np.array([y]))
        if crs != Crs.WGS84:
            cx, cy = to_wgs84(x, y, crs)
            x, y = float(cx[0]) if cx.ndim else float(cx), float(cy[0]) if cy.ndim else float(cy)
        row = self._rows_list[self._locate_row_one(x, y)]
        units = self._units
        return Placement(
            lon=x, lat=y, in_area=row[0] >= 0,
            city=units[0][row[0]] if row[0] >= 0 else None,
            district=units[1][row[1]] if row[1] >= 0 else None,
            town=units[2][row[2]] if row[2] >= 0 else None,
            village=units[3][row[3]] if row[3] >= 0 else None,
        )

    @property
    def stats(self) -> dict[str, float]:
        """Index shape, for benchmarks and tuning."""
        return {
            "fine_cell_m": self.cell_metres,
            "coarse_cells": float(self._coarse.size),
            "blocks": float(self._blocks.shape[0]),
            "memory_bytes": float(self._coarse.nbytes + self._blocks.nbytes),
            "mixed_fine_cells": float(self._candidates[0][0].size - 1),
        }

    # -- query ------------------------------------------------------------------------

    def _locate_rows(self, x: F64, y: F64) -> npt.NDArray[np.intp]:
        fx = x - self._x0
        fx *= self._inv_cx
        np.clip(fx, 0.0, self._nxf_max, out=fx)
        ix = fx.astype(np.intp)
        fy = y - self._y0
        fy *= self._inv_cy
        np.clip(fy, 0.0, self._nyf_max, out=fy)
        iy = fy.astype(np.intp)
        s = self._shift
        v: npt.NDArray[np.intp] = self._coarse[(iy >> s) * self._nxc + (ix >> s)].astype(
            np.intp)
        sel = np.flatnonzero(v <= _MIXED)
        if sel.size:
            mask = self._block - 1
            fi = ((-v[sel] - 2) << (2 * s)) + ((iy[sel] & mask) << s) + (ix[sel] & mask)
            fv = self._blocks_flat[fi].astype(np.intp)
            mixed = fv <= _MIXED
            if mixed.any():
                pick = sel[mixed]
                fv[mixed] = self._resolve(-fv[mixed] - 2, x[pick], y[pick])
            v[sel] = fv
        return v

    def _locate_row_one(self, x: float, y: float) -> int:
        """:meth:`_locate_rows` for one point in scalar arithmetic (same index, same
        IEEE operations, same resolver), because numpy's per-call overhead would dominate."""
        fx = min(max((x - self._x0) * self._inv_cx, 0.0), self._nxf_max)
        fy = min(max((y - self._y0) * self._inv_cy, 0.0), self._nyf_max)
        ix, iy = int(fx), int(fy)
        s = self._shift
        v = int(self._coarse[(iy >> s) * self._nxc + (ix >> s)])
        if v > _MIXED:
            return v
        mask = self._block - 1
        fv = int(self._blocks_flat[((-v - 2) << (2 * s)) + ((iy & mask) << s) + (ix & mask)])
        if fv > _MIXED:
            return fv
        k = -fv - 2
        point = shapely.Point(x, y)
        for indptr, cands in self._candidates:
            for row in cands[indptr[k]:indptr[k + 1]].tolist():
                if self._geoms[row].intersects(point):
                    return int(row)
        return _OUT

    def _resolve(self, k: npt.NDArray[np.intp], x: F64, y: F64) -> npt.NDArray[np.intp]:
        """Exact answer for points in mixed fine cells ``k`` from the cells' candidate lists:
        villages first, then (only for points in no village) towns, districts, cities."""
        out = np.full(k.size, _OUT, dtype=np.intp)
        todo = np.arange(k.size)
        for indptr, cands in self._candidates:
            if not todo.size:
                break
            kk = k[todo]
            starts = indptr[kk]
            counts = indptr[kk + 1] - starts
            total = int(counts.sum())
            if not total:
                continue
            pt = np.repeat(np.arange(todo.size), counts)
            first = np.cumsum(counts) - counts
            rows = cands[np.arange(total) - np.repeat(first - starts, counts)]
            hit = shapely.intersects_xy(self._geoms[rows], x[todo][pt], y[todo][pt])
            big = np.iinfo(np.intp).max
            best = np.full(todo.size, big, dtype=np.intp)
            np.minimum.at(best, pt[hit], rows[hit])
            found = best != big
            out[todo[found]] = best[found]
            todo = todo[~found]
        return out

    def _exact(self, x: F64, y: F64) -> npt.NDArray[np.intp]:
        """Smallest containing row per point, level by level (village first)."""
        out = np.full(x.size, _OUT, dtype=np.intp)
        todo = np.arange(x.size)
        for tree, offset in zip(self._trees, self._offsets[:-1], strict=True):
            if not todo.size:
                break
            tx, ty = x[todo], y[todo]
            qi, ti = tree.query(shapely.points(tx, ty))
            if not qi.size:
                continue
            rows = ti + offset
            hit = shapely.intersects_xy(self._geoms[rows], tx[qi], ty[qi])
            big = np.iinfo(np.intp).max
            best = np.full(todo.size, big, dtype=np.intp)
            np.minimum.at(best, qi[hit], rows[hit])
            found = best != big
            out[todo[found]] = best[found]
            todo = todo[~found]
        return out

    # -- build ------------------------------------------------------------------------

    def _build_grid(self, cell_metres: float | None, block: int, max_coarse: int) -> None:
        cx, cy = self._size_grid(cell_metres, block, max_coarse)
        self._fill_grid(cx, cy)

    def _size_grid(self, cell_metres: float | None, block: int, max_coarse: int
                   ) -> tuple[float, float]:
        """Pick the fine-cell size and lay the grid over the bounds; returns (cx, cy)."""
        minx, miny, maxx, maxy = self.admin_map.bounds
        lat_mid = (miny + maxy) / 2.0
        kx = _M_PER_DEG_LON_EQ * math.cos(math.radians(lat_mid))
        ky = _M_PER_DEG_LAT
        if cell_metres is None:
            va = self.admin_map.village.geometry
            ref = va if len(va) else self._geoms
            median_area = float(np.median(shapely.area(ref))) * kx * ky
            cell_metres = max(math.sqrt(max(median_area, 1.0)) / 32.0, 1.0)
            # bound build time and memory: mixed cells ~ 0.6 x boundary length (all levels)
            scale = np.array([kx, ky])
            length_m = float(np.sum(shapely.length(
                shapely.transform(self._geoms, lambda c: c * scale))))
            cell_metres = max(cell_metres, 0.6 * length_m / self._max_mixed)
        span_m = max((maxx - minx) * kx, 1e-9) * max((maxy - miny) * ky, 1e-9)
        coarse_m = cell_metres * block
        if span_m / coarse_m**2 > max_coarse:
            coarse_m = math.sqrt(span_m / max_coarse)
            cell_metres = coarse_m / block
        self.cell_metres = cell_metres
        self._block = block
        self._shift = block.bit_length() - 1
        cx, cy = cell_metres / kx, cell_metres / ky
        # one empty coarse cell of padding on every side: clamped far-away points land there
        self._x0 = minx - block * cx
        self._y0 = miny - block * cy
        self._nxc = math.ceil((maxx - self._x0) / (block * cx)) + 1
        self._nyc = math.ceil((maxy - self._y0) / (block * cy)) + 1
        nxf, nyf = self._nxc * block, self._nyc * block
        self._inv_cx, self._inv_cy = 1.0 / cx, 1.0 / cy
        self._nxf_max = float(nxf) - 0.5
        self._nyf_max = float(nyf) - 0.5
        return cx, cy

    def _fill_grid(self, cx: float, cy: float) -> None:
        """Rasterise boundaries, label free cells run by run, list mixed-cell candidates."""
        block = self._block
        nxf, nyf = self._nxc * block, self._nyc * block
        fine = self._boundary_cells(nxf, nyf)
        shift = self._shift
        fx_i, fy_i = fine % nxf, fine // nxf
        coarse_id = (fy_i >> shift) * self._nxc + (fx_i >> shift)
        marked_coarse = np.unique(coarse_id)
        nb = marked_coarse.size

        coarse = np.full(self._nyc * self._nxc, _MIXED, dtype=np.int64)
        is_marked = np.zeros(coarse.size, dtype=bool)
        is_marked[marked_coarse] = True
        coarse_rows = is_marked.reshape(self._nyc, self._nxc)
        def coarse_centre(r: npt.NDArray[np.intp], c: npt.NDArray[np.intp]) -> tuple[F64, F64]:
            return (np.asarray(self._x0 + (c + 0.5) * block * cx, dtype=np.float64),
                    np.asarray(self._y0 + (r + 0.5) * block * cy, dtype=np.float64))

        coarse[~is_marked] = self._label_runs(coarse_rows, coarse_centre)[~coarse_rows]
        block_of = np.full(coarse.size, -1, dtype=np.int64)
        block_of[marked_coarse] = np.arange(nb)
        coarse[marked_coarse] = -(np.arange(nb) + 2)

        # fine blocks: (nb * block) rows of length block
        blocks_marked = np.zeros((nb, block, block), dtype=bool)
        b = block_of[coarse_id]
        blocks_marked[b, fy_i & (block - 1), fx_i & (block - 1)] = True
        bc = marked_coarse % self._nxc
        br = marked_coarse // self._nxc

        def centre(r: npt.NDArray[np.intp], c: npt.NDArray[np.intp]) -> tuple[F64, F64]:
            bi, sub_r = r // block, r % block
            gx = bc[bi] * block + c
            gy = br[bi] * block + sub_r
            return (np.asarray(self._x0 + (gx + 0.5) * cx, dtype=np.float64),
                    np.asarray(self._y0 + (gy + 0.5) * cy, dtype=np.float64))

        flat_marked = blocks_marked.reshape(nb * block, block)
        labels = self._label_runs(flat_marked, centre)
        mixed_at = np.flatnonzero(flat_marked.reshape(-1))
        labels.reshape(-1)[mixed_at] = -(np.arange(mixed_at.size) + 2)
        self._build_candidates(mixed_at, centre, cx, cy)
        dtype = np.int32
        self._coarse = coarse.astype(dtype)
        self._blocks = labels.reshape(nb, block, block).astype(dtype)
        self._blocks_flat = self._blocks.reshape(-1)

    def _build_candidates(self, mixed_at: npt.NDArray[np.intp], centre: _CentreFn,
                          cx: float, cy: float) -> None:
        """Per mixed fine cell, the rows whose closed polygon meets the (slightly grown)
        cell, sorted: one list of villages, one of towns/districts/cities."""
        block = self._block
        mx, my = centre(mixed_at // block, mixed_at % block)
        hx, hy = cx * (0.5 + _EPS), cy * (0.5 + _EPS)
        boxes = shapely.box(mx - hx, my - hy, mx + hx, my + hy)
        n = mixed_at.size
        parts: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        # Query the boxes' tree with the polygons, not the polygons' tree with the boxes:
        # GEOS prepares the *input* of a predicate query, and a prepared polygon tests a
        # box in O(log vertices), while a prepared box tests a polygon in O(vertices) -
        # with city/district rings of 10^4+ vertices that was minutes on a province map.
        # The polygons are passed as unprepared copies so that GEOS's prepared form (and its
        # segment index, about as large as the coordinates) lives only for one query.
        box_tree = shapely.STRtree(boxes)
        for start, stop in itertools.pairwise(self._offsets.tolist()):
            plain = shapely.from_wkb(shapely.to_wkb(self._geoms[start:stop]))
            gi, bi = box_tree.query(plain, predicate="intersects")
            del plain
            parts.append((bi, gi + start))
        self._candidates = []
        for group in (parts[:1], parts[1:]):
            cell = np.concatenate([p[0] for p in group])
            rows = np.concatenate([p[1] for p in group])
            order = np.lexsort((rows, cell))
            counts = np.bincount(cell, minlength=n)
            indptr = np.zeros(n + 1, dtype=np.intp)
            np.cumsum(counts, out=indptr[1:])
            self._candidates.append((indptr, rows[order].astype(np.intp)))

    def _boundary_cells(self, nxf: int, nyf: int) -> npt.NDArray[np.int64]:
        """Fine-cell ids (iy * nxf + ix) touched by any ring of any level, conservatively."""
        rings = shapely.get_rings(shapely.get_parts(self._geoms))  # multipolygon parts
        coords, ring_id = shapely.get_coordinates(rings, return_index=True)
        fx = (coords[:, 0] - self._x0) * self._inv_cx
        fy = (coords[:, 1] - self._y0) * self._inv_cy
        del coords
        same = ring_id[1:] == ring_id[:-1]
        # Fast path (most segments on detailed maps): both ends in one fine cell, at least
        # _EPS from its sides; a cell is convex, so the segment touches only that cell.
        ix, iy = np.floor(fx), np.floor(fy)
        inner = ((fx - ix) >= _EPS) & ((fx - ix) <= 1.0 - _EPS) & (
            (fy - iy) >= _EPS) & ((fy - iy) <= 1.0 - _EPS)
        simple = same & inner[:-1] & inner[1:] & (ix[:-1] == ix[1:]) & (iy[:-1] == iy[1:])
        cell = (iy[:-1][simple] * nxf + ix[:-1][simple]).astype(np.int64)
        if cell.size:
            cell = cell[np.concatenate(([True], cell[1:] != cell[:-1]))]
        general = same & ~simple
        ax, ay = fx[:-1][general], fy[:-1][general]
        bx, by = fx[1:][general], fy[1:][general]
        span = np.maximum(np.abs(bx - ax), np.abs(by - ay))
        pieces = np.maximum(np.ceil(span / 0.5), 1).astype(np.int64)
        seg = np.repeat(np.arange(ax.size), pieces)
        start = np.cumsum(pieces) - pieces
        k = np.arange(seg.size) - start[seg]
        t0 = k / pieces[seg]
        t1 = (k + 1) / pieces[seg]
        dx, dy = bx - ax, by - ay
        px0 = ax[seg] + t0 * dx[seg]
        px1 = ax[seg] + t1 * dx[seg]
        py0 = ay[seg] + t0 * dy[seg]
        py1 = ay[seg] + t1 * dy[seg]
        lo_x = np.floor(np.minimum(px0, px1) - _EPS).astype(np.int64)
        hi_x = np.floor(np.maximum(px0, px1) + _EPS).astype(np.int64)
        lo_y = np.floor(np.minimum(py0, py1) - _EPS).astype(np.int64)
        hi_y = np.floor(np.maximum(py0, py1) + _EPS).astype(np.int64)
        ids = np.concatenate([cell, lo_y * nxf + lo_x, lo_y * nxf + hi_x,
                              hi_y * nxf + lo_x, hi_y * nxf + hi_x])
        return np.unique(ids)

    def _label_runs(
        self,
        marked: npt.NDArray[np.bool_],
        centre: _CentreFn,
    ) -> npt.NDArray[np.int64]:
        """Answer for every unmarked cell of a 2-D array, one exact query per run.

        Adjacent unmarked cells in a row share an edge that no boundary touches, so a whole
        run lies in one face and its first cell's centre decides for all of it.
        """
        rows, cols = marked.shape
        flat = marked.reshape(-1)
        free = ~flat
        col = np.tile(np.arange(cols), rows)
        prev_marked = np.ones(flat.size, dtype=bool)
        prev_marked[1:] = flat[:-1]
        starts = free & (prev_marked | (col == 0))
        run_id = np.cumsum(starts) - 1
        start_idx = np.flatnonzero(starts)
        out = np.full(flat.size, _MIXED, dtype=np.int64)
        if start_idx.size:
            qx, qy = centre(start_idx // cols, start_idx % cols)
            answers = self._exact(np.asarray(qx, dtype=np.float64),
                                  np.asarray(qy, dtype=np.float64))
            out[free] = answers[run_id[free]]
        return out.reshape(rows, cols)




def _check(x: F64, y: F64) -> None:
    """Reject NaN, infinity and out-of-range values, naming the first offenders."""
    with np.errstate(invalid="ignore"):
        ok = (np.abs(x) <= 180.0) & (np.abs(y) <= 90.0)
    if ok.all():
        return
    bad = np.flatnonzero(~ok)
    parts = []
    for i in bad[:_SHOW_BAD]:
        xv, yv = float(x[i]), float(y[i])
        why = []
        if not math.isfinite(xv) or abs(xv) > 180.0:
            why.append(f"lon={xv!r}" + ("" if not math.isfinite(xv) else " outside [-180, 180]"))
        if not math.isfinite(yv) or abs(yv) > 90.0:
            why.append(f"lat={yv!r}" + ("" if not math.isfinite(yv) else " outside [-90, 90]"))
        parts.append(f"index {int(i)}: {', '.join(why)}")
    more = f" (and {bad.size - _SHOW_BAD} more)" if bad.size > _SHOW_BAD else ""
    raise LocateError(
        f"cannot locate {bad.size} of {x.size} point(s): {'; '.join(parts)}{more}; "
        "coordinates must be finite with lon in [-180, 180] and lat in [-90, 90]")
