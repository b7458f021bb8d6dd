"""Alerts for the wall tests, written to Redis with the worker's own writer (RedisStateSink).

Using the worker's writer means the tests exercise the real key layout: if the worker ever
writes differently, these tests see it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
import shapely

from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.sinks.base import Outcome
from onemap.sinks.dashboard.state import RedisStateSink

#: hazard type → (feed, key figure name, unit, threshold name)
KINDS = {
    "water_level": ("water", "水位", "米", "警戒水位"),
    "rainstorm": ("weather", "3小时降雨", "毫米", "红色预警线"),
    "wind": ("weather", "阵风", "米/秒", "大风预警线"),
    "geohazard": ("geohazard", "位移速率", "毫米/天", "预警速率"),
    "incident": ("incident", "受困人数", "人", "响应人数"),
}
LEVEL_POINTS = {WarningLevel.BLUE: 10.0, WarningLevel.YELLOW: 30.0,
                WarningLevel.ORANGE: 60.0, WarningLevel.RED: 100.0, WarningLevel.NONE: 0.0}


@functools.cache
def admin_map() -> AdminMap:
    return AdminMap.load_default()


def place_of(village_code: str) -> tuple[Place, float, float]:
    """The four-level place of a village and a point inside it."""
    admin = admin_map()
    table = admin[AdminLevel.VILLAGE]
    i = table.index_of(village_code)
    assert i >= 0, village_code
    chain = table.chain[i]
    names = [admin[lv].names[int(chain[lv])] for lv in AdminLevel]
    codes = [admin[lv].codes[int(chain[lv])] for lv in AdminLevel]
    point = shapely.point_on_surface(table.geometry[i])
    place = Place(codes[0], names[0], codes[1], names[1], codes[2], names[2], codes[3], names[3])
    return place, float(point.x), float(point.y)


def make_alert(village_code: str, level: WarningLevel, *, source_id: str,
               hazard_type: str = "water_level", seq: int = 1, transition: str = "new",
               exercise: bool = False, reason: str = "", source_name: str = "",
               value: float = 3.2, exposure: float = 5.0,
               issued_at: datetime | None = None,
               at: tuple[float, float] | None = None) -> Alert:
    """One alert transition at a village, shaped like the lifecycle stage makes them."""
    place, lon, lat = place_of(village_code)
    if at is not None:
        lon, lat = at
    feed, figure, unit, threshold_name = KINDS[hazard_type]
    now = issued_at or datetime.now(UTC)
    hazard = Hazard(
        hazard_id=f"{hazard_type}:{source_id}", hazard_type=hazard_type, feed=feed,
        source_id=source_id, source_name=source_name or f"{place.village_name}监测点",
        level=level, previous_level=WarningLevel.NONE, place=place, lon=lon, lat=lat,
        observed_at=now - timedelta(minutes=2),
        key_figure=KeyFigure(figure, value, unit, threshold_name, round(value * 0.9, 2)),
        reason=reason or f"{figure}{value}{unit}，超{threshold_name}",
        rule_id=hazard_type, rule_version="1", exercise=exercise,
        trend={"direction": "rising", "rate_per_h": 0.12, "hours_to_next": 1.5})
    breakdown = {"level": LEVEL_POINTS[level], "exposure": exposure}
    return Alert(alert_id=f"{hazard.hazard_id}#{seq}", hazard_id=hazard.hazard_id, seq=seq,
                 transition=transition, level=level, previous_level=WarningLevel.NONE,
                 hazard=hazard, score=round(sum(breakdown.values()), 3),
                 score_breakdown=breakdown, issued_at=now)


def resolve(alert: Alert) -> Alert:
    """The resolved transition that closes ``alert``."""
    h = alert.hazard
    gone = Hazard(**{**{f: getattr(h, f) for f in h.__dataclass_fields__},
                     "level": WarningLevel.NONE, "previous_level": alert.level})
    return Alert(alert_id=f"{alert.hazard_id}#{alert.seq + 1}", hazard_id=alert.hazard_id,
                 seq=alert.seq + 1, transition="resolved", level=WarningLevel.NONE,
                 previous_level=alert.level, hazard=gone, score=0.0,
                 score_breakdown={"level": 0.0, "exposure": 0.0},
                 issued_at=datetime.now(UTC))


async def _write(redis_url: str, alerts: Sequence[Alert], batch: int) -> list[Outcome]:
    sink = RedisStateSink(aioredis.Redis.from_url(redis_url))
    try:
        out: list[Outcome] = []
        for start in range(0, len(alerts), batch):
            out.extend(await sink.send(alerts[start:start + batch]))
        return out
    finally:
        await sink.close()


def write_alerts(redis_url: str, alerts: Sequence[Alert], batch: int = 500) -> list[Outcome]:
    """Write with the worker's sink, on a thread of its own (Playwright owns this one's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        outcomes = pool.submit(asyncio.run, _write(redis_url, alerts, batch)).result(120)
    assert all(o in (Outcome.DELIVERED, Outcome.DUPLICATE) for o in outcomes), outcomes
    return outcomes


def villages() -> tuple[str, ...]:
    codes: tuple[str, ...] = admin_map()[AdminLevel.VILLAGE].codes
    return codes
