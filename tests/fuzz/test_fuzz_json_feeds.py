"""Fuzz the four JSON feed parsers: at least 10,000 inputs each (docs/fuzzing.md).

Properties, for every input: the parser returns a Reading the next stage can use or raises
InputRejected with a documented reason (nothing else, ever); a valid record in any legal
variation parses to exactly what it says; a valid record missing one required field is
rejected as missing-field naming it.
"""

from __future__ import annotations

from random import Random

import pytest

from onemap.streams.feeds.geohazard import parse_geohazard
from onemap.streams.feeds.incident import parse_incident
from onemap.streams.feeds.water import parse_water
from onemap.streams.feeds.weather import parse_weather
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import (
    JSON_REASONS,
    Case,
    JsonFeedSpec,
    geohazard_record,
    incident_record,
    json_case,
    judge_case,
    water_record,
    weather_record,
)

SPECS = [
    JsonFeedSpec("water", parse_water, water_record, ("station_id", "observed_at", "level_m")),
    JsonFeedSpec("weather", parse_weather, weather_record, ("station_id", "observed_at")),
    JsonFeedSpec("geohazard", parse_geohazard, geohazard_record,
                 ("point_id", "observed_at", "sensor")),
    JsonFeedSpec("incident", parse_incident, incident_record, ("incident_id", "observed_at")),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_json_feed_parser_survives_fuzzing(spec: JsonFeedSpec) -> None:
    def gen(rnd: Random) -> Case:
        return json_case(rnd, spec)

    def check(case: Case) -> str:
        return judge_case(case, spec.parse, spec.name, JSON_REASONS)

    stats = fuzz(f"parse_{spec.name}", gen, check)
    # every family reached the parser's deeper checks, so the properties were exercised there
    assert stats.outcomes.get("accepted", 0) >= stats.inputs // 4, stats.outcomes
    assert {"invalid-json", "too-large", "missing-field", "bad-field", "out-of-range",
            "bad-time"} <= set(stats.outcomes), stats.outcomes
