"""The CAP feed (``onemap.in.cap``): a CAP 1.2 warning message as one OneMap reading.

A warning is an area hazard issued by another authority (the met bureau, the water or
natural-resources department). Its source id is the *lineage* of the message: an Alert's own
identifier, or for an Update or Cancel the identifier of the first message it references, so
every message about one warning updates the same hazard. The reading's position is a point
inside the warning's first polygon or circle; the area itself travels as WKT for area
queries. The most severe ``info`` block speaks for the message.
"""

from __future__ import annotations

from shapely import Point

from onemap.errors import InputRejected
from onemap.levels import WarningLevel
from onemap.streams.feeds.base import Feed, Reading
from onemap.streams.feeds.cap import CapAlert, CapInfo, cap_warning_level, parse_cap

DEGREES_PER_KM = 1 / 111.32


def lineage(alert: CapAlert) -> str:
    """The identifier that all messages of one warning share."""
    if alert.msg_type in ("Update", "Cancel") and alert.references:
        return alert.references[0].identifier
    return alert.identifier


def _area(info: CapInfo) -> tuple[float, float, str] | None:
    for area in info.areas:
        if area.polygons:
            polygon = area.polygons[0]
            point = polygon.representative_point()
            return point.x, point.y, polygon.wkt
        if area.circles:
            c = area.circles[0]
            disc = Point(c.lon, c.lat).buffer(c.radius_km * DEGREES_PER_KM)
            return c.lon, c.lat, disc.wkt
    return None


def parse_cap_reading(raw: bytes) -> Reading:
    """A CAP message as a reading: level from severity (or the Chinese colour), the area."""
    alert = parse_cap(raw)
    if alert.status in ("System", "Draft"):
        raise InputRejected("not-actionable", f"CAP status {alert.status} is never acted on",
                            field="status")
    if not alert.infos:
        raise InputRejected("no-info", "the CAP message has no <info> block", field="info")
    info = max(alert.infos, key=cap_warning_level)
    level = WarningLevel.NONE if alert.msg_type == "Cancel" else cap_warning_level(info)
    where = next((a for a in (_area(i) for i in alert.infos) if a is not None), None)
    codes = [v for i in alert.infos for a in i.areas for values in a.geocodes.values()
             for v in values if v.isdigit() and len(v) in (6, 9, 12)]
    if where is None and not codes:
        raise InputRejected("no-geometry", "no <polygon>, <circle> or administrative geocode "
                            "(6/9/12-digit code) in any <area>", field="area")
    lon, lat, wkt = where if where is not None else (None, None, "")
    attrs = {
        "identifier": alert.identifier, "msg_type": alert.msg_type, "status": alert.status,
        "event": info.event[:80], "severity": info.severity, "urgency": info.urgency,
        "certainty": info.certainty, "headline": (info.headline or info.event)[:200],
        "area_desc": "；".join(a.area_desc for a in info.areas)[:200],
        "expires": info.expires.isoformat() if info.expires else "",
        "sender_name": (info.sender_name or alert.sender)[:80],
    }
    if wkt:
        attrs["area_wkt"] = wkt
    else:  # located by its administrative codes (GB/T 2260 and the statistical codes)
        attrs["area_codes"] = ",".join(codes[:50])
    return Reading(feed="cap", source_id=lineage(alert)[:200], observed_at=alert.sent,
                   values={"level": float(level)}, lon=lon, lat=lat,
                   exercise=alert.status in ("Exercise", "Test"), attrs=attrs)


CAP = Feed(name="cap", parse=parse_cap_reading, time_field="sent",
           description="CAP 1.2 warning messages from other authorities")
