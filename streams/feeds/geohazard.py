"""Geological-hazard monitoring feed (``onemap.in.geohazard``).

One record per sensor reading at a hazard point (隐患点)::

    {"point_id": "ZH-GEO-001", "observed_at": "2017-08-23T12:00:00+08:00",
     "sensor": "gnss", "displacement_mm": 35.2}
    {"point_id": "ZH-GEO-001", "observed_at": "2017-08-23T12:00:00+08:00",
     "sensor": "rain_gauge", "rain_mm": 6.0}

``displacement_mm`` is the cumulative displacement since installation (GNSS surface
displacement, crack width change, or inclinometer deep displacement); ``rain_mm`` the
increment since the gauge's previous report.
"""

from __future__ import annotations

from onemap.errors import InputRejected
from onemap.streams.feeds.base import (
    Feed,
    Reading,
    decode_object,
    optional_bool,
    optional_choice,
    optional_number,
    optional_position,
    require_event_time,
    require_str,
)

SENSORS = ("gnss", "crack", "inclinometer", "rain_gauge")


def parse_geohazard(raw: bytes) -> Reading:
    """Parse one hazard-point sensor record.

    >>> r = parse_geohazard(b'{"point_id":"P","observed_at":"2017-08-23T12:00:00+08:00",'
    ...                     b'"sensor":"crack","displacement_mm":4.2}')
    >>> r.values, r.attrs
    ({'displacement_mm': 4.2}, {'sensor': 'crack'})
    """
    obj = decode_object(raw)
    lon, lat, crs = optional_position(obj)
    sensor = optional_choice(obj, "sensor", SENSORS)
    if sensor is None:
        raise InputRejected("missing-field", "field 'sensor' is required", field="sensor")
    values: dict[str, float] = {}
    if sensor == "rain_gauge":
        rain = optional_number(obj, "rain_mm", low=0.0, high=2000.0)
        if rain is None:
            raise InputRejected("missing-field", "a rain_gauge record needs rain_mm",
                                field="rain_mm")
        values["rain_mm"] = rain
    else:
        moved = optional_number(obj, "displacement_mm", low=-100_000.0, high=100_000.0)
        if moved is None:
            raise InputRejected("missing-field", f"a {sensor} record needs displacement_mm",
                                field="displacement_mm")
        values["displacement_mm"] = moved
    return Reading(feed="geohazard", source_id=require_str(obj, "point_id"),
                   observed_at=(event := require_event_time(obj, "observed_at")).at,
                   event=event, values=values, lon=lon,
                   lat=lat, crs=crs, exercise=optional_bool(obj, "exercise"),
                   attrs={"sensor": sensor})


GEOHAZARD = Feed(name="geohazard", parse=parse_geohazard, time_field="observed_at",
                 description="Hazard-point GNSS/crack/inclinometer displacement and rain gauges")
