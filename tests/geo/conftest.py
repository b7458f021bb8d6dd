"""Shared fixtures for the geo tests: a tiny synthetic four-level map and the Zhuhai map.

Synthetic layout (lon 113.0-113.4, lat 22.0-22.2), codes nest by prefix:

    city 440400 = whole box
    district 440402 (west half)            district 440403 (east half)
      town 440402001 (south) 440402002 (north)   town 440403001 (all of the east)
      villages 2 + 2 squares of 0.1 deg         villages 440403001001 (113.2-113.3),
                                                 440403001002 (113.3-113.4) with a gap
                                                 hole at 113.35-113.38 x 22.05-22.08
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import shapely

from onemap.geo.boundaries import AdminMap, RawBoundaries, raw_from_records

ZHUHAI = Path(__file__).resolve().parents[2] / "fixtures" / "zhuhai"
GAP = shapely.box(113.35, 22.05, 113.38, 22.08)

Records = list[dict[str, Any]]


def synthetic_records() -> Records:
    box = shapely.box

    def rec(level: str, code: str, name: str, parent: str | None, geom: Any) -> dict[str, Any]:
        return {"level": level, "code": code, "name": name, "parent_code": parent,
                "population": 1000, "geometry": geom}

    return [
        rec("city", "440400", "珠海市", None, box(113.0, 22.0, 113.4, 22.2)),
        rec("district", "440402", "香洲区", "440400", box(113.0, 22.0, 113.2, 22.2)),
        rec("district", "440403", "斗门区", "440400", box(113.2, 22.0, 113.4, 22.2)),
        rec("town", "440402001", "南镇", "440402", box(113.0, 22.0, 113.2, 22.1)),
        rec("town", "440402002", "北镇", "440402", box(113.0, 22.1, 113.2, 22.2)),
        rec("town", "440403001", "东镇", "440403", box(113.2, 22.0, 113.4, 22.2)),
        rec("village", "440402001001", "甲村", "440402001", box(113.0, 22.0, 113.1, 22.1)),
        rec("village", "440402001002", "乙村", "440402001", box(113.1, 22.0, 113.2, 22.1)),
        rec("village", "440402002001", "丙村", "440402002", box(113.0, 22.1, 113.1, 22.2)),
        rec("village", "440402002002", "丁村", "440402002", box(113.1, 22.1, 113.2, 22.2)),
        rec("village", "440403001001", "戊村", "440403001", box(113.2, 22.0, 113.3, 22.2)),
        rec("village", "440403001002", "己村", "440403001",
            box(113.3, 22.0, 113.4, 22.2).difference(GAP)),
    ]


@pytest.fixture
def records() -> Records:
    return synthetic_records()


@pytest.fixture
def make_raw() -> Callable[[Records], RawBoundaries]:
    return lambda recs: raw_from_records(recs, source="synthetic")


@pytest.fixture(scope="session")
def synthetic_map() -> AdminMap:
    return AdminMap.from_raw(raw_from_records(synthetic_records(), source="synthetic"))


@pytest.fixture(scope="session")
def zhuhai_map() -> AdminMap:
    return AdminMap.load_default()  # committed fixtures; a missing file is a failure
