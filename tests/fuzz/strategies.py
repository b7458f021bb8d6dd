"""Generators of hostile, broken and valid feed records, shared by the fuzz tests.

Each generator takes a ``random.Random`` and returns one :class:`Case` (see harness.py for why
these are plain functions of a seeded random source rather than hypothesis strategies).
Three families are mixed in every run: (a) random bytes and token soup (bytes built from the
format's own tokens, so they get past the first byte); (b) valid records with one to three
structure-aware mutations (a field dropped, set to a nasty value, duplicated or renamed, an
unknown field added) and sometimes damaged bytes; (c) valid records in legal variations, each
with a check of the Reading the parser must produce from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from random import Random
from typing import Any

from onemap.errors import InputRejected
from onemap.streams.feeds.base import CRS_NAMES, Reading
from onemap.streams.feeds.geohazard import SENSORS
from onemap.streams.feeds.incident import CATEGORIES, CHANNELS, STATUSES

#: The dead-letter reasons docs/feeds.md documents (its "Dead-letter reasons" table).
DOCUMENTED_REASONS = frozenset({
    "invalid-json", "too-large", "missing-field", "bad-field", "out-of-range", "bad-time",
    "unknown-source", "too-late", "invalid-xml", "hostile-xml", "schema-invalid",
    "bad-encoding", "bad-polygon", "bad-circle", "no-info", "no-geometry", "not-actionable",
    "undecodable", "out-of-area",
})
#: What each JSON parser may say (a subset of the documented reasons).
JSON_REASONS = frozenset({"invalid-json", "too-large", "missing-field", "bad-field",
                          "out-of-range", "bad-time"})
CAP_REASONS = frozenset({"too-large", "bad-encoding", "hostile-xml", "invalid-xml",
                         "schema-invalid", "bad-time", "bad-field", "bad-polygon", "bad-circle",
                         "no-info", "no-geometry", "not-actionable"})

Check = Callable[[Reading], None]


@dataclasses.dataclass(frozen=True)
class Case:
    """One fuzz input: the bytes, how they were made, and what the parser must do with them.

    ``expect`` is None (anything but a crash), ``"accept"`` (and ``check`` passes on the
    Reading), or the rejection ``(reason, field)`` it must get.
    """

    raw: bytes
    kind: str
    expect: str | tuple[str, str | None] | None = None
    check: Check | None = dataclasses.field(default=None, compare=False)

    def __repr__(self) -> str:
        raw = self.raw if len(self.raw) <= 400 else self.raw[:400] + b"..."
        return f"Case({self.kind}, expect={self.expect!r}, raw={raw!r})"


# --- nasty values ------------------------------------------------------------------------------

NUMBERS: list[Any] = [
    0, -0.0, 1, -1, 0.1, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    -1.7976931348623157e308, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30,
    -(10**30), math.nan, math.inf, -math.inf, 90.0000001, -90.0000001, 180.0000001,
    -180.0000001, 2000.0000001, -50.0000001, 120.0000001, 100000.0000001, -100000.0000001,
    100001, 1e-300, True, False,
]
STRINGS: list[str] = [
    "", " ", "\t\n\r", "\x00", "\x00ZH", "\u200b", "\ufeff", "\u202eZH-RIV-001", "\u3000",
    "🌧️", "\ud800", "\udfff", "a\ud800b", "e\u0301", "A" * 64, "A" * 65, "水" * 64, "水" * 65,
    "I" * 80, "I" * 81, "NaN", "Infinity", "-Infinity", "null", "true", "1e309", "0x10",
    "ZH-RIV-001", "ZH-AWS-026", "ZH-GEO-001", "<script>alert(1)</script>", "'; DROP TABLE x;--",
    "%s%n%x", "\\", '"', "\r\n", "\u0085", "\u2028", "\U0010ffff", "\ufffe", "wgs84", "WGS84",
    "gcj02", "bd09", "epsg:4326", "gnss", "rain_gauge", "119", "fire", "closed", "x" * 600,
]
TIMES: list[str] = [
    "2017-08-23T12:00:00", "2017-08-23", "2017-08-23T12:00:00Z", "2017-08-23T24:00:00+08:00",
    "2017-02-30T00:00:00+08:00", "2017-08-23T12:00:00+24:00", "2017-08-23T12:00:00+15:00",
    "2017-08-23T12:00:00+08:00:30.5", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59+14:00", "0000-01-01T00:00:00+00:00",
    "10000-01-01T00:00:00+00:00", "2017-W34-3T12:00+08:00", "20170823T120000+0800",
    "２０１７-08-23T12:00:00+08:00", "", " ", "1503460800", "2017-08-23T12:00:00.123456789+08:00",
    "2017-08-23T12:00:00+08:00[Asia/Shanghai]", "2017-08-23T12:00:00 +08:00",
    "2017-08-23T12:00:00+0800", "2017-08-23T12:00:00-00:00", "2017-08-23T12:00+08",
    "2017-08-23T12:00:00,5+08:00", "2017-08-23t12:00:00+08:00", "\x002017-08-23T12:00:00+08:00",
    "0001-01-01T00:00:00+00:00:01", "9999-12-31T23:59:59.999999-00:00:01",
]
#: JSON text that no Python value dumps to: non-standard literals, deep nesting, bad escapes.
RAW_FRAGMENTS: list[bytes] = [
    b"NaN", b"Infinity", b"-Infinity", b"1e309", b"-1e309", b"1e-400", b"-0", b"01", b"1.",
    b".5", b"+1", b"0x10", b"1_000", b"nul", b"tru", b'"\\ud800"', b'"\\udc00\\ud800"',
    b'"\\u0000"', b'"\xff"', b'"\xed\xa0\x80"', b'"\xc0\xaf"', b'"\\x41"', b"'single'",
    b"[" * 60 + b"]" * 60, b"[" * 1100 + b"]" * 1100, b'{"a":' * 300 + b"1" + b"}" * 300,
    b"[" * 5000, b"{}", b"[]", b'""', b"1" * 400, b"-" + b"9" * 30, b"9" * 4400,
    b'"' + b"x" * 70_000 + b'"', b'"' + "水".encode() * 21_000 + b'"', b'"' + b"y" * 60_000 + b'"',
]
TEXT_POOL = ("abcXYZ019 -_.:/#\t\n\r\x00\x07\x1b\x7f\u00e9\u0301\u200b\u202e\u2028\u3000"
             "水位站雨🌧\ufeff\ufffd<>&\"'\\")


def text(rnd: Random, high: int = 30, pool: str = TEXT_POOL) -> str:
    return "".join(rnd.choice(pool) for _ in range(rnd.randint(0, high)))


def nasty_value(rnd: Random, depth: int = 0) -> Any:
    """A JSON-ish value of the wrong type, size or range (NaN and lone surrogates included)."""
    makers: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rnd.choice(NUMBERS),
        lambda: rnd.choice([rnd.uniform(-1e6, 1e6), rnd.randint(-(2**70), 2**70),
                            rnd.random() * 10 ** rnd.randint(-320, 308)]),
        lambda: rnd.choice(STRINGS),
        lambda: rnd.choice(STRINGS),
        lambda: rnd.choice(TIMES),
        lambda: text(rnd),
        lambda: text(rnd),
    ]
    if depth < 2:
        makers += [
            lambda: [nasty_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))],
            lambda: {text(rnd, 6): nasty_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))},
        ]
    return rnd.choice(makers)()


def clean_value(rnd: Random, depth: int = 0) -> Any:
    """A value any conforming JSON producer can write (unknown fields of a valid record)."""
    roll = rnd.randrange(7 if depth < 2 else 5)
    if roll == 0:
        return rnd.choice([None, True, False])
    if roll == 1:
        return rnd.randint(-(2**63), 2**63 - 1)
    if roll == 2:
        return rnd.uniform(-1e9, 1e9)
    if roll in (3, 4):
        return text(rnd).encode("utf-8").decode("utf-8")
    if roll == 5:
        return [clean_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return {text(rnd, 6): clean_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


def dump(value: Any, ensure_ascii: bool = False) -> bytes:
    """JSON text of ``value`` as a sloppy producer writes it (NaN literals, lone surrogates)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True).encode(
        "utf-8", "surrogatepass")


