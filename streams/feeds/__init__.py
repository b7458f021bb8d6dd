"""Feed adapters: one module per department feed, each a pure ``parse(raw) -> Reading``.

A parser never raises anything but :class:`onemap.errors.InputRejected`, whose ``reason`` is a
stable code used as the dead-letter reason and metric label.
"""

from __future__ import annotations

from onemap.streams.feeds.base import Feed, Reading
from onemap.streams.feeds.capfeed import CAP
from onemap.streams.feeds.geohazard import GEOHAZARD
from onemap.streams.feeds.incident import INCIDENT
from onemap.streams.feeds.water import WATER
from onemap.streams.feeds.weather import WEATHER

FEEDS: dict[str, Feed] = {f.name: f for f in (WATER, WEATHER, GEOHAZARD, INCIDENT, CAP)}

__all__ = ["FEEDS", "Feed", "Reading"]
