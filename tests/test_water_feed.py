"""The water-level parser on good and bad input: every rejection has a stable reason."""

from __future__ import annotations

import pytest

from onemap.errors import InputRejected
from onemap.streams.feeds.water import parse_water

GOOD = (b'{"station_id":"ZH-RIV-001","observed_at":"2017-08-23T12:00:00+08:00",'
        b'"level_m":2.31,"lon":113.5,"lat":22.2,"crs":"gcj02","exercise":true}')


def test_good_record_is_parsed_with_its_event_time_and_position() -> None:
    r = parse_water(GOOD)
    assert r.source_id == "ZH-RIV-001"
    assert r.values == {"level_m": 2.31}
    assert r.observed_at.isoformat() == "2017-08-23T12:00:00+08:00"
    assert (r.lon, r.lat, r.crs, r.exercise) == (113.5, 22.2, "gcj02", True)


def test_position_is_optional() -> None:
    r = parse_water(b'{"station_id":"S","observed_at":"2017-08-23T04:00:00Z","level_m":1}')
    assert r.lon is None and r.lat is None and r.crs == "wgs84"


@pytest.mark.parametrize(("raw", "reason", "field"), [
    (b'{"station_id": "S", "lev', "invalid-json", None),
    (b"[1, 2]", "invalid-json", None),
    (b'{"observed_at":"2017-08-23T12:00:00+08:00","level_m":1}', "missing-field", "station_id"),
    (b'{"station_id":"","observed_at":"2017-08-23T12:00:00+08:00","level_m":1}', "bad-field",
     "station_id"),
    (b'{"station_id":"S","observed_at":"2017-08-23 12:00:00","level_m":1}', "bad-time",
     "observed_at"),
    (b'{"station_id":"S","observed_at":"yesterday","level_m":1}', "bad-time", "observed_at"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00"}', "missing-field",
     "level_m"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":"3"}',
     "bad-field", "level_m"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":true}',
     "bad-field", "level_m"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":9999}',
     "out-of-range", "level_m"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":1,"lon":113}',
     "bad-field", "lat"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":1,"lon":200,'
     b'"lat":22}', "out-of-range", "lon"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":1,"crs":"utm"}',
     "bad-field", "crs"),
    (b'{"station_id":"S","observed_at":"2017-08-23T12:00:00+08:00","level_m":1,'
     b'"exercise":"yes"}', "bad-field", "exercise"),
    (b"x" * 70_000, "too-large", None),
])
def test_bad_records_are_rejected_with_reason_and_field(
    raw: bytes, reason: str, field: str | None,
) -> None:
    with pytest.raises(InputRejected) as info:
        parse_water(raw)
    assert info.value.reason == reason
    assert info.value.field == field
    assert info.value.detail