def fragment(rnd: Random) -> bytes:
    """JSON text (or near-JSON) for a field's value."""
    roll = rnd.randrange(6)
    if roll == 0:
        return rnd.choice(RAW_FRAGMENTS)
    if roll == 1:  # a number of the right type, often just outside a field's range
        return dump(rnd.choice(NUMBERS[:32]))
    return dump(nasty_value(rnd), rnd.random() < 0.5)


#: JSON's own tokens and the feeds' field names, to get past the first byte.
JSON_TOKENS: list[bytes] = [
    b"{", b"}", b"[", b"]", b":", b",", b'"', b" ", b"\n", b"\\", b"null", b"true", b"0",
    b"-1.5e3", b'"station_id"', b'"point_id"', b'"incident_id"', b'"observed_at"',
    b'"level_m"', b'"rain_mm"', b'"sensor"', b'"gnss"', b'"lon"', b'"lat"', b'"crs"',
    b'"2017-08-23T12:00:00+08:00"', b'"ZH-RIV-001"', b"113.5", b"22.2", b"\xef\xbb\xbf",
    b"\xff", b"\x00", b'"wind_gust_ms"', b'"rain_accum_mm"', b'"accum_since"',
]


def random_bytes(rnd: Random) -> Case:
    size = rnd.choice([1, 2, 4, 16, 64, 300])
    return Case(rnd.randbytes(rnd.randint(0, size)), "bytes")


