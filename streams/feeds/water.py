"""Water-level feed: river, reservoir, tide and waterlogging stations (``onemap.in.water``).

One JSON object per record::

    {"station_id": "ZH-RIV-001", "observed_at": "2017-08-23T12:00:00+08:00",
     "level_m": 3.52, "lon": 113.53, "lat": 22.24, "crs": "wgs84", "exercise": false}

``level_m`` is the water level in metres above the station's datum (for waterlogging points:
ponding depth in metres). ``lon``/``lat`` are optional (the station registry knows where the
station is); ``crs`` is ``wgs84`` (default), ``gcj02`` or ``bd09``.
"""

from __future__ import annotations

from onemap.streams.feeds.base import (
    Feed,
    Reading,
    decode_object,
    optional_bool,
    optional_position,
    require_event_time,
    require_number,
    require_str,
)

#: Plausible physical bounds: below sea datum by 50 m to 2,000 m above (mountain reservoirs).
LEVEL_RANGE_M = (-50.0, 2000.0)


def parse_water(raw: bytes) -> Reading:
    """Parse one water-level record.

    >>> r = parse_water(b'{"station_id":"ZH-RIV-001","observed_at":"2017-08-23T12:00:00+08:00",'
    ...                 b'"level_m":3.5}')
    >>> (r.source_id, r.values["level_m"], r.observed_at.utcoffset().seconds)
    ('ZH-RIV-001', 3.5, 28800)
    """
    obj = decode_object(raw)
    lon, lat, crs = optional_position(obj)
    return Reading(
        feed="water",
        source_id=require_str(obj, "station_id"),
        observed_at=(event := require_event_time(obj, "observed_at")).at, event=event,
        values={"level_m": require_number(obj, "level_m", low=LEVEL_RANGE_M[0],
                                          high=LEVEL_RANGE_M[1])},
        lon=lon, lat=lat, crs=crs,
        exercise=optional_bool(obj, "exercise"),
    )


WATER = Feed(
    name="water", parse=parse_water, time_field="observed_at",
    description="River, reservoir, tide and waterlogging station levels",
)
