"""What every feed parser shares: the Reading type and strict field helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from onemap.errors import InputRejected
from onemap.records import EventTime, event_time

MAX_RECORD_BYTES = 64 * 1024

CRS_NAMES = ("wgs84", "gcj02", "bd09")


@dataclasses.dataclass(slots=True)  # not frozen: see onemap.records.Observation
class Reading:
    """A parsed, validated feed record, not yet located. Coordinates are as sent (``crs``)."""

    feed: str
    source_id: str
    observed_at: datetime
    values: dict[str, float]
    lon: float | None = None
    lat: float | None = None
    crs: str = "wgs84"
    exercise: bool = False
    #: Text facts of the record (incident category, status, sensor type); never numbers.
    attrs: dict[str, str] = dataclasses.field(default_factory=dict)
    #: ``observed_at`` with its seconds and ISO form (records.Observation.event)
    event: EventTime | None = None


@dataclasses.dataclass(frozen=True)
class Feed:
    """A department feed: its name (``onemap.in.<name>``), parser and event-time field."""

    name: str
    parse: Callable[[bytes], Reading]
    time_field: str
    description: str


def decode_object(raw: bytes) -> dict[str, Any]:
    """The record as a JSON object, or InputRejected saying why not."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InputRejected("too-large", f"record is {len(raw)} bytes; limit {MAX_RECORD_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputRejected("invalid-json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputRejected("invalid-json", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def require_str(obj: dict[str, Any], field: str, *, max_len: int = 64) -> str:
    value = obj.get(field)
    if value is None:
        raise InputRejected("missing-field", f"field {field!r} is required", field=field)
    if not isinstance(value, str) or not (text := value.strip()):
        raise InputRejected("bad-field", f"field {field!r} must be a non-empty string",
                            field=field)
    if len(value) > max_len:
        raise InputRejected("bad-field", f"field {field!r} is longer than {max_len}", field=field)
    return text


def require_number(obj: dict[str, Any], field: str, *, low: float, high: float) -> float:
    value = obj.get(field)
    if value is None:
        raise InputRejected("missing-field", f"field {field!r} is required", field=field)
    return number_within(value, field, low, high)


def optional_number(
    obj: dict[str, Any], field: str, *, low: float, high: float,
) -> float | None:
    value = obj.get(field)
    return None if value is None else number_within(value, field, low, high)


def number_within(value: Any, field: str, low: float, high: float) -> float:
    """``value`` as a float within [``low``, ``high``] (both finite), else InputRejected.

    Every reading has a few numbers: the JSON decoder's own types (float, int; a bool is
    neither) are told apart by their exact type first, and the bounds, being finite, also
    refuse an infinite or NaN value (NaN compares false).

    >>> number_within(3, "x", 0.0, 10.0), number_within(2.5, "x", 0.0, 10.0)
    (3.0, 2.5)
    >>> number_within(True, "x", 0.0, 10.0)
    Traceback (most recent call last):
    ...
    onemap.errors.InputRejected: bad-field: field 'x' must be a number, got True
    >>> number_within(float("nan"), "x", 0.0, 10.0)
    Traceback (most recent call last):
    ...
    onemap.errors.InputRejected: out-of-range: field 'x' = nan is outside [0.0, 10.0]
    """
    kind = type(value)
    number: float
    if kind is float:
        number = value
    elif kind is int or (isinstance(value, int | float) and not isinstance(value, bool)):
        number = float(value)
    else:
        raise InputRejected("bad-field", f"field {field!r} must be a number, got {value!r:.40}",
                            field=field)
    if not low <= number <= high:
        raise InputRejected("out-of-range",
                            f"field {field!r} = {number} is outside [{low}, {high}]", field=field)
    return number


def require_time(obj: dict[str, Any], field: str) -> datetime:
    """An ISO 8601 time with a UTC offset; a naive time is ambiguous and rejected."""
    return require_event_time(obj, field).at


def require_event_time(obj: dict[str, Any], field: str) -> EventTime:
    """:func:`require_time` with its seconds and ISO form (kept per text:
    records.event_time)."""
    value = obj.get(field)
    if value is None:
        raise InputRejected("missing-field", f"field {field!r} is required", field=field)
    if not isinstance(value, str):
        raise InputRejected("bad-time", f"field {field!r} must be an ISO 8601 string",
                            field=field)
    try:
        return event_time(value)
    except ValueError as exc:
        raise InputRejected("bad-time", f"field {field!r} = {value!r:.40} {exc}",
                            field=field) from None


def optional_position(obj: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """lon/lat (both or neither) and their coordinate system."""
    if "lon" not in obj and "lat" not in obj and "crs" not in obj:
        return None, None, "wgs84"  # a registered station's record: its registry says where
    lon = optional_number(obj, "lon", low=-180.0, high=180.0)
    lat = optional_number(obj, "lat", low=-90.0, high=90.0)
    if (lon is None) != (lat is None):
        raise InputRejected("bad-field", "give both lon and lat, or neither",
                            field="lon" if lon is None else "lat")
    crs = obj.get("crs", "wgs84")
    if not isinstance(crs, str) or crs.lower() not in CRS_NAMES:
        raise InputRejected("bad-field", f"crs must be one of {', '.join(CRS_NAMES)}",
                            field="crs")
    return lon, lat, crs.lower()


def optional_choice(obj: dict[str, Any], field: str, choices: tuple[str, ...],
                    default: str | None = None) -> str | None:
    value = obj.get(field, default)
    if value is None:
        return None
    if not isinstance(value, str) or value not in choices:
        raise InputRejected("bad-field", f"field {field!r} must be one of {', '.join(choices)}",
                            field=field)
    return value


def optional_count(obj: dict[str, Any], field: str, *, high: int = 100_000) -> int:
    """A non-negative whole number (people, households); absent means 0."""
    value = obj.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InputRejected("bad-field", f"field {field!r} must be a whole number 0..{high}",
                            field=field)
    return value


def clean_text(obj: dict[str, Any], field: str, *, max_len: int = 500) -> str:
    """Untrusted free text (e.g. from the public): control characters removed, length capped.

    It is stored as text and escaped wherever it is shown; it never becomes markup or code.
    """
    value = obj.get(field, "")
    if not isinstance(value, str):
        raise InputRejected("bad-field", f"field {field!r} must be a string", field=field)
    cleaned = "".join(ch for ch in value if ch.isprintable() or ch == " ")
    return cleaned[:max_len].strip()


def optional_bool(obj: dict[str, Any], field: str) -> bool:
    value = obj.get(field, False)
    if not isinstance(value, bool):
        raise InputRejected("bad-field", f"field {field!r} must be true or false", field=field)
    return value