def token_soup(rnd: Random, tokens: list[bytes] = JSON_TOKENS, high: int = 40) -> bytes:
    return b"".join(rnd.choice(tokens) for _ in range(rnd.randint(1, high)))


def damage(rnd: Random, raw: bytes) -> bytes:
    """Byte-level damage: truncation, a flipped or inserted run, a prefix or a suffix."""
    roll = rnd.randrange(5)
    if roll == 0:
        return raw[:rnd.randint(0, max(len(raw) - 1, 0))]
    if roll == 1 and raw:
        at = rnd.randrange(len(raw))
        return raw[:at] + rnd.randbytes(rnd.randint(1, 4)) + raw[at + 1:]
    if roll == 2 and raw:
        at = rnd.randrange(len(raw))
        return raw[:at] + raw[at + rnd.randint(1, 20):]
    if roll == 3:
        return rnd.choice([b"\xef\xbb\xbf", b"\x00", b"[", b"\xff\xfe", b"<"]) + raw
    return raw + rnd.choice([b"}", b",", b"\x00", b"\n{}", b"garbage", b"]", b"\xff"])


# --- valid records --------------------------------------------------------------------------

ID_POOL = "ABCZHRIVGEO0123456789-_.:/#水站雨量点éß"


def source_id(rnd: Random) -> tuple[str, str]:
    """(text as sent, the id the parser keeps): surrounding whitespace is stripped."""
    core = "".join(rnd.choice(ID_POOL) for _ in range(rnd.randint(1, 58)))
    return rnd.choice(["", "", " ", "\t", "\u3000"]) + core + rnd.choice(["", "", " ", "\n"]), core


