"""A seeded, province-scale four-level boundary set for the benchmarks (generator, not data).

Why: the targets in issue 3 are about a whole province (~25,000 villages of 100-500 vertices
under ~1,600 towns, ~120 districts), and no such real set is public. The output is large
(hundreds of MB as GeoJSON), so the generator is kept and its result cached in a temp dir.

How (same idea as ``fixtures/generate_zhuhai.py``: Voronoi tilings that nest exactly):

1. Village seeds are drawn uniformly inside a wobbly oval of about 500 x 400 km centred on
   23N 113E; seeds drawn outside it only bound the outer cells. Two Lloyd rounds even the
   cells out. The village cells are the Voronoi cells of the seeds inside the oval, so the
   province's outline is a ragged, natural-looking Voronoi edge.
2. Every Voronoi *edge* is densified and perturbed once (a sum of sines under a sin(pi t)
   envelope, amplitude a few percent of the edge length, zero at both ends) and that single
   polyline is reused, reversed where needed, by both cells that share it. Shared edges are
   therefore bit-identical and the tiling stays exact. The number of points per edge is
   chosen so that cells land in the 100-500 vertex range. Cells that a perturbation made
   invalid (or overlapping) get their edges straightened and are rebuilt.
3. Towns, districts and cities are k-means clusters (a few Lloyd iterations) of village,
   town and district seeds, and each parent's polygon is the ``coverage_union`` of its
   children, so parents are exactly the union of their children.
4. Codes nest by prefix like real ones (44CC00 / 44CCDD / +TTT / +VVV); populations are
   drawn per village (seeded log-normal) and summed upwards.

Deterministic for a given :class:`ProvinceSpec`. Coordinates are built in kilometres on a
local plane and mapped to lon/lat by an equirectangular formula (this is synthetic data;
the mapping only has to be smooth and identical for shared vertices, which it is).

Usage::

    python -m benchmarks.province            # generate (or load from cache) and summarise
    python -m benchmarks.province --quick    # the tiny set used by the smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import shapely

from onemap.geo.boundaries import AdminMap, raw_from_records

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

GENERATOR_VERSION: Final = 1  # bump when the output changes, to invalidate caches
_KM_PER_DEG_LAT: Final = 110.574
_KM_PER_DEG_LON_EQ: Final = 111.320


@dataclass(frozen=True)
class ProvinceSpec:
    """What to generate; the defaults are the province-scale set of issue 3."""

    cities: int = 21
    districts: int = 120
    towns: int = 1600
    villages: int = 25_000
    min_vertices: int = 100
    max_vertices: int = 500
    lon0: float = 113.0
    lat0: float = 23.0
    width_km: float = 550.0  # the oval's extent is about 92% of this
    height_km: float = 440.0
    amplitude: float = 0.04  # edge perturbation, as a fraction of the edge length
    seed: int = 440000

    def key(self) -> str:
        """Cache key: changes with any parameter or the generator version."""
        text = repr((GENERATOR_VERSION, sorted(asdict(self).items())))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: The tiny set the smoke test uses (seconds to generate, same code path).
QUICK: Final = ProvinceSpec(cities=2, districts=6, towns=40, villages=400,
                            min_vertices=20, max_vertices=60, width_km=120.0,
                            height_km=100.0)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- generation ---------------------------------------------------------------------------


def _radius(theta: F64) -> F64:
    """Normalised radius of the province outline at angle theta (max about 1)."""
    r: F64 = 0.88 + 0.07 * np.sin(3.0 * theta + 1.0) + 0.05 * np.cos(5.0 * theta)
    return r


def _seeds(spec: ProvinceSpec, rng: np.random.Generator) -> tuple[F64, int]:
    """Seeds in km: the first ``spec.villages`` lie inside the outline, the rest outside
    (at the same density, over a frame 10% wider than the outline) only bound them."""
    hx, hy = spec.width_km / 2.0, spec.height_km / 2.0
    inside: list[F64] = []
    outside: list[F64] = []
    n_in = 0
    while n_in < spec.villages:
        pts = rng.uniform(-1.1, 1.1, size=(spec.villages, 2))
        r = np.hypot(pts[:, 0], pts[:, 1])
        keep = r <= _radius(np.arctan2(pts[:, 1], pts[:, 0]))
        take = pts[keep][: spec.villages - n_in]
        inside.append(take)
        outside.append(pts[~keep])
        n_in += take.shape[0]
    unit = np.concatenate(inside + outside)
    return unit * np.array([hx, hy]), spec.villages


def _voronoi(points: F64, frame: shapely.Polygon) -> npt.NDArray[np.object_]:
    """Voronoi cells in input order, clipped to ``frame``."""
    cells = shapely.get_parts(shapely.voronoi_polygons(
        shapely.multipoints(points), extend_to=frame, ordered=True))
    out: npt.NDArray[np.object_] = shapely.intersection(cells, frame)
    return out


def _lloyd(points: F64, rounds: int) -> F64:
    hx, hy = np.abs(points).max(axis=0) * 1.01
    frame = shapely.box(-hx, -hy, hx, hy)
    for _ in range(rounds):
        cells = _voronoi(points, frame)
        points = shapely.get_coordinates(shapely.centroid(cells))
    return points


def _kmeans(points: F64, k: int, rng: np.random.Generator, rounds: int = 4) -> I64:
    """Cluster label per point (labels 0..k'-1, empty clusters dropped), nearest-centre."""
    centres = points[rng.choice(points.shape[0], size=k, replace=False)]
    labels = np.zeros(points.shape[0], dtype=np.int64)
    pts = shapely.points(points)
    for _ in range(rounds):
        tree = shapely.STRtree(shapely.points(centres))
        qi, ti = tree.query_nearest(pts, all_matches=False)
        labels[qi] = ti
        counts = np.bincount(labels, minlength=centres.shape[0]).astype(np.float64)
        used = counts > 0
        sx = np.bincount(labels, weights=points[:, 0], minlength=centres.shape[0])
        sy = np.bincount(labels, weights=points[:, 1], minlength=centres.shape[0])
        centres = np.column_stack([sx[used] / counts[used], sy[used] / counts[used]])
    tree = shapely.STRtree(shapely.points(centres))
    qi, ti = tree.query_nearest(pts, all_matches=False)
    labels[qi] = ti
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


@dataclass
class _Edges:
    """The Voronoi edge graph of the kept cells and each cell's ring as signed edge ids."""

    vertices: F64  # (nv, 2) km
    ends: I64  # (ne, 2) vertex ids, ends[:, 0] < ends[:, 1]
    ring_edges: list[I64]  # per cell: edge ids in ring order
    ring_forward: list[npt.NDArray[np.bool_]]  # per cell: edge walked from ends[0] to ends[1]


def _edge_graph(cells: npt.NDArray[np.object_]) -> _Edges:
    coords, ring_of = shapely.get_coordinates(shapely.get_exterior_ring(cells),
                                              return_index=True)
    # vertex identity by coordinates rounded to 1e-9 km (1 micrometre): GEOS computes each
    # Voronoi vertex once, rounding only guards against last-bit differences after clipping
    keys = np.round(coords * 1e9).astype(np.int64)
    uniq, vid = np.unique(keys, axis=0, return_inverse=True)
    vid = vid.reshape(-1)
    vertices = np.zeros((uniq.shape[0], 2))
    vertices[vid] = coords
    same = ring_of[1:] == ring_of[:-1]
    a, b = vid[:-1][same], vid[1:][same]
    cell = ring_of[:-1][same]
    nondegenerate = a != b
    a, b, cell = a[nondegenerate], b[nondegenerate], cell[nondegenerate]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    ends, eid = np.unique(np.column_stack([lo, hi]), axis=0, return_inverse=True)
    eid = eid.reshape(-1)
    forward = a == lo
    bounds = np.searchsorted(cell, np.arange(cells.size + 1))
    ring_edges = [eid[bounds[i]:bounds[i + 1]] for i in range(cells.size)]
    ring_forward = [forward[bounds[i]:bounds[i + 1]] for i in range(cells.size)]
    return _Edges(vertices, ends.astype(np.int64), ring_edges, ring_forward)


def _edge_points(g: _Edges, counts: I64, amp: F64, rng: np.random.Generator
                 ) -> tuple[F64, I64]:
    """Interior points of every edge (perturbed polyline), as one array plus offsets."""
    ne = g.ends.shape[0]
    p0 = g.vertices[g.ends[:, 0]]
    p1 = g.vertices[g.ends[:, 1]]
    d = p1 - p0
    length = np.hypot(d[:, 0], d[:, 1])
    normal = np.column_stack([-d[:, 1], d[:, 0]]) / np.maximum(length, 1e-12)[:, None]
    harmonics = np.array([1.0, 2.0, 3.0])
    weights = rng.uniform(-1.0, 1.0, size=(ne, 3)) * np.array([0.6, 0.3, 0.15])
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(ne, 3))
    edge = np.repeat(np.arange(ne), counts)
    start = np.cumsum(counts) - counts
    k = np.arange(edge.size) - start[edge] + 1
    t = k / (counts[edge] + 1.0)
    wave = np.sum(weights[edge] * np.sin(harmonics * np.pi * t[:, None] + phases[edge]), axis=1)
    offset = amp[edge] * length[edge] * np.sin(np.pi * t) * wave
    pts = p0[edge] + d[edge] * t[:, None] + normal[edge] * offset[:, None]
    offsets = np.zeros(ne + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return pts, offsets


def _rings(g: _Edges, pts: F64, offsets: I64, cells: npt.ArrayLike) -> list[shapely.Polygon]:
    out: list[shapely.Polygon] = []
    for c in np.asarray(cells, dtype=np.int64).tolist():
        pieces: list[F64] = []
        for e, fwd in zip(g.ring_edges[c].tolist(), g.ring_forward[c].tolist(), strict=True):
            a, b = g.ends[e]
            inner = pts[offsets[e]:offsets[e + 1]]
            if fwd:
                pieces.append(g.vertices[a][None, :])
                pieces.append(inner)
            else:
                pieces.append(g.vertices[b][None, :])
                pieces.append(inner[::-1])
        ring = np.concatenate(pieces)
        out.append(shapely.Polygon(np.concatenate([ring, ring[:1]])))
    return out


def _village_polygons(cells: npt.NDArray[np.object_], spec: ProvinceSpec,
                      rng: np.random.Generator, progress: Progress
                      ) -> npt.NDArray[np.object_]:
    g = _edge_graph(cells)
    n_cells = cells.size
    sides = np.array([r.size for r in g.ring_edges], dtype=np.int64)
    span = spec.max_vertices - spec.min_vertices
    target = rng.integers(spec.min_vertices + span // 10, spec.max_vertices - span // 4,
                          size=n_cells)
    demand = np.ceil(target / sides).astype(np.int64) - 1  # interior points per edge
    ne = g.ends.shape[0]
    total = np.zeros(ne)
    seen = np.zeros(ne)
    for c in range(n_cells):
        total[g.ring_edges[c]] += demand[c]
        seen[g.ring_edges[c]] += 1
    counts = np.maximum(np.round(total / np.maximum(seen, 1)).astype(np.int64), 1)
    amp = np.full(ne, spec.amplitude)
    pts, offsets = _edge_points(g, counts, amp, rng)
    polys = np.array(_rings(g, pts, offsets, np.arange(n_cells)), dtype=object)
    for attempt in range(5):
        bad = np.flatnonzero(~shapely.is_valid(polys))
        if not bad.size and shapely.coverage_is_valid(polys):
            break
        if not bad.size:
            invalid_edges = shapely.coverage_invalid_edges(polys)
            bad = np.flatnonzero(~shapely.is_empty(invalid_edges))
        progress(f"  straightening the edges of {bad.size} cell(s) (round {attempt + 1})")
        touched = np.unique(np.concatenate([g.ring_edges[c] for c in bad]))
        amp[touched] = 0.0
        pts, offsets = _edge_points(g, counts, amp, np.random.default_rng(spec.seed + 1))
        polys = np.array(_rings(g, pts, offsets, np.arange(n_cells)), dtype=object)
    else:
        raise RuntimeError("could not make the village tiling valid")
    return polys


def _to_degrees(geoms: npt.NDArray[np.object_], spec: ProvinceSpec) -> npt.NDArray[np.object_]:
    kx = _KM_PER_DEG_LON_EQ * math.cos(math.radians(spec.lat0))
    scale = np.array([1.0 / kx, 1.0 / _KM_PER_DEG_LAT])
    origin = np.array([spec.lon0, spec.lat0])
    out: npt.NDArray[np.object_] = shapely.transform(geoms, lambda c: c * scale + origin)
    return out


def generate_records(spec: ProvinceSpec, progress: Progress = _quiet
                     ) -> list[dict[str, Any]]:
    """The four levels as records for :func:`onemap.geo.boundaries.raw_from_records`."""
    rng = np.random.default_rng(spec.seed)
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        progress(f"[{time.perf_counter() - t0:6.1f} s] {msg}")

    seeds, n_in = _seeds(spec, rng)
    step(f"{seeds.shape[0]} seeds ({n_in} villages); Lloyd relaxation")
    seeds = _lloyd(seeds, rounds=2)
    hx, hy = np.abs(seeds).max(axis=0) * 1.01
    cells = _voronoi(seeds, shapely.box(-hx, -hy, hx, hy))[:n_in]
    step("densifying and perturbing shared edges")
    villages_km = _village_polygons(cells, spec, rng, step)
    vseed = seeds[:n_in]

    step("clustering villages into towns, districts, cities")
    town_of = _kmeans(vseed, spec.towns, rng)
    n_towns = int(town_of.max()) + 1
    tcentre = np.column_stack([np.bincount(town_of, weights=vseed[:, i]) / np.bincount(town_of)
                               for i in (0, 1)])
    district_of_town = _kmeans(tcentre, spec.districts, rng)
    n_districts = int(district_of_town.max()) + 1
    tcount = np.bincount(district_of_town)
    dcentre = np.column_stack([np.bincount(district_of_town, weights=tcentre[:, i]) / tcount
                               for i in (0, 1)])
    city_of_district = _kmeans(dcentre, spec.cities, rng)

    step("mapping to lon/lat")
    villages = _to_degrees(villages_km, spec)
    population = np.maximum(rng.lognormal(mean=8.2, sigma=0.6, size=n_in), 50).astype(np.int64)

    step(f"building {n_towns} towns by coverage union")
    town_geoms = _unions(villages, town_of, n_towns)
    step(f"building {n_districts} districts and {int(city_of_district.max()) + 1} cities")
    district_geoms = _unions(town_geoms, district_of_town, n_districts)
    city_geoms = _unions(district_geoms, city_of_district, int(city_of_district.max()) + 1)

    n_cities = city_geoms.size
    city_codes = [f"44{c + 1:02d}00" for c in range(n_cities)]
    district_codes = _codes_for(city_of_district, [c[:4] for c in city_codes], dcentre, 2)
    town_codes = _codes_for(district_of_town, district_codes, tcentre, 3)
    village_codes = _codes_for(town_of, town_codes, vseed, 3)

    tpop = np.bincount(town_of, weights=population).astype(np.int64)
    dpop = np.bincount(district_of_town, weights=tpop).astype(np.int64)
    cpop = np.bincount(city_of_district, weights=dpop).astype(np.int64)

    records: list[dict[str, Any]] = []
    for i in range(n_cities):
        records.append(dict(level="city", code=city_codes[i], name=f"合成{i + 1}市",
                            parent_code=None, population=int(cpop[i]),
                            geometry=city_geoms[i]))
    for i in range(n_districts):
        records.append(dict(level="district", code=district_codes[i],
                            name=f"合成区{district_codes[i]}",
                            parent_code=city_codes[int(city_of_district[i])],
                            population=int(dpop[i]), geometry=district_geoms[i]))
    for i in range(n_towns):
        records.append(dict(level="town", code=town_codes[i], name=f"合成镇{town_codes[i]}",
                            parent_code=district_codes[int(district_of_town[i])],
                            population=int(tpop[i]), geometry=town_geoms[i]))
    for i in range(n_in):
        records.append(dict(level="village", code=village_codes[i],
                            name=f"合成村{village_codes[i]}",
                            parent_code=town_codes[int(town_of[i])],
                            population=int(population[i]), geometry=villages[i]))
    step(f"done: {len(records)} records")
    return records


def _codes_for(parent_of: I64, parent_codes: list[str], centres: F64, width: int
               ) -> list[str]:
    """Child codes = parent code + rank within the parent (west to east, then south)."""
    order = np.lexsort((centres[:, 1], centres[:, 0], parent_of))
    codes = [""] * parent_of.size
    rank: dict[int, int] = {}
    for i in order.tolist():
        p = int(parent_of[i])
        rank[p] = rank.get(p, 0) + 1
        codes[i] = parent_codes[p] + f"{rank[p]:0{width}d}"
    return codes


def _unions(children: npt.NDArray[np.object_], parent_of: I64, n: int
            ) -> npt.NDArray[np.object_]:
    """Exact union per parent; the children form a valid coverage (shared edges identical)."""
    order = np.argsort(parent_of, kind="stable")
    bounds = np.searchsorted(parent_of[order], np.arange(n + 1))
    out = np.empty(n, dtype=object)
    for p in range(n):
        members = children[order[bounds[p]:bounds[p + 1]]]
        out[p] = shapely.coverage_union_all(members)
    return out


# -- caching ------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$ONEMAP_BENCH_CACHE`` or ``<tmp>/onemap-bench``."""
    return Path(os.environ.get("ONEMAP_BENCH_CACHE")
                or Path(tempfile.gettempdir()) / "onemap-bench")


def cache_path(spec: ProvinceSpec) -> Path:
    return cache_dir() / f"province-{spec.key()}.pkl"


def ensure_cached(spec: ProvinceSpec, progress: Progress = _stderr, *,
                  subprocess_ok: bool = True) -> Path:
    """Generate into the cache unless present. With ``subprocess_ok`` the generation runs
    in a child process, so that its temporary memory does not inflate the caller's RSS
    (the benchmark measures resident memory afterwards)."""
    path = cache_path(spec)
    if path.exists():
        return path
    if subprocess_ok:
        progress(f"generating the province set in a child process (cache: {path})")
        subprocess.run([sys.executable, "-m", "benchmarks.province", "--spec",
                        repr(asdict(spec))], check=True,
                       cwd=Path(__file__).resolve().parent.parent)
        return path
    records = generate_records(spec, progress)
    _write_cache(path, records)
    return path


def _write_cache(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    geoms = np.array([r["geometry"] for r in records], dtype=object)
    payload = {
        "meta": [{k: v for k, v in r.items() if k != "geometry"} for r in records],
        "wkb": shapely.to_wkb(geoms).tolist(),
    }
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_records(spec: ProvinceSpec, progress: Progress = _stderr, *,
                 subprocess_ok: bool = True) -> list[dict[str, Any]]:
    """The records, from the cache (generated first if needed)."""
    path = ensure_cached(spec, progress, subprocess_ok=subprocess_ok)
    with path.open("rb") as f:
        payload = pickle.load(f)
    geoms = shapely.from_wkb(np.array(payload["wkb"], dtype=object))
    return [{**meta, "geometry": g} for meta, g in zip(payload["meta"], geoms, strict=True)]


def province_map(spec: ProvinceSpec | None = None, progress: Progress = _stderr, *,
                 subprocess_ok: bool = True) -> AdminMap:
    """The province set as an :class:`AdminMap` (generated and cached on first use)."""
    spec = spec or ProvinceSpec()
    records = load_records(spec, progress, subprocess_ok=subprocess_ok)
    return AdminMap.from_raw(raw_from_records(records, source=f"province:{spec.key()}"))


def summary(m: AdminMap) -> dict[str, Any]:
    """Counts and the village vertex distribution, for the benchmark report."""
    nverts = shapely.get_num_coordinates(m.village.geometry)
    b = m.bounds
    kx = _KM_PER_DEG_LON_EQ * math.cos(math.radians((b[1] + b[3]) / 2))
    return {
        "cities": len(m.city), "districts": len(m.district), "towns": len(m.town),
        "villages": len(m.village),
        "village_vertices": {"min": int(nverts.min()), "median": int(np.median(nverts)),
                             "max": int(nverts.max()), "total": int(nverts.sum())},
        "extent_km": [round((b[2] - b[0]) * kx, 1), round((b[3] - b[1]) * _KM_PER_DEG_LAT, 1)],
        "bounds": [round(v, 4) for v in b],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the tiny smoke-test set")
    parser.add_argument("--spec", help=argparse.SUPPRESS)  # used by ensure_cached
    args = parser.parse_args(argv)
    if args.spec:
        import ast
        spec = ProvinceSpec(**ast.literal_eval(args.spec))
        path = cache_path(spec)
        _write_cache(path, generate_records(spec, _stderr))
        _stderr(f"written {path} ({path.stat().st_size / 1e6:.0f} MB)")
        return 0
    spec = QUICK if args.quick else ProvinceSpec()
    t = time.perf_counter()
    m = province_map(spec)
    _stderr(f"loaded in {time.perf_counter() - t:.1f} s: {m!r}")
    print(summary(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
