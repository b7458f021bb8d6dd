"""Record types that travel between stages, and their JSON form on the topics.

Every record carries its event time (``observed_at``, from the feed) separately from the time
OneMap handled it. Times are timezone-aware; JSON uses ISO 8601 with an offset.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from onemap.levels import WarningLevel
from onemap.memo import per_object


def dumps(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


#: The partition key and area code of what lies on no unit of the map.
OUT_OF_AREA_CODE = "out-of-area"


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Where something is on the four-level map; empty codes mean not located at that level."""

    city_code: str = ""
    city_name: str = ""
    district_code: str = ""
    district_name: str = ""
    town_code: str = ""
    town_name: str = ""
    village_code: str = ""
    village_name: str = ""

    @property
    def in_area(self) -> bool:
        return bool(self.city_code)

    @property
    def area_code(self) -> str:
        """The most precise code known: the unit something is placed on (hazards are
        partitioned by their district instead: onemap.rules.lifecycle.rank_area)."""
        return self.village_code or self.town_code or self.district_code or self.city_code \
            or OUT_OF_AREA_CODE

    @property
    def label(self) -> str:
        """Place as officers write it: 金湾区平沙镇美平社区."""
        return "".join(n for n in (self.district_name, self.town_name, self.village_name) if n) \
            or "辖区外"

    def to_dict(self) -> dict[str, str]:
        # Written out rather than dataclasses.asdict (which deep-copies field by field):
        # this runs for every record on the hot path (half of ingest's own time was asdict,
        # benchmarks/results/pipeline.md). Same keys in field order: the JSON is unchanged.
        return {"city_code": self.city_code, "city_name": self.city_name,
                "district_code": self.district_code, "district_name": self.district_name,
                "town_code": self.town_code, "town_name": self.town_name,
                "village_code": self.village_code, "village_name": self.village_name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Place:
        # Every record on the observations topic carries its place, and a map has only a
        # few thousand: the Place of a dict as to_dict writes it is kept under its most
        # precise code and given again for an equal dict (eight keys and values compared,
        # nothing built or hashed but the code).
        code = d.get("village_code") or d.get("town_code") or d.get("district_code") \
            or d.get("city_code") or ""
        kept = type(code) is str
        found = _PLACES.get(code) if kept else None
        if found is not None and found[1] == d:
            return found[0]
        place = cls(*[str(d.get(k, "")) for k in _PLACE_KEYS])
        as_dict = place.to_dict()
        if kept and as_dict == d:
            if len(_PLACES) >= _PLACES_MAX:
                _PLACES.clear()
            _PLACES[code] = (place, as_dict)
        return place


_PLACE_KEYS = [f.name for f in dataclasses.fields(Place)]
#: the Places decoded so far and their dicts, by their most precise code (Place.from_dict)
_PLACES: dict[str, tuple[Place, dict[str, str]]] = {}
_PLACES_MAX = 100_000
OUT_OF_AREA = Place()


@per_object(maxsize=_PLACES_MAX)
def place_json(place: Place) -> orjson.Fragment:
    """``place.to_dict()`` as JSON, encoded once per Place object: every observation carries
    its place (eight codes and names, half of its bytes), and the locator and the decoder
    hand out the same few thousand Place objects again and again."""
    return orjson.Fragment(orjson.dumps(place.to_dict()))


@per_object(maxsize=_PLACES_MAX)
def place_dict(place: Place) -> dict[str, str]:
    """``place.to_dict()``, made once per Place object and shared: the rules stage keeps
    each source's latest place in its state at every reading. Never change it."""
    return place.to_dict()


class EventTime(NamedTuple):
    """An event time's text parsed: the time, its epoch seconds and its ISO 8601 form."""

    at: datetime
    seconds: float
    iso: str


@functools.lru_cache(maxsize=4096)
def event_time(text: str) -> EventTime:
    """An ISO 8601 time with a UTC offset, in the years 1-9999 in UTC (else ValueError
    saying which it is not).

    Kept per text: the sources of a feed report at the same instants (every station at
    10:05:00+08:00), and an aware datetime's ``timestamp()`` and ``isoformat()`` cost
    ~6,000 and ~14,000 instructions (``bench_stages --instructions``), once per record and
    hop before. Times are immutable, so the records share them.

    >>> event_time("2017-08-23T12:00:00+08:00").seconds
    1503460800.0
    >>> event_time("2017-08-23T12:00:00")
    Traceback (most recent call last):
    ...
    ValueError: has no UTC offset (add +08:00)
    """
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not ISO 8601") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("has no UTC offset (add +08:00)")
    if at.year in (1, 9999):  # only there can a UTC offset leave datetime's range
        try:  # e.g. 0001-01-01T00:00:00+08:00: later stages compare and show times in UTC
            at.astimezone(UTC)
        except OverflowError:
            raise ValueError("is outside the years 1-9999 in UTC") from None
    return EventTime(at, at.timestamp(), at.isoformat())


@dataclasses.dataclass(slots=True)
class Observation:
    """One validated reading from a feed, located on the map.

    ``values`` holds the measured quantities in base units named with their unit
    (``level_m``, ``rain_mm``); ``source_kind`` says what kind of source produced it.

    A value like the other records, but not ``frozen``: a frozen dataclass sets each field
    through ``object.__setattr__``, and its ``__init__`` (~2.4× a plain one's) was a share
    of every reading's cost (two observations per reading: ingest makes one, rules decode
    one; the same for the parsers' ``Reading`` and the consumed ``RawRecord``). Nothing
    changes one after it is made.
    """

    feed: str
    source_id: str
    source_kind: str
    observed_at: datetime
    lon: float
    lat: float
    place: Place
    values: dict[str, float]
    exercise: bool = False
    attrs: dict[str, str] = dataclasses.field(default_factory=dict)
    #: ``observed_at`` parsed from its text with its seconds and ISO form (by the feed's
    #: parser or :meth:`from_json`: ``event.at is observed_at``), else None: they are then
    #: read off it instead of computed for every record and hop. Not part of the record's
    #: value (compared, shown or written as such).
    event: EventTime | None = dataclasses.field(default=None, compare=False, repr=False)

    def event_seconds(self) -> float:
        """``observed_at`` as epoch seconds."""
        event = self.event
        return event.seconds if event is not None else self.observed_at.timestamp()

    def observed_at_iso(self) -> str:
        """``observed_at.isoformat()``."""
        event = self.event
        return event.iso if event is not None else self.observed_at.isoformat()

    def to_json(self) -> bytes:
        return dumps({
            "feed": self.feed, "source_id": self.source_id, "source_kind": self.source_kind,
            "observed_at": self.observed_at_iso(), "lon": self.lon, "lat": self.lat,
            "place": place_json(self.place), "values": self.values, "exercise": self.exercise,
            "attrs": self.attrs,
        })

    @classmethod
    def from_json(cls, raw: bytes) -> Observation:
        d = loads(raw)
        # positional, in field order (a keyword call costs more), as every reading is
        # decoded here
        text = d["observed_at"]
        if not isinstance(text, str):
            raise TypeError(f"observed_at must be a string, got {type(text).__name__}")
        event = event_time(text)
        return cls(d["feed"], d["source_id"], d["source_kind"], event.at, d["lon"], d["lat"],
                   Place.from_dict(d["place"]), d["values"], d["exercise"],
                   d.get("attrs", {}), event)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyFigure:
    """The one number that explains a hazard: 水位 3.52 米, 警戒水位 3.20 米."""

    name: str
    value: float
    unit: str
    threshold_name: str = ""
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "threshold_name": self.threshold_name, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyFigure:
        return cls(**d)


@dataclasses.dataclass(frozen=True, slots=True)
class Hazard:
    """One hazard state change: a source's warning level moved (or it ended: level NONE)."""

    hazard_id: str
    hazard_type: str
    feed: str
    source_id: str
    source_name: str
    level: WarningLevel
    previous_level: WarningLevel
    place: Place
    lon: float
    lat: float
    observed_at: datetime
    key_figure: KeyFigure
    reason: str
    rule_id: str
    rule_version: str
    exercise: bool = False
    #: direction (rising/steady/falling), rate per hour, hours to the next level.
    trend: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hazard_id": self.hazard_id, "hazard_type": self.hazard_type, "feed": self.feed,
            "source_id": self.source_id, "source_name": self.source_name,
            "level": self.level.label, "previous_level": self.previous_level.label,
            "place": self.place.to_dict(), "lon": self.lon, "lat": self.lat,
            "observed_at": self.observed_at.isoformat(), "key_figure": self.key_figure.to_dict(),
            "reason": self.reason, "rule_id": self.rule_id, "rule_version": self.rule_version,
            "exercise": self.exercise, "trend": self.trend,
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hazard:
        return cls(
            hazard_id=d["hazard_id"], hazard_type=d["hazard_type"], feed=d["feed"],
            source_id=d["source_id"], source_name=d["source_name"],
            level=WarningLevel.parse(d["level"]),
            previous_level=WarningLevel.parse(d["previous_level"]),
            place=Place.from_dict(d["place"]), lon=d["lon"], lat=d["lat"],
            observed_at=datetime.fromisoformat(d["observed_at"]),
            key_figure=KeyFigure.from_dict(d["key_figure"]), reason=d["reason"],
            rule_id=d["rule_id"], rule_version=d["rule_version"], exercise=d["exercise"],
            trend=d.get("trend", {}),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Hazard:
        return cls.from_dict(loads(raw))


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One transition of an alert's lifecycle, as written to the ``onemap.alerts`` ledger.

    ``alert_id`` (hazard id + sequence number) is the idempotency key of every sink.
    """

    alert_id: str
    hazard_id: str
    seq: int
    transition: str
    level: WarningLevel
    previous_level: WarningLevel
    hazard: Hazard
    score: float
    score_breakdown: dict[str, float]
    issued_at: datetime
    #: what notifications do with this transition: "send", or why not ("inhibited",
    #: "silenced"); the wall shows every transition whatever this says.
    notify: str = "send"
    #: why (e.g. the inhibiting alert id, the silence id and its reason); empty for "send".
    notify_reason: str = ""
    #: (alert id, issued at) of the earlier transitions of this alert since it was new,
    #: oldest first: the references of its CAP Update / Cancel (rules/cap_render.py).
    earlier: tuple[tuple[str, datetime], ...] = ()

    @property
    def status(self) -> str:
        return "exercise" if self.hazard.exercise else "actual"

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "hazard_id": self.hazard_id, "seq": self.seq,
            "transition": self.transition, "level": self.level.label,
            "previous_level": self.previous_level.label, "status": self.status,
            "hazard": self.hazard.to_dict(), "score": self.score,
            "score_breakdown": self.score_breakdown, "issued_at": self.issued_at.isoformat(),
            "notify": self.notify, "notify_reason": self.notify_reason,
            "earlier": [[a, t.isoformat()] for a, t in self.earlier],
        }

    def to_json(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        d = loads(raw)
        return cls(
            alert_id=d["alert_id"], hazard_id=d["hazard_id"], seq=d["seq"],
            transition=d["transition"], level=WarningLevel.parse(d["level"]),
            previous_level=WarningLevel.parse(d["previous_level"]),
            hazard=Hazard.from_dict(d["hazard"]), score=d["score"],
            score_breakdown=d["score_breakdown"],
            issued_at=datetime.fromisoformat(d["issued_at"]),
            notify=d.get("notify", "send"), notify_reason=d.get("notify_reason", ""),
            earlier=tuple((str(a), datetime.fromisoformat(t)) for a, t in d.get("earlier", [])),
        )