def event_time(rnd: Random) -> tuple[str, datetime]:
    """A valid event time as some producer writes it, and the instant it means."""
    if rnd.random() < 0.5:
        offset = timedelta(minutes=rnd.choice([480, 0, -300, 345, 840, -720]))
    else:
        offset = timedelta(seconds=rnd.randint(-(24 * 3600 - 1), 24 * 3600 - 1))
    tz = timezone(offset)
    when = (datetime(1900, 1, 2, tzinfo=tz)
            + timedelta(seconds=rnd.randint(0, 200 * 365 * 86400),
                        microseconds=rnd.choice([0, 0, rnd.randint(0, 999_999)])))
    style = rnd.choice(["T", " ", "seconds", "milliseconds", "Z"])
    if style in ("T", " "):
        return when.isoformat(sep=style), when
    if style in ("seconds", "milliseconds"):
        written = when.isoformat(timespec=style)
        return written, datetime.fromisoformat(written)  # the digits cut off are not sent
    if offset == timedelta(0):
        return when.isoformat().replace("+00:00", "Z"), when
    return when.isoformat(), when


def in_range(rnd: Random, low: float, high: float) -> float | int:
    roll = rnd.randrange(6)
    if roll == 0:
        return rnd.choice([low, high])
    if roll == 1:
        return rnd.randint(math.ceil(low), math.floor(high))
    return rnd.uniform(low, high)


def position(rnd: Random, required: bool = False) -> dict[str, Any]:
    """lon/lat (both or neither) and maybe a crs in any letter case."""
    if not required and rnd.random() < 0.5:
        return {}
    out: dict[str, Any] = {"lon": in_range(rnd, -180.0, 180.0),
                           "lat": in_range(rnd, -90.0, 90.0)}
    if rnd.random() < 0.5:
        crs = rnd.choice(CRS_NAMES)
        out["crs"] = rnd.choice([crs, crs.upper(), crs.title()])
    return out


KNOWN_FIELDS = (
    "station_id", "point_id", "incident_id", "observed_at", "level_m", "rain_mm",
    "rain_accum_mm", "accum_since", "wind_speed_ms", "wind_gust_ms", "sensor",
    "displacement_mm", "lon", "lat", "crs", "exercise", "channel", "category", "status",
    "description", "deaths", "injured", "trapped", "missing",
)


def expect_reading(feed: str, source: str, when: datetime, values: dict[str, float],
                   where: dict[str, Any], *, exercise: bool = False,
                   attrs: dict[str, str] | None = None) -> Check:
    """The check a valid record's Reading must pass: every field as the record said."""
    def check(r: Reading) -> None:
        assert (r.feed, r.source_id, r.observed_at, r.exercise) == (
            feed, source, when, exercise), r
        assert r.observed_at.utcoffset() == when.utcoffset(), r
        assert r.values == values, (r.values, values)
        if where:
            assert (r.lon, r.lat, r.crs) == (float(where["lon"]), float(where["lat"]),
                                             where.get("crs", "wgs84").lower()), r
        else:
            assert (r.lon, r.lat, r.crs) == (None, None, "wgs84"), r
        for key, value in (attrs or {}).items():
            assert r.attrs.get(key) == value, (key, r.attrs)
    return check


Record = tuple[dict[str, Any], Check]


def water_record(rnd: Random) -> Record:
    sent, source = source_id(rnd)
    written, when = event_time(rnd)
    level = in_range(rnd, -50.0, 2000.0)
    where = position(rnd)
    exercise = rnd.random() < 0.3
    record = {"station_id": sent, "observed_at": written, "level_m": level, **where}
    if exercise or rnd.random() < 0.3:
        record["exercise"] = exercise
    return record, expect_reading("water", source, when, {"level_m": float(level)}, where,
                                  exercise=exercise)


def weather_record(rnd: Random) -> Record:
    sent, source = source_id(rnd)
    written, when = event_time(rnd)
    record: dict[str, Any] = {"station_id": sent, "observed_at": written}
    values: dict[str, float] = {}
    attrs: dict[str, str] = {}
    rain = rnd.choice(["", "rain_mm", "rain_accum_mm"])
    wind = [f for f in ("wind_speed_ms", "wind_gust_ms") if rnd.random() < 0.5]
    if not rain and not wind:
        wind = [rnd.choice(["wind_speed_ms", "wind_gust_ms"])]
    if rain:
        record[rain] = in_range(rnd, 0.0, 2000.0)
        values[rain] = float(record[rain])
    if rain == "rain_accum_mm":
        since_written, since = event_time(rnd)
        record["accum_since"] = since_written
        attrs["accum_since"] = since.isoformat()
    for field in wind:
        record[field] = in_range(rnd, 0.0, 120.0)
        values[field] = float(record[field])
    where = position(rnd)
    record.update(where)
    return record, expect_reading("weather", source, when, values, where, attrs=attrs)


