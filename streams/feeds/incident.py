"""Incident feed: 110 / 119 / 120 / 12345 and grid reports (``onemap.in.incident``).

::

    {"incident_id": "119-20170823-0042", "observed_at": "2017-08-23T12:40:00+08:00",
     "channel": "119", "category": "building_collapse", "status": "reported",
     "description": "...", "lon": 113.57, "lat": 22.27, "deaths": 0, "injured": 3,
     "trapped": 2}

Later records with the same ``incident_id`` update it (``status``: reported, dispatched,
on_scene, handled, closed; casualty figures are the latest known totals). ``description``
comes from the public: it is untrusted text, cleaned and capped, and always escaped.
"""

from __future__ import annotations

from onemap.errors import InputRejected
from onemap.streams.feeds.base import (
    Feed,
    Reading,
    clean_text,
    decode_object,
    optional_bool,
    optional_choice,
    optional_count,
    optional_position,
    require_event_time,
    require_str,
)

CHANNELS = ("110", "119", "120", "12345", "grid")
CATEGORIES = ("fire", "traffic", "flood", "waterlogging", "landslide", "building_collapse",
              "hazmat", "drowning", "tree_down", "power", "other")
STATUSES = ("reported", "dispatched", "on_scene", "handled", "closed")


def parse_incident(raw: bytes) -> Reading:
    """Parse one incident report or update.

    >>> r = parse_incident(b'{"incident_id":"I1","observed_at":"2017-08-23T12:00:00+08:00",'
    ...     b'"channel":"119","category":"fire","lon":113.5,"lat":22.2,"injured":2,'
    ...     b'"description":"<b>fire</b>\\\\u0000"}')
    >>> r.attrs["status"], r.values["injured"], r.attrs["description"]
    ('reported', 2.0, '<b>fire</b>')
    """
    obj = decode_object(raw)
    lon, lat, crs = optional_position(obj)
    if lon is None:
        raise InputRejected("missing-field", "an incident needs lon and lat", field="lon")
    attrs = {
        "channel": optional_choice(obj, "channel", CHANNELS, "grid") or "grid",
        "category": optional_choice(obj, "category", CATEGORIES, "other") or "other",
        "status": optional_choice(obj, "status", STATUSES, "reported") or "reported",
        "description": clean_text(obj, "description"),
    }
    values = {field: float(optional_count(obj, field))
              for field in ("deaths", "injured", "trapped", "missing")}
    return Reading(feed="incident", source_id=require_str(obj, "incident_id", max_len=80),
                   observed_at=(event := require_event_time(obj, "observed_at")).at,
                   event=event, values=values, lon=lon,
                   lat=lat, crs=crs, exercise=optional_bool(obj, "exercise"), attrs=attrs)


INCIDENT = Feed(name="incident", parse=parse_incident, time_field="observed_at",
                description="110/119/120/12345 and grid incident reports and their updates")
