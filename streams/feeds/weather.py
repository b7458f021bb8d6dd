"""Weather-station feed: rainfall and wind (``onemap.in.weather``).

::

    {"station_id": "ZH-AWS-026", "observed_at": "2017-08-23T12:00:00+08:00",
     "rain_mm": 12.5, "wind_speed_ms": 21.3, "wind_gust_ms": 33.0}

Rainfall comes either as ``rain_mm`` (the increment since the station's previous report) or
as ``rain_accum_mm`` with ``accum_since`` (an accumulation since a reset time, as many
gateways send it, e.g. since 08:00 or 20:00 Beijing time); OneMap turns accumulations into
increments. ``wind_speed_ms`` is the 10-minute mean wind and ``wind_gust_ms`` the extreme
gust, both in m/s. At least one measurement is required.
"""

from __future__ import annotations

from onemap.errors import InputRejected
from onemap.streams.feeds.base import (
    Feed,
    Reading,
    decode_object,
    number_within,
    optional_bool,
    optional_position,
    require_event_time,
    require_str,
    require_time,
)

#: Physical bounds: the world record hourly rain is ~305 mm; the strongest gust ~113 m/s.
RAIN_MAX_MM = 2000.0
WIND_MAX_MS = 120.0
#: The measurements a record may carry, with their upper bounds (all are at least 0).
MEASURES = (("rain_mm", RAIN_MAX_MM), ("rain_accum_mm", RAIN_MAX_MM),
            ("wind_speed_ms", WIND_MAX_MS), ("wind_gust_ms", WIND_MAX_MS))


def parse_weather(raw: bytes) -> Reading:
    """Parse one weather record.

    >>> r = parse_weather(b'{"station_id":"A","observed_at":"2017-08-23T12:00:00+08:00",'
    ...                   b'"rain_mm":3.5,"wind_gust_ms":30}')
    >>> sorted(r.values.items())
    [('rain_mm', 3.5), ('wind_gust_ms', 30.0)]
    """
    obj = decode_object(raw)
    lon, lat, crs = optional_position(obj)
    values: dict[str, float] = {}
    attrs: dict[str, str] = {}
    for field, high in MEASURES:
        value = obj.get(field)
        if value is not None:
            values[field] = number_within(value, field, 0.0, high)
    if "rain_mm" in values and "rain_accum_mm" in values:
        raise InputRejected("bad-field", "give rain_mm or rain_accum_mm, not both",
                            field="rain_accum_mm")
    if "rain_accum_mm" in values:
        attrs["accum_since"] = require_time(obj, "accum_since").isoformat()
    if not values:
        raise InputRejected("missing-field", "no measurement: give rain_mm, rain_accum_mm, "
                            "wind_speed_ms or wind_gust_ms", field="rain_mm")
    return Reading(feed="weather", source_id=require_str(obj, "station_id"),
                   observed_at=(event := require_event_time(obj, "observed_at")).at,
                   event=event, values=values, lon=lon,
                   lat=lat, crs=crs, exercise=optional_bool(obj, "exercise"), attrs=attrs)


WEATHER = Feed(name="weather", parse=parse_weather, time_field="observed_at",
               description="Automatic weather stations: rainfall and wind")