def geohazard_record(rnd: Random) -> Record:
    sent, source = source_id(rnd)
    written, when = event_time(rnd)
    sensor = rnd.choice(SENSORS)
    field, low, high = (("rain_mm", 0.0, 2000.0) if sensor == "rain_gauge"
                        else ("displacement_mm", -100_000.0, 100_000.0))
    value = in_range(rnd, low, high)
    where = position(rnd)
    record = {"point_id": sent, "observed_at": written, "sensor": sensor, field: value, **where}
    return record, expect_reading("geohazard", source, when, {field: float(value)}, where,
                                  attrs={"sensor": sensor})


def incident_record(rnd: Random) -> Record:
    sent, source = source_id(rnd)
    written, when = event_time(rnd)
    where = position(rnd, required=True)
    record: dict[str, Any] = {"incident_id": sent, "observed_at": written, **where}
    attrs = {"channel": "grid", "category": "other", "status": "reported"}
    for field, choices in (("channel", CHANNELS), ("category", CATEGORIES),
                           ("status", STATUSES)):
        if rnd.random() < 0.5:
            attrs[field] = record[field] = rnd.choice(choices)
    values = {}
    for field in ("deaths", "injured", "trapped", "missing"):
        count = rnd.choice([None, 0, rnd.randint(0, 100_000), 100_000])
        if count is not None:
            record[field] = count
        values[field] = float(count or 0)
    if rnd.random() < 0.5:
        record["description"] = text(rnd, rnd.choice([10, 600]))
    check = expect_reading("incident", source, when, values, where, attrs=attrs)

    def check_incident(r: Reading) -> None:
        check(r)
        cleaned = r.attrs["description"]
        assert len(cleaned) <= 500 and all(c.isprintable() or c == " " for c in cleaned), r
    return record, check_incident


def serialise(pairs: list[tuple[str, bytes]], style: int) -> bytes:
    """An object from (key, JSON text) pairs, written compactly or loosely."""
    sep, colon = [(b",", b":"), (b", ", b": "), (b",\n  ", b" : ")][style % 3]
    return b"{" + sep.join(dump(k) + colon + v for k, v in pairs) + b"}"


@dataclasses.dataclass(frozen=True)
class JsonFeedSpec:
    """What the fuzz needs to know about one JSON feed."""

    name: str
    parse: Callable[[bytes], Reading]
    valid: Callable[[Random], Record]
    #: Dropping one of these alone from a valid record must give missing-field naming it.
    required: tuple[str, ...]


def valid_case(rnd: Random, spec: JsonFeedSpec) -> Case:
    """A valid record in a legal variation (key order, spacing, escapes, unknown fields, a
    duplicate key whose last value is the valid one) that must parse to exactly what it says."""
    record, check = spec.valid(rnd)
    pairs = [(k, dump(v, rnd.random() < 0.5)) for k, v in record.items()]
    for _ in range(rnd.choice([0, 0, 1, 3])):
        key = text(rnd, 12)
        if key not in KNOWN_FIELDS:
            pairs.append((key, dump(clean_value(rnd))))
    rnd.shuffle(pairs)
    if pairs and rnd.random() < 0.2:  # a duplicate key: the last one counts
        key, value = rnd.choice(pairs)
        pairs.insert(0, (key, dump(clean_value(rnd))))
        pairs.append((key, value))
    raw = serialise(pairs, rnd.randrange(3))
    if rnd.random() < 0.15:
        raw = b" \n\t" + raw + b"\r\n "
    return Case(raw, "valid", "accept", check)


