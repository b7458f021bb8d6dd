"""Raw feed records -> located readings, written from docs/feeds.md with plain code.

One reading per accepted record, as a row of a pandas DataFrame (see :data:`COLUMNS`); the
rejected ones are listed with their reason code. Positions come from the record or, for
registered sources, from the registry; every position is placed on the four-level map with
a geopandas spatial join (a point on a shared edge belongs to the unit with the lowest code,
the locator's documented tie rule).
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from tests.oracle.data import COLOURS, MAP_LEVELS, OracleData

#: One place on the map: (city, district, town, village) codes, '' where not located.
Place = tuple[str, str, str, str]
NOWHERE: Place = ("", "", "", "")

COLUMNS = ("feed", "arrival", "source_id", "sensor", "t", "observed_at", "values", "attrs",
           "lon", "lat", "exercise", "area_wkt", "place")

MAX_JSON_BYTES = 64 * 1024
CAP_NS = "{urn:oasis:names:tc:emergency:cap:1.2}"
SEVERITY = {"Extreme": 4, "Severe": 3, "Moderate": 2, "Minor": 1}
COLOUR_WORDS = {"红": 4, "橙": 3, "黄": 2, "蓝": 1}
COLOUR_TEXT = re.compile(r"([红橙黄蓝])色(?:预警|警报|信号)")
KM_PER_DEGREE = 111.32


class Rejected(Exception):
    """A record the documented schema refuses: ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(f"{reason} ({field})" if field else reason)
        self.reason = reason
        self.field = field


class Unsupported(Exception):
    """Input the oracle does not model (it says so rather than guess)."""


# -- JSON feeds -----------------------------------------------------------------------------

def _object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_JSON_BYTES:
        raise Rejected("too-large")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Rejected("invalid-json") from None
    if not isinstance(obj, dict):
        raise Rejected("invalid-json")
    return obj


def _text(obj: dict[str, Any], field: str, max_len: int = 64) -> str:
    value = obj.get(field)
    if value is None:
        raise Rejected("missing-field", field)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise Rejected("bad-field", field)
    return value.strip()


