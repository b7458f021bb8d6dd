"""Weather, geohazard and incident parsers on good and bad input."""

from __future__ import annotations

import pytest

from onemap.errors import InputRejected
from onemap.streams.feeds.geohazard import parse_geohazard
from onemap.streams.feeds.incident import parse_incident
from onemap.streams.feeds.weather import parse_weather

T = '"observed_at":"2017-08-23T12:00:00+08:00"'


def test_weather_accumulation_carries_its_reset_time() -> None:
    r = parse_weather(('{"station_id":"A",' + T + ',"rain_accum_mm":42.5,'
                       '"accum_since":"2017-08-23T08:00:00+08:00"}').encode())
    assert r.values == {"rain_accum_mm": 42.5}
    assert r.attrs == {"accum_since": "2017-08-23T08:00:00+08:00"}


@pytest.mark.parametrize(("body", "reason", "field"), [
    ('{"station_id":"A",' + T + '}', "missing-field", "rain_mm"),
    ('{"station_id":"A",' + T + ',"rain_mm":-1}', "out-of-range", "rain_mm"),
    ('{"station_id":"A",' + T + ',"wind_gust_ms":500}', "out-of-range", "wind_gust_ms"),
    ('{"station_id":"A",' + T + ',"rain_mm":1,"rain_accum_mm":3,'
     '"accum_since":"2017-08-23T08:00:00+08:00"}', "bad-field", "rain_accum_mm"),
    ('{"station_id":"A",' + T + ',"rain_accum_mm":3}', "missing-field", "accum_since"),
])
def test_weather_rejections(body: str, reason: str, field: str) -> None:
    with pytest.raises(InputRejected) as info:
        parse_weather(body.encode())
    assert (info.value.reason, info.value.field) == (reason, field)


@pytest.mark.parametrize(("body", "reason", "field"), [
    ('{"point_id":"P",' + T + ',"displacement_mm":3}', "missing-field", "sensor"),
    ('{"point_id":"P",' + T + ',"sensor":"radar","displacement_mm":3}', "bad-field", "sensor"),
    ('{"point_id":"P",' + T + ',"sensor":"gnss"}', "missing-field", "displacement_mm"),
    ('{"point_id":"P",' + T + ',"sensor":"rain_gauge","displacement_mm":1}', "missing-field",
     "rain_mm"),
])
def test_geohazard_rejections(body: str, reason: str, field: str) -> None:
    with pytest.raises(InputRejected) as info:
        parse_geohazard(body.encode())
    assert (info.value.reason, info.value.field) == (reason, field)


def test_incident_description_is_untrusted_text_cleaned_and_capped() -> None:
    text = "<script>alert(1)</script>\u0007" + "火" * 600
    raw = ('{"incident_id":"119-1",' + T + ',"channel":"119","category":"fire",'
           '"lon":113.5,"lat":22.2,"description":' + __import__("json").dumps(text) + '}')
    r = parse_incident(raw.encode())
    assert "\u0007" not in r.attrs["description"]
    assert r.attrs["description"].startswith("<script>")  # kept as text; escaped when shown
    assert len(r.attrs["description"]) == 500
    assert r.values == {"deaths": 0.0, "injured": 0.0, "trapped": 0.0, "missing": 0.0}


@pytest.mark.parametrize(("body", "reason", "field"), [
    ('{"incident_id":"I",' + T + ',"category":"fire"}', "missing-field", "lon"),
    ('{"incident_id":"I",' + T + ',"lon":113,"lat":22,"channel":"999"}', "bad-field",
     "channel"),
    ('{"incident_id":"I",' + T + ',"lon":113,"lat":22,"status":"done"}', "bad-field", "status"),
    ('{"incident_id":"I",' + T + ',"lon":113,"lat":22,"deaths":-1}', "bad-field", "deaths"),
    ('{"incident_id":"I",' + T + ',"lon":113,"lat":22,"injured":2.5}', "bad-field", "injured"),
    ('{"incident_id":"I",' + T + ',"lon":113,"lat":22,"description":5}', "bad-field",
     "description"),
])
def test_incident_rejections(body: str, reason: str, field: str) -> None:
    with pytest.raises(InputRejected) as info:
        parse_incident(body.encode())
    assert (info.value.reason, info.value.field) == (reason, field)
