"""Stage 1: raw feed records -> validated, located observations (or dead letters).

Pure batch logic: ``IngestStage.process`` takes a batch of raw records of one feed and returns
observations keyed by source plus dead letters. Locating is vectorised over the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from onemap.errors import InputRejected
from onemap.geo.crs import to_wgs84
from onemap.memo import per_object
from onemap.records import Observation, Place
from onemap.registries import Registries, WeatherStation
from onemap.streams.deadletter import Consumed, DeadLetter, RawRecord
from onemap.streams.feeds import FEEDS, Feed, Reading

#: Finds the place of each WGS84 point; one Place per point (``OUT_OF_AREA`` when outside).
PlaceFinder = Callable[[np.ndarray, np.ndarray], list[Place]]
#: Finds the place of an area (WKT polygon): the smallest unit holding all of it.
AreaFinder = Callable[[str], Place]
#: Finds the smallest unit holding the units named by codes, with a point inside it.
CodeFinder = Callable[[list[str]], tuple[Place, float, float] | None]
#: How many located points the stage keeps (each ~150 bytes).
LOCATED_MAX = 50_000


@dataclasses.dataclass
class IngestResult:
    observations: list[Observation] = dataclasses.field(default_factory=list)
    dead_letters: list[DeadLetter] = dataclasses.field(default_factory=list)


class _Source(NamedTuple):
    """What the stage needs of a record's source (a tuple: one is made per record, and a
    frozen dataclass's ``__init__`` costs several times as much)."""

    kind: str
    lon: float
    lat: float


@per_object(maxsize=100_000)
def _registered(entry: Any) -> _Source:
    """A registered source's kind and position (made once per registry entry: the entries
    do not change while they are loaded, a reload makes new ones)."""
    # not getattr(entry, "kind", default): for weather stations (no kind) that goes
    # through pydantic's __getattr__ and an AttributeError
    kind = "weather" if isinstance(entry, WeatherStation) else entry.kind
    return _Source(str(kind), entry.lon, entry.lat)


class Located(NamedTuple):
    """A point's place, and the point as observations carry it (rounded)."""

    place: Place
    lon: float
    lat: float