def _time(obj: dict[str, Any], field: str) -> datetime:
    value = obj.get(field)
    if value is None:
        raise Rejected("missing-field", field)
    if not isinstance(value, str):
        raise Rejected("bad-time", field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected("bad-time", field) from None
    if parsed.utcoffset() is None:
        raise Rejected("bad-time", field)
    return parsed


def _number(obj: dict[str, Any], field: str, low: float, high: float,
            required: bool = False) -> float | None:
    value = obj.get(field)
    if value is None:
        if required:
            raise Rejected("missing-field", field)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("bad-field", field)
    if not math.isfinite(value) or not low <= value <= high:
        raise Rejected("out-of-range", field)
    return float(value)


def _flag(obj: dict[str, Any]) -> bool:
    value = obj.get("exercise", False)
    if not isinstance(value, bool):
        raise Rejected("bad-field", "exercise")
    return value


def _position(obj: dict[str, Any]) -> tuple[float | None, float | None]:
    lon = _number(obj, "lon", -180.0, 180.0)
    lat = _number(obj, "lat", -90.0, 90.0)
    if (lon is None) != (lat is None):
        raise Rejected("bad-field", "lon")
    crs = obj.get("crs", "wgs84")
    if not isinstance(crs, str) or crs.lower() not in ("wgs84", "gcj02", "bd09"):
        raise Rejected("bad-field", "crs")
    if crs.lower() != "wgs84":
        raise Unsupported(f"the oracle does not convert {crs} coordinates")
    return lon, lat


def _choice(obj: dict[str, Any], field: str, choices: Sequence[str], default: str) -> str:
    value = obj.get(field, default)
    if not isinstance(value, str) or value not in choices:
        raise Rejected("bad-field", field)
    return value


def _water(obj: dict[str, Any]) -> tuple[str, str, dict[str, float], dict[str, str]]:
    level = _number(obj, "level_m", -50.0, 2000.0, required=True) or 0.0
    return _text(obj, "station_id"), "", {"level_m": level}, {}


def _weather(obj: dict[str, Any]) -> tuple[str, str, dict[str, float], dict[str, str]]:
    values: dict[str, float] = {}
    attrs: dict[str, str] = {}
    for field, high in (("rain_mm", 2000.0), ("rain_accum_mm", 2000.0),
                        ("wind_speed_ms", 120.0), ("wind_gust_ms", 120.0)):
        number = _number(obj, field, 0.0, high)
        if number is not None:
            values[field] = number
    if "rain_mm" in values and "rain_accum_mm" in values:
        raise Rejected("bad-field", "rain_accum_mm")
    if "rain_accum_mm" in values:
        attrs["accum_since"] = _time(obj, "accum_since").isoformat()
    if not values:
        raise Rejected("missing-field", "rain_mm")
    return _text(obj, "station_id"), "", values, attrs


def _geohazard(obj: dict[str, Any]) -> tuple[str, str, dict[str, float], dict[str, str]]:
    sensor = _choice(obj, "sensor", ("gnss", "crack", "inclinometer", "rain_gauge"), "")
    if sensor == "rain_gauge":
        values = {"rain_mm": _number(obj, "rain_mm", 0.0, 2000.0, required=True) or 0.0}
    else:
        values = {"displacement_mm": _number(obj, "displacement_mm", -1e5, 1e5,
                                             required=True) or 0.0}
    return _text(obj, "point_id"), sensor, values, {}


def _incident(obj: dict[str, Any]) -> tuple[str, str, dict[str, float], dict[str, str]]:
    if obj.get("lon") is None:
        raise Rejected("missing-field", "lon")
    attrs = {
        "category": _choice(obj, "category", (
            "fire", "traffic", "flood", "waterlogging", "landslide", "building_collapse",
            "hazmat", "drowning", "tree_down", "power", "other"), "other"),
        "status": _choice(obj, "status", (
            "reported", "dispatched", "on_scene", "handled", "closed"), "reported"),
        "channel": _choice(obj, "channel", ("110", "119", "120", "12345", "grid"), "grid")}
    values: dict[str, float] = {}
    for field in ("deaths", "injured", "trapped", "missing"):
        count = obj.get(field, 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise Rejected("bad-field", field)
        values[field] = float(count)
    return _text(obj, "incident_id", max_len=80), "", values, attrs


JSON_FEEDS = {"water": _water, "weather": _weather, "geohazard": _geohazard,
              "incident": _incident}


def parse_json(feed: str, raw: bytes) -> dict[str, Any]:
    """One JSON record of a feed as a reading (without its place), per docs/feeds.md."""
    if feed not in JSON_FEEDS:
        raise Unsupported(f"no JSON parser for feed {feed!r}")
    obj = _object(raw)
    lon, lat = _position(obj)
    source, sensor, values, attrs = JSON_FEEDS[feed](obj)
    observed = _time(obj, "observed_at")
    return {"feed": feed, "source_id": source, "sensor": sensor, "observed": observed,
            "values": values, "attrs": attrs, "lon": lon, "lat": lat,
            "exercise": _flag(obj), "area_wkt": ""}


# -- CAP ------------------------------------------------------------------------------------

def _cap_text(element: ET.Element, name: str) -> str:
    found = element.find(CAP_NS + name)
    return (found.text or "").strip() if found is not None and found.text else ""


def cap_level(info: ET.Element) -> int:
    """The colour a CAP info block names (预警颜色 parameter, then "X色预警/警报/信号" in the
    event, then the headline), else its severity (docs/feeds.md)."""
    for parameter in info.findall(CAP_NS + "parameter"):
        if _cap_text(parameter, "valueName") in ("预警颜色", "预警级别", "预警等级"):
            value = _cap_text(parameter, "value")
            if value[:1] in COLOUR_WORDS:
                return COLOUR_WORDS[value[:1]]
            if value.lower() in COLOURS:
                return COLOURS.index(value.lower()) + 1
    for text in (_cap_text(info, "event"), _cap_text(info, "headline")):
        mentions = COLOUR_TEXT.findall(text)
        if mentions:
            return COLOUR_WORDS[mentions[-1]]
    return SEVERITY.get(_cap_text(info, "severity"), 0)


def _cap_area(infos: list[ET.Element]) -> tuple[shapely.Geometry, shapely.Point]:
    """The first polygon or circle of the message, and a point in it (a polygon's
    representative point, a circle's centre)."""
    for info in infos:
        for element in info.findall(CAP_NS + "area"):
            polygon = element.find(CAP_NS + "polygon")
            if polygon is not None and polygon.text:
                pairs = [p.split(",") for p in polygon.text.split()]
                area = shapely.Polygon([(float(lon), float(lat)) for lat, lon in pairs])
                return area, area.representative_point()
            circle = element.find(CAP_NS + "circle")
            if circle is not None and circle.text:
                centre, radius = circle.text.split()
                lat, lon = (float(x) for x in centre.split(","))
                point = shapely.Point(lon, lat)
                return point.buffer(float(radius) / KM_PER_DEGREE), point
    raise Unsupported("CAP areas given only by geocodes are not modelled by the oracle")


def parse_cap(raw: bytes) -> dict[str, Any]:
    """A CAP 1.2 message as a reading: the warning's lineage, level and area.

    A plain reading of the message (the oracle's inputs come from our own scenarios); the
    schema validation and hostile-XML defences are the feed's business, not the oracle's.
    """
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise Rejected("hostile-xml")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        raise Rejected("invalid-xml") from None
    if root.tag != CAP_NS + "alert":
        raise Rejected("schema-invalid")
    status = _cap_text(root, "status")
    msg_type = _cap_text(root, "msgType")
    if status in ("System", "Draft"):
        raise Rejected("not-actionable", "status")
    infos = root.findall(CAP_NS + "info")
    if not infos:
        raise Rejected("no-info", "info")
    identifier = _cap_text(root, "identifier")
    lineage = identifier
    references = _cap_text(root, "references").split()
    if msg_type in ("Update", "Cancel") and references:
        lineage = references[0].split(",")[1]
    sent = datetime.fromisoformat(_cap_text(root, "sent"))
    best = max(infos, key=cap_level)
    level = 0 if msg_type == "Cancel" else cap_level(best)
    area, point = _cap_area(infos)
    return {"feed": "cap", "source_id": lineage[:200], "sensor": "", "observed": sent,
            "values": {"level": float(level)},
            "attrs": {"msg_type": msg_type, "status": status,
                      "event": _cap_text(best, "event")},
            "lon": float(point.x), "lat": float(point.y),
            "exercise": status in ("Exercise", "Test"), "area_wkt": area.wkt}


# -- locating -------------------------------------------------------------------------------

def _parents(data: OracleData) -> dict[str, str]:
    return {code: parent for frame in data.areas.values()
            for code, parent in zip(frame["code"], frame["parent_code"], strict=True)}


def chain_of(code: str, data: OracleData, parents: dict[str, str] | None = None) -> Place:
    """(city, district, town, village) codes of a unit and its ancestors."""
    parents = parents if parents is not None else _parents(data)
    codes: list[str] = []
    while code:
        codes.append(code)
        code = parents.get(code, "")
    codes.reverse()
    return tuple(codes + [""] * (4 - len(codes)))  # type: ignore[return-value]


def locate_points(lon: Sequence[float], lat: Sequence[float], data: OracleData) -> list[Place]:
    """The finest unit holding each point (boundaries inclusive; ties -> lowest code)."""
    unique = sorted(set(zip(lon, lat, strict=True)))
    if len(unique) < len(lon):  # sources report many times from one place: locate it once
        found = dict(zip(unique, locate_points([p[0] for p in unique], [p[1] for p in unique],
                                               data), strict=True))
        return [found[p] for p in zip(lon, lat, strict=True)]
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    finest: dict[int, str] = {}
    for level in reversed(MAP_LEVELS):
        todo = points.loc[[i for i in points.index if i not in finest]]
        if todo.empty:
            break
        joined = gpd.sjoin(todo, data.areas[level][["code", "geometry"]],
                           predicate="intersects", how="inner")
        finest.update(joined.groupby(level=0)["code"].min().to_dict())
    parents = _parents(data)
    return [chain_of(finest[i], data, parents) if i in finest else NOWHERE for i in points.index]


def locate_area(wkt: str, data: OracleData) -> Place:
    """The smallest unit that holds all of an area's overlap with the map (docs/feeds.md)."""
    area = shapely.from_wkt(wkt)
    codes: list[str] = []
    for level in MAP_LEVELS:
        frame = data.areas[level]
        if codes:
            frame = frame[frame["parent_code"] == codes[-1]]
        # planar area in degrees²: only whether the overlap is empty matters here
        overlap = shapely.area(shapely.intersection(frame.geometry.to_numpy(), area)) > 0
        if int(overlap.sum()) != 1:
            break
        codes.append(str(frame.loc[overlap, "code"].iloc[0]))
    return tuple(codes + [""] * (4 - len(codes)))  # type: ignore[return-value]


# -- the whole input --------------------------------------------------------------------------

def read_inputs(records: Mapping[str, Iterable[bytes]], data: OracleData,
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readings (one row per accepted record) and rejections, from each feed's raw records
    in topic order (``arrival`` is the record's position in its feed's topic)."""
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for feed, raws in records.items():
        for arrival, raw in enumerate(raws):
            try:
                row = parse_cap(raw) if feed == "cap" else parse_json(feed, raw)
                registry = data.registry(feed)
                if registry is not None:
                    if row["source_id"] not in registry.index:
                        raise Rejected("unknown-source",
                                       "point_id" if feed == "geohazard" else "station_id")
                    if row["lon"] is None:
                        entry = registry.loc[row["source_id"]]
                        row["lon"], row["lat"] = float(entry["lon"]), float(entry["lat"])
            except Rejected as exc:
                rejected.append({"feed": feed, "arrival": arrival, "reason": exc.reason,
                                 "field": exc.field})
                continue
            observed: datetime = row.pop("observed")
            row.update(arrival=arrival, t=observed.timestamp(), observed_at=observed)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "place"])
    if len(frame):
        places = locate_points(frame["lon"].tolist(), frame["lat"].tolist(), data)
        areas = {wkt: locate_area(wkt, data) for wkt in set(frame["area_wkt"]) if wkt}
        frame["place"] = [areas[wkt] if wkt else place
                          for wkt, place in zip(frame["area_wkt"], places, strict=True)]
    else:
        frame["place"] = pd.Series(dtype=object)
    return frame, pd.DataFrame(rejected, columns=["feed", "arrival", "reason", "field"])
