"""`onemap locate`: four-level codes and names for one point or a CSV of any size."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from onemap.errors import LocateError, OneMapError
from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.geo.locator import Locator

CHUNK = 20_000
LON_NAMES = ("lon", "lng", "longitude", "x", "经度")
LAT_NAMES = ("lat", "latitude", "y", "纬度")
OUT_COLUMNS = [f"{level.label}_{what}" for level in AdminLevel for what in ("code", "name")]


def _locator(boundaries: Path | None) -> Locator:
    admin_map = AdminMap.load_default() if boundaries is None else AdminMap.from_files(boundaries)
    return Locator(admin_map)


def locate_command(*, lon: float | None, lat: float | None, csv_path: Path | None, crs: str,
                   boundaries: Path | None, out: TextIO = sys.stdout,
                   progress: TextIO = sys.stderr) -> int:
    locator = _locator(boundaries)
    if csv_path is None:
        assert lon is not None and lat is not None
        placement = locator.locate_one(lon, lat, crs)
        if not placement.in_area:
            print(f"{lon} {lat}: out of area (outside every boundary)", file=out)
            return 0
        for level in AdminLevel:
            unit = placement.unit(level)
            if unit is not None:
                print(f"{level.chinese}\t{unit.code}\t{unit.name}", file=out)
        return 0
    return locate_csv(locator, csv_path, crs, out, progress)


def _column(header: list[str], names: tuple[str, ...], path: Path) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise OneMapError(f"{path}: no column for {names[0]} (looked for {', '.join(names)})")


def _chunks(reader: Iterator[list[str]]) -> Iterator[list[list[str]]]:
    chunk: list[list[str]] = []
    for row in reader:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def locate_csv(locator: Locator, path: Path, crs: str, out: TextIO, progress: TextIO) -> int:
    """Stream a CSV: each row is written back with the eight code/name columns appended."""
    started = time.monotonic()
    done = 0
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise OneMapError(f"{path}: empty CSV")
        ix, iy = _column(header, LON_NAMES, path), _column(header, LAT_NAMES, path)
        writer = csv.writer(out)
        writer.writerow([*header, *OUT_COLUMNS, "in_area"])
        for chunk in _chunks(reader):
            try:
                x = np.array([float(r[ix]) for r in chunk])
                y = np.array([float(r[iy]) for r in chunk])
            except (ValueError, IndexError) as exc:
                raise OneMapError(f"{path}: row {done + 2}..{done + len(chunk) + 1}: "
                                  f"unreadable coordinate ({exc})") from None
            try:
                located = locator.locate(x, y, crs)
            except LocateError as exc:
                raise OneMapError(f"{path}: rows {done + 2}..{done + len(chunk) + 1}: {exc}") \
                    from None
            columns = [arr for level in AdminLevel
                       for arr in (located.code(level), located.name(level))]
            in_area = located.in_area
            for i, row in enumerate(chunk):
                writer.writerow([*row, *(str(c[i]) for c in columns), int(in_area[i])])
            done += len(chunk)
            rate = done / max(time.monotonic() - started, 1e-9)
            print(f"locate: {done:,} rows ({rate:,.0f} rows/s)", file=progress, flush=True)
    return 0
