"""The records' JSON, as the stages write and read it on the topics: an observation's
encoding is the plain dict's (its place encoded once per Place object, ``place_json``) and
decodes to an equal observation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import given
from hypothesis import strategies as st

from onemap.errors import InputRejected
from onemap.records import Observation, Place, event_time, place_json
from onemap.streams.feeds.base import require_time

text = st.text(max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)  # as ingest lets through
#: hypothesis takes naive bounds and adds the zone itself
EARLIEST, LATEST = datetime(2000, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001
places = st.builds(Place, text, text, text, text, text, text, text, text)
observations = st.builds(
    Observation, feed=st.sampled_from(["water", "weather", "geohazard"]),
    source_id=st.text(min_size=1, max_size=10), source_kind=text,
    observed_at=st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)),
    lon=st.floats(-180, 180), lat=st.floats(-90, 90), place=places,
    values=st.dictionaries(st.text(max_size=8), finite, max_size=4),
    exercise=st.booleans(), attrs=st.dictionaries(st.text(max_size=8), text, max_size=3))


def plain_json(o: Observation) -> bytes:
    return orjson.dumps({
        "feed": o.feed, "source_id": o.source_id, "source_kind": o.source_kind,
        "observed_at": o.observed_at.isoformat(), "lon": o.lon, "lat": o.lat,
        "place": o.place.to_dict(), "values": o.values, "exercise": o.exercise,
        "attrs": o.attrs})


@given(observations)
def test_an_observation_is_encoded_as_its_plain_dict_and_decoded_back(o: Observation) -> None:
    raw = o.to_json()
    assert raw == plain_json(o)
    assert raw == o.to_json()  # the second time from the place's cached JSON
    assert Observation.from_json(raw) == o


def test_a_place_made_after_another_is_freed_gets_its_own_json() -> None:
    """The cache is by object identity; a Place it has seen is kept alive by it, so a new
    Place can never take a cached one's id and be given its JSON."""
    seen = {}
    for n in range(200):
        place = Place(city_code=f"C{n}", village_name=f"村{n}")
        seen[id(place)] = place_json(place)
        del place  # freed now, were the cache not keeping it
    for n in range(200):
        place = Place(city_code=f"C{n}", village_name=f"村{n}")
        assert orjson.loads(orjson.dumps(place_json(place))) == place.to_dict()


def test_observed_at_keeps_its_offset() -> None:
    at = datetime(2017, 8, 23, 11, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=8)))
    o = Observation("water", "ZH-RIV-001", "river", at, 113.5, 22.2, Place(), {"level_m": 1.0})
    back = Observation.from_json(o.to_json())
    assert back.observed_at == at and back.observed_at.utcoffset() == timedelta(hours=8)


def _require_time_before(value: str) -> datetime | str:
    """The feeds' time check as it was before times were kept per text: the time, or the
    start of the reason it gives."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "not ISO 8601"
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return "no UTC offset"
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return "outside the years"
    return parsed


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
any_time = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), offsets)).map(datetime.isoformat),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2),  # noqa: DTZ001
                 timezones=offsets).map(datetime.isoformat),
    st.datetimes(min_value=datetime(9999, 12, 30),  # noqa: DTZ001
                 timezones=offsets).map(datetime.isoformat),
    st.sampled_from(["2017-08-23T12:00:00Z", "2017-08-23 12:00+08", "20170823T120000+0800",
                     "2017-08-23T12:00:00+08:00:30", "yesterday", ""]),
    st.text(max_size=30))


@given(any_time)
def test_times_kept_per_text_are_the_times_the_feeds_checked_before(value: str) -> None:
    """records.event_time (kept per text) accepts exactly what the feeds' check accepted
    and gives the same time, seconds and ISO form; a rejected text keeps its reason."""
    before = _require_time_before(value)
    try:
        parsed = require_time({"t": value}, "t")
    except InputRejected as exc:
        assert isinstance(before, str)
        assert before in exc.detail
    else:
        assert parsed == before and parsed.utcoffset() == before.utcoffset()
        kept = event_time(value)
        assert kept.at is parsed and kept.seconds == before.timestamp()
        assert kept.iso == before.isoformat()


@given(observations)
def test_an_observation_with_its_time_text_encodes_and_orders_the_same(o: Observation) -> None:
    text = o.observed_at.isoformat()
    with_text = Observation.from_json(o.to_json())
    assert with_text.event is not None and with_text.event.at is with_text.observed_at
    assert with_text.to_json() == o.to_json()
    assert with_text.event_seconds() == o.event_seconds() == o.observed_at.timestamp()
    assert with_text.observed_at_iso() == text