def mutated_case(rnd: Random, spec: JsonFeedSpec) -> Case:
    """A valid record with one to three mutations, sometimes with damaged bytes too."""
    record, _ = spec.valid(rnd)
    pairs = [(k, dump(v)) for k, v in record.items()]
    ops: list[tuple[str, str]] = []
    for _ in range(rnd.choice([1, 1, 2, 3])):
        op = rnd.choice(["drop", "set", "set", "add", "duplicate", "rename"])
        key = rnd.choice([k for k, _ in pairs] or ["station_id"])
        ops.append((op, key))
        if op == "drop":
            pairs = [p for p in pairs if p[0] != key]
        elif op == "set":
            pairs = [(k, fragment(rnd) if k == key else v) for k, v in pairs]
        elif op == "add":
            pairs.append((rnd.choice([*KNOWN_FIELDS, text(rnd, 8)]), fragment(rnd)))
        elif op == "duplicate":
            pairs.append((key, fragment(rnd)))
        else:
            new = rnd.choice([key.upper(), key + " ", " " + key, key.replace("_", "-"),
                              key + "\x00", key[:-1]])
            pairs = [(new if k == key else k, v) for k, v in pairs]
    raw = serialise(pairs, rnd.randrange(3))
    expect: tuple[str, str | None] | None = None
    if len(ops) == 1 and ops[0][0] == "drop" and ops[0][1] in spec.required:
        expect = ("missing-field", ops[0][1])
    if rnd.random() < 0.3:
        raw, expect = damage(rnd, raw), None
    return Case(raw, "mutated:" + "+".join(op for op, _ in ops), expect)


def json_case(rnd: Random, spec: JsonFeedSpec) -> Case:
    """The full mix for one JSON feed: bytes 15%, soup 15%, mutations 40%, valid 30%."""
    roll = rnd.random()
    if roll < 0.15:
        return random_bytes(rnd)
    if roll < 0.30:
        return Case(token_soup(rnd), "soup")
    if roll < 0.70:
        return mutated_case(rnd, spec)
    return valid_case(rnd, spec)


# --- checking outcomes ------------------------------------------------------------------------

def check_reading(r: Reading, feed: str) -> None:
    """What every accepted Reading must be, whatever the input: usable by the next stage."""
    assert r.feed == feed
    assert r.source_id and r.source_id == r.source_id.strip(), r
    r.source_id.encode("utf-8")  # becomes a Kafka key: must be encodable
    assert r.observed_at.utcoffset() is not None, r
    r.observed_at.astimezone(UTC)  # a real instant (health and rules compare in UTC)
    assert r.values and all(isinstance(v, float) and math.isfinite(v)
                            for v in r.values.values()), r
    assert (r.lon is None) == (r.lat is None), r
    if r.lon is not None and r.lat is not None:
        assert -180.0 <= r.lon <= 180.0 and -90.0 <= r.lat <= 90.0, r
    assert r.crs in CRS_NAMES, r
    assert isinstance(r.exercise, bool)
    for key, value in r.attrs.items():
        assert isinstance(value, str), (key, value)
        value.encode("utf-8")


def judge_case(case: Case, parse: Callable[[bytes], Reading], feed: str,
               reasons: frozenset[str]) -> str:
    """Parse one case and check its outcome; returns ``accepted`` or the rejection reason."""
    try:
        reading = parse(case.raw)
    except InputRejected as exc:
        assert exc.reason in reasons, f"undocumented reason {exc.reason!r} for {case!r}"
        assert exc.reason in DOCUMENTED_REASONS
        assert exc.detail, case
        assert case.expect != "accept", (
            f"a valid record was rejected: {exc.reason} {exc.field} {exc.detail} {case!r}")
        if isinstance(case.expect, tuple):
            assert (exc.reason, exc.field) == case.expect, (exc.reason, exc.field, case)
        return exc.reason
    assert not isinstance(case.expect, tuple), f"accepted, want {case.expect}: {case!r}"
    check_reading(reading, feed)
    if case.check is not None:
        case.check(reading)
    return "accepted"
