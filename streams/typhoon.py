"""The `typhoon` scenario: a landfall over Zhuhai modelled on Typhoon Hato (天鸽, 2017).

Hato made landfall on the south of Jinwan District at about 12:50 on 23 August 2017 with
mean winds of force 14 (~45 m/s). This generator is *modelled* on that day, not a recording:
a seeded, reproducible storm moving north-west across the map drives every registered source
over eight hours (08:00-16:00 Beijing time):

- weather stations: a Rankine-vortex wind field (gusts 1.4x the mean) and spiral rain bands
  that peak near the eyewall;
- tide stations: astronomical tide plus a storm surge that peaks at landfall on the east
  coast (香洲港, 横琴 over their guaranteed levels); rivers back up behind the surge;
- waterlogging points in Xiangzhou fill when hourly rain exceeds the drains' capacity;
- hazard points on the wettest hills start to move and accelerate after 180 mm of rain;
- incidents surge with the wind and rain (trees down, waterlogging, collapses, traffic),
  each followed by its dispatch / on-scene / handled / closed updates;
- one sensor drops out at the height of the storm (香洲港潮位站 stops at 12:30);
- the met bureau's CAP typhoon and rainstorm warnings escalate and are finally cancelled.

Everything is derived from a seed; the same seed gives the same records, byte for byte.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from onemap.registries import Registries, default_registries_dir

CST = timezone(timedelta(hours=8))
START = datetime(2017, 8, 23, 8, 0, tzinfo=CST)
HOURS = 8
LANDFALL = START + timedelta(hours=4, minutes=50)
#: Track: position at landfall and motion (degrees per hour), north-west at ~25 km/h.
LANDFALL_LON, LANDFALL_LAT = 113.25, 21.95
MOTION_LON_H, MOTION_LAT_H = -0.19, 0.12
VMAX_MS, RMAX_KM = 45.0, 25.0
DROPOUT_STATION, DROPOUT_AT = "ZH-TIDE-005", START + timedelta(hours=4, minutes=30)
KM_PER_DEG = 111.2

Line = dict[str, Any]


def centre(at: datetime) -> tuple[float, float]:
    hours = (at - LANDFALL).total_seconds() / 3600
    return LANDFALL_LON + MOTION_LON_H * hours, LANDFALL_LAT + MOTION_LAT_H * hours


def distance_km(lon: float, lat: float, at: datetime) -> float:
    clon, clat = centre(at)
    dx = (lon - clon) * KM_PER_DEG * math.cos(math.radians(lat))
    return math.hypot(dx, (lat - clat) * KM_PER_DEG)


def wind_ms(r_km: float) -> float:
    """Rankine vortex: linear inside the radius of maximum wind, decaying outside."""
    if r_km < RMAX_KM:
        return VMAX_MS * max(r_km, 1.0) / RMAX_KM
    return float(VMAX_MS * (RMAX_KM / r_km) ** 0.6)


def rain_rate_mm_h(lon: float, lat: float, at: datetime) -> float:
    """Rain rate: strongest near the eyewall, with rotating spiral bands."""
    clon, clat = centre(at)
    r = max(distance_km(lon, lat, at), 1.0)
    angle = math.atan2(lat - clat, lon - clon)
    band = 0.6 + 0.4 * math.cos(2 * angle + r / 25.0 - (at - START).total_seconds() / 5400)
    return 75.0 * math.exp(-((r - 30.0) / 70.0) ** 2) * band + 4.0 * math.exp(-r / 200.0)


def _time(at: datetime) -> str:
    return at.isoformat()


def _weather(reg: Registries, rng: random.Random, at: datetime, step_min: int) -> Iterator[Line]:
    for st in reg.weather.values():
        if st.expected_interval_s > 300 and at.minute % 10:
            continue  # regional stations report every 10 minutes
        r = distance_km(st.lon, st.lat, at)
        interval = 10 if st.expected_interval_s > 300 else step_min
        mean = wind_ms(r) * rng.uniform(0.85, 1.05)
        rain = rain_rate_mm_h(st.lon, st.lat, at) * interval / 60 * rng.uniform(0.7, 1.3)
        yield {"feed": "weather", "record": {
            "station_id": st.station_id, "observed_at": _time(at), "rain_mm": round(rain, 1),
            "wind_speed_ms": round(mean, 1),
            "wind_gust_ms": round(mean * rng.uniform(1.3, 1.5), 1)}}


def _water(reg: Registries, rng: random.Random, at: datetime, rain_so_far: dict[str, float],
           ) -> Iterator[Line]:
    hours = (at - START).total_seconds() / 3600
    tide = 0.55 * math.sin(2 * math.pi * (hours - 2.0) / 12.42)
    to_landfall = (at - LANDFALL).total_seconds() / 3600
    for st in reg.water.values():
        if st.station_id == DROPOUT_STATION and at >= DROPOUT_AT:
            continue  # the gauge was destroyed by the surge
        r = distance_km(st.lon, st.lat, at)
        if st.kind == "tide":
            east = 1.0 + 0.5 * max(0.0, (st.lon - 113.4) / 0.2)
            surge = 1.6 * east * math.exp(-(to_landfall / 1.6) ** 2) * math.exp(-r / 120)
            level = st.warning_level_m - 0.9 + tide + surge
        elif st.kind == "river":
            backed = 1.1 * math.exp(-((to_landfall - 0.8) / 2.2) ** 2)
            level = st.warning_level_m - 0.7 + 0.5 * tide + backed
        elif st.kind == "reservoir":
            filled = min(rain_so_far.get(st.station_id, 0.0) / 250.0, 1.0)
            assert st.flood_limit_level_m is not None
            level = st.flood_limit_level_m - 0.6 + 1.9 * filled
        else:  # waterlogging: ponding depth from rain above the drains' ~30 mm/h capacity,
            # reported every minute as the registry expects (step of 5: the 4 before `at` too)
            for minutes_before in (4, 3, 2, 1, 0):
                when = at - timedelta(minutes=minutes_before)
                if when < START:
                    continue
                excess = max(0.0, rain_rate_mm_h(st.lon, st.lat, when) - 30.0)
                depth = min(0.9, excess / 70.0) + rng.gauss(0, 0.01)
                yield {"feed": "water", "record": {
                    "station_id": st.station_id, "observed_at": _time(when),
                    "level_m": round(max(depth, 0.0), 2)}}
            continue
        yield {"feed": "water", "record": {
            "station_id": st.station_id, "observed_at": _time(at),
            "level_m": round(level + rng.gauss(0, 0.01), 2)}}


def _geohazard(reg: Registries, rng: random.Random, at: datetime,
               moved: dict[str, float], rained: dict[str, float]) -> Iterator[Line]:
    for p in reg.hazard_points.values():
        rain = rain_rate_mm_h(p.lon, p.lat, at) / 6 * rng.uniform(0.7, 1.3)
        rained[p.point_id] = rained.get(p.point_id, 0.0) + rain
        # creeping at 1 mm/day; after 180 mm of rain the wettest landslide and debris-flow
        # slopes start to move, faster with every further millimetre
        speed_mm_h = 1.0 / 24
        if p.kind in ("landslide", "debris_flow") and rained[p.point_id] > 180:
            speed_mm_h += 0.05 * (rained[p.point_id] - 180)
        moved[p.point_id] = moved.get(p.point_id, 0.0) + speed_mm_h / 6
        yield {"feed": "geohazard", "record": {
            "point_id": p.point_id, "observed_at": _time(at), "sensor": "gnss",
            "displacement_mm": round(moved[p.point_id] + rng.gauss(0, 0.05), 2)}}
        yield {"feed": "geohazard", "record": {
            "point_id": p.point_id, "observed_at": _time(at), "sensor": "rain_gauge",
            "rain_mm": round(rain, 1)}}


CATEGORIES = [("tree_down", "路边大树倒伏阻断交通"), ("waterlogging", "路面积水严重车辆被困"),
              ("building_collapse", "简易房屋倒塌有人员被困"), ("traffic", "车辆被吹翻发生事故"),
              ("power", "电线杆倒伏线路起火"), ("flood", "低洼地带进水需转移群众"),
              ("drowning", "有人落水")]
STEPS = (("dispatched", 8), ("on_scene", 25), ("handled", 75), ("closed", 110))


def _incidents(reg: Registries, rng: random.Random, at: datetime, step_min: int,
               counter: list[int]) -> Iterator[tuple[datetime, Line]]:
    """New incidents (Poisson, rate rising with the storm) and their later updates."""
    intensity = wind_ms(distance_km(113.45, 22.2, at)) / VMAX_MS
    expected = 6.0 * intensity ** 2 * step_min / 10
    stations = list(reg.weather.values())
    for _ in range(_poisson(rng, expected)):
        counter[0] += 1
        site = rng.choice(stations)
        lon = site.lon + rng.uniform(-0.01, 0.01)
        lat = site.lat + rng.uniform(-0.01, 0.01)
        category, text = rng.choice(CATEGORIES)
        trapped = rng.choice((0, 0, 0, 1, 2, 3)) if category == "building_collapse" else 0
        injured = rng.choice((0, 0, 0, 1, 2)) + (8 if rng.random() < 0.04 else 0)
        deaths = 1 if rng.random() < 0.03 else 0
        channel = rng.choice(("110", "119", "120", "12345", "grid"))
        iid = f"{channel}-20170823-{counter[0]:04d}"
        base = {"incident_id": iid, "channel": channel, "category": category,
                "description": text, "lon": round(lon, 5), "lat": round(lat, 5),
                "deaths": deaths, "injured": injured, "trapped": trapped}
        yield at, {"feed": "incident", "record": {**base, "observed_at": _time(at),
                                                  "status": "reported"}}
        for status, after in STEPS:
            when = at + timedelta(minutes=after + rng.randint(0, 10))
            update = {**base, "observed_at": _time(when), "status": status,
                      "trapped": 0 if status in ("handled", "closed") else trapped}
            yield when, {"feed": "incident", "record": update}


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def cap_message(identifier: str, sent: datetime, *, msg_type: str, event: str, severity: str,
                headline: str, previous: tuple[str, datetime] | None) -> str:
    """A CAP 1.2 message from the Zhuhai met bureau covering the city."""
    refs = ""
    if previous is not None:
        refs = f"<references>zhuhai@weather.gd.cn,{previous[0]},{previous[1].isoformat()}" \
               "</references>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
        f"<identifier>{identifier}</identifier><sender>zhuhai@weather.gd.cn</sender>"
        f"<sent>{sent.isoformat()}</sent><status>Actual</status><msgType>{msg_type}</msgType>"
        f"<scope>Public</scope>{refs}<info><language>zh-CN</language><category>Met</category>"
        f"<event>{event}</event><urgency>Immediate</urgency><severity>{severity}</severity>"
        f"<certainty>Observed</certainty><senderName>珠海市气象台</senderName>"
        f"<headline>{headline}</headline><area><areaDesc>珠海市</areaDesc>"
        "<polygon>21.80,113.08 22.46,113.08 22.46,114.32 21.80,114.32 21.80,113.08</polygon>"
        "</area></info></alert>")


#: (minutes after 08:00, signal, colour, CAP severity)
CAP_SCHEDULE = [
    (0, "台风", "黄色", "Moderate"), (60, "台风", "橙色", "Severe"),
    (150, "台风", "红色", "Extreme"), (120, "暴雨", "黄色", "Moderate"),
    (210, "暴雨", "红色", "Extreme"), (390, "台风", "橙色", "Severe"),
    (420, "暴雨", "黄色", "Moderate"), (460, "台风", "", "Minor"), (470, "暴雨", "", "Minor"),
]


SIGNAL_CODES = {"台风": "TY", "暴雨": "RS"}


def _caps() -> Iterator[tuple[datetime, Line]]:
    first: dict[str, tuple[str, datetime]] = {}
    for minutes, signal, colour, severity in sorted(CAP_SCHEDULE):
        sent = START + timedelta(minutes=minutes)
        identifier = f"44040041600000_{SIGNAL_CODES[signal]}_{sent:%Y%m%d%H%M}"
        previous = first.get(signal)
        if previous is None:
            msg_type, event = "Alert", f"{signal}{colour}预警信号"
            first[signal] = (identifier, sent)
        elif not colour:
            msg_type, event = "Cancel", f"解除{signal}预警信号"
        else:
            msg_type, event = "Update", f"{signal}{colour}预警信号"
        headline = f"珠海市气象台{'解除' if not colour else '发布'}{event.removeprefix('解除')}"
        xml = cap_message(identifier, sent, msg_type=msg_type, event=event, severity=severity,
                          headline=headline, previous=previous)
        yield sent, {"feed": "cap", "record": xml}


def generate(seed: int = 20170823, registries: Registries | None = None) -> list[Line]:
    """Every record of the scenario, in event-time order (envelope lines for replay)."""
    reg = registries or Registries.load(default_registries_dir())
    rng = random.Random(seed)
    timed: list[tuple[datetime, int, Line]] = []
    moved: dict[str, float] = {}
    rained: dict[str, float] = {}
    reservoir_rain: dict[str, float] = {}
    counter = [0]
    step = 5
    for k in range(HOURS * 60 // step + 1):
        at = START + timedelta(minutes=step * k)
        for st in reg.water.values():
            if st.kind == "reservoir":
                reservoir_rain[st.station_id] = reservoir_rain.get(st.station_id, 0.0) + \
                    rain_rate_mm_h(st.lon, st.lat, at) * step / 60
        lines: list[tuple[datetime, Line]] = [(at, line) for line in _weather(reg, rng, at, step)]
        lines += [(at, line) for line in _water(reg, rng, at, reservoir_rain)]
        if at.minute % 10 == 0:
            lines += [(at, line) for line in _geohazard(reg, rng, at, moved, rained)]
        lines += list(_incidents(reg, rng, at, step, counter))
        timed += [(when, len(timed) + i, line) for i, (when, line) in enumerate(lines)]
    timed += [(when, len(timed) + i, line) for i, (when, line) in enumerate(_caps())]
    end = START + timedelta(hours=HOURS)
    return [line for when, _, line in sorted(timed, key=lambda x: (x[0], x[1])) if when <= end]


def write(path: Path, seed: int = 20170823) -> Path:
    """Write the scenario as replayable JSON Lines (deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for line in generate(seed))
    path.write_text(text, encoding="utf-8")
    return path