class IngestStage:
    """Parse, validate against the registries, convert coordinates, locate."""

    stage = "ingest"

    def __init__(
        self, find_places: PlaceFinder, registries: Registries,
        feeds: Mapping[str, Feed] = FEEDS, find_area: AreaFinder | None = None,
        find_codes: CodeFinder | None = None,
    ) -> None:
        self.find_places = find_places
        self.find_area = find_area
        self.find_codes = find_codes
        self.registries = registries
        self.feeds = feeds
        #: every point located so far (:meth:`_places`)
        self.located: dict[tuple[float, float], Located] = {}

    def _source(self, reading: Reading) -> _Source:
        """Where the source is and what kind it is, from its registry; unknown -> rejected."""
        registry = self.registries.for_feed(reading.feed)
        if registry is None:
            # incidents and CAP warnings have no registry: the record says where it is
            codes = reading.attrs.get("area_codes")
            if reading.lon is None and codes and self.find_codes is not None:
                found = self.find_codes(codes.split(","))
                if found is None:
                    raise InputRejected("out-of-area", f"no area code on the map: {codes:.60}",
                                        field="geocode")
                return _Source(reading.attrs.get("event") or reading.feed, found[1], found[2])
            if reading.lon is None or reading.lat is None:
                raise InputRejected("missing-field", "no position in the record", field="lon")
            kind = reading.attrs.get("category") or reading.attrs.get("event") or reading.feed
            return _Source(kind, reading.lon, reading.lat)
        entry = registry.get(reading.source_id)
        if entry is None:
            field = "point_id" if reading.feed == "geohazard" else "station_id"
            raise InputRejected(
                "unknown-source",
                f"{reading.source_id!r} is not in the {reading.feed} registry", field=field)
        return _registered(entry)

    def _on_globe(
        self, feed_name: str, accepted: list[tuple[Consumed, Reading, _Source]],
        lon: np.ndarray, lat: np.ndarray, result: IngestResult,
    ) -> tuple[list[tuple[Consumed, Reading, _Source]], np.ndarray, np.ndarray]:
        """Dead-letter the records whose converted position left the globe; the rest.

        BD-09/GCJ-02 shifts can push a point at the edge of the globe off it (found by
        fuzzing: bd09 lat -90 becomes -90.006), which the locator refuses for a whole batch.
        """
        on_globe = (np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0)
                    & (np.abs(lat) <= 90.0))
        if on_globe.all():
            return accepted, lon, lat
        for i in np.flatnonzero(~on_globe):
            record, reading, _ = accepted[i]
            result.dead_letters.append(DeadLetter(
                RawRecord.of(record), feed_name, self.stage, "out-of-range",
                f"{reading.crs} position ({reading.lon}, {reading.lat}) is off the globe in "
                f"WGS84 ({lon[i]}, {lat[i]})", "lat" if abs(lon[i]) <= 180.0 else "lon"))
        kept = [a for a, ok in zip(accepted, on_globe, strict=True) if ok]
        return kept, lon[on_globe], lat[on_globe]

    def _places(self, lon: np.ndarray, lat: np.ndarray) -> list[Located]:
        """The place of each point and the point rounded to 7 decimals (~1 cm, what the
        observation carries), each point located and rounded once: stations report from
        the same point again and again (a batch of 500 holds ~150 stations, a batch at a
        moderate rate each station once); locating was up to 6 % of a worker, and
        ``round(x, 7)`` (a correctly rounded decimal conversion) 10 % of ingest's
        instructions. The places are immutable, so the points at one position share one;
        the map does not change while the worker runs. At most ``LOCATED_MAX`` points are
        kept (incidents add new ones)."""
        located = self.located
        points = list(zip(lon.tolist(), lat.tolist(), strict=True))
        new = dict.fromkeys(p for p in points if p not in located)  # distinct, in order
        if new:
            if len(located) + len(new) > LOCATED_MAX:
                located.clear()
                new = dict.fromkeys(points)
            found = self.find_places(np.array([p[0] for p in new], dtype=np.float64),
                                     np.array([p[1] for p in new], dtype=np.float64))
            located.update((p, Located(place, round(p[0], 7), round(p[1], 7)))
                           for p, place in zip(new, found, strict=True))
        return [located[p] for p in points]

    def process(self, feed_name: str, records: Sequence[Consumed]) -> IngestResult:
        """``records``: as consumed (aiokafka's records, RawRecords); a record without a
        value (a tombstone) is rejected as an empty one. Each rejected record goes to the
        dead letters as a RawRecord."""
        result = IngestResult()
        feed = self.feeds.get(feed_name)
        if feed is None:
            result.dead_letters.extend(
                DeadLetter(RawRecord.of(r), feed_name, self.stage, "unknown-feed",
                           f"no parser for {feed_name!r}")
                for r in records)
            return result
        accepted: list[tuple[Consumed, Reading, _Source]] = []
        for record in records:
            try:
                reading = feed.parse(record.value or b"")
                accepted.append((record, reading, self._source(reading)))
            except InputRejected as exc:
                result.dead_letters.append(DeadLetter(RawRecord.of(record), feed_name,
                                                      self.stage, exc.reason, exc.detail,
                                                      exc.field))
        if not accepted:
            return result
        lons: list[float] = []
        lats: list[float] = []
        crs: list[str] = []
        for _, reading, source in accepted:
            if reading.lon is not None and reading.lat is not None:
                lons.append(reading.lon)
                lats.append(reading.lat)
                crs.append(reading.crs)
            else:
                lons.append(source.lon)
                lats.append(source.lat)
                crs.append("wgs84")
        lon = np.array(lons, dtype=np.float64)
        lat = np.array(lats, dtype=np.float64)
        for name in set(crs) - {"wgs84"}:
            mask = np.array([c == name for c in crs])
            lon[mask], lat[mask] = to_wgs84(lon[mask], lat[mask], name)
        accepted, lon, lat = self._on_globe(feed_name, accepted, lon, lat, result)
        if not accepted:
            return result
        for (_, reading, source), (point_place, x, y) in zip(
                accepted, self._places(lon, lat), strict=True):
            place = point_place
            if "area_wkt" in reading.attrs and self.find_area is not None:
                place = self.find_area(reading.attrs["area_wkt"])
            elif "area_codes" in reading.attrs and self.find_codes is not None:
                found = self.find_codes(reading.attrs["area_codes"].split(","))
                place = found[0] if found is not None else place
            result.observations.append(Observation(
                feed=reading.feed, source_id=reading.source_id, source_kind=source.kind,
                observed_at=reading.observed_at, event=reading.event,
                lon=x, lat=y, place=place, values=reading.values,
                exercise=reading.exercise, attrs=reading.attrs,
            ))
        return result
