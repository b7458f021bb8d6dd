"""Fuzz the ingest stage as a whole (``IngestStage.process``): at least 10,000 records in
batches of every feed, on the shipped map and registries (docs/fuzzing.md).

Properties, for every batch: it is processed (one bad record never takes the batch down);
every record yields exactly one outcome, an observation or a dead letter; a dead letter holds
the record's exact bytes and a documented reason and serialises for ``onemap.deadletter``;
an observation serialises for ``onemap.observations`` and reads back equal, with a finite
position on the globe; valid records of known sources become observations, in input order.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from datetime import UTC, datetime
from random import Random

import orjson

from onemap.geo.places import PlaceIndex
from onemap.records import Observation
from onemap.registries import Registries, default_registries_dir
from onemap.streams.deadletter import RawRecord
from onemap.streams.feeds import FEEDS
from onemap.streams.ingest import IngestStage
from tests.fuzz.cap_strategies import cap_case
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import (
    DOCUMENTED_REASONS,
    Case,
    JsonFeedSpec,
    geohazard_record,
    incident_record,
    json_case,
    water_record,
    weather_record,
)

#: the ingest stage also refuses a feed it does not know (a wiring error, not a record's fault)
INGEST_REASONS = DOCUMENTED_REASONS | {"unknown-feed"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PLACES = PlaceIndex.load()
REGISTRIES = Registries.load(default_registries_dir())
KNOWN = {"water": sorted(REGISTRIES.water), "weather": sorted(REGISTRIES.weather),
         "geohazard": sorted(REGISTRIES.hazard_points)}
ID_FIELD = {"water": "station_id", "weather": "station_id", "geohazard": "point_id"}
SPECS = {
    "water": JsonFeedSpec("water", FEEDS["water"].parse, water_record, ()),
    "weather": JsonFeedSpec("weather", FEEDS["weather"].parse, weather_record, ()),
    "geohazard": JsonFeedSpec("geohazard", FEEDS["geohazard"].parse, geohazard_record, ()),
    "incident": JsonFeedSpec("incident", FEEDS["incident"].parse, incident_record, ()),
}


@dataclasses.dataclass(frozen=True)
class Batch:
    feed: str
    cases: tuple[Case, ...]

    def __repr__(self) -> str:
        return f"Batch({self.feed}, {list(self.cases)!r})"


def known_source(rnd: Random, spec: JsonFeedSpec) -> Case:
    """A valid record of a source in the registry (it must become an observation)."""
    record, _ = spec.valid(rnd)
    record[ID_FIELD[spec.name]] = rnd.choice(KNOWN[spec.name])
    for field in ("lon", "lat", "crs"):  # the registry's position,
        record.pop(field, None)
    if rnd.random() < 0.5:  # or one near the map, in any coordinate system
        record.update(lon=rnd.uniform(113.0, 114.4), lat=rnd.uniform(21.8, 22.5),
                      crs=rnd.choice(["wgs84", "gcj02", "bd09"]))
    return Case(orjson.dumps(record), "known", "accept")


def batch(rnd: Random) -> Batch:
    feed = rnd.choice([*SPECS, "cap", "cap", "nosuchfeed"])
    cases: list[Case] = []
    for _ in range(rnd.randint(1, 20)):
        if feed in ("cap", "nosuchfeed"):
            cases.append(cap_case(rnd) if feed == "cap" else Case(rnd.randbytes(8), "bytes"))
        elif feed in KNOWN and rnd.random() < 0.3:
            cases.append(known_source(rnd, SPECS[feed]))
        else:
            cases.append(json_case(rnd, SPECS[feed]))
    return Batch(feed, tuple(cases))


STAGE = IngestStage(PLACES.find, REGISTRIES, find_area=PLACES.find_area,
                    find_codes=PLACES.find_codes)


def check_batch(item: Batch) -> list[tuple[object, str]]:
    records = [RawRecord(c.raw, key=b"k%d" % i, topic=f"onemap.in.{item.feed}", partition=0,
                         offset=i) for i, c in enumerate(item.cases)]
    result = STAGE.process(item.feed, records)
    assert len(result.observations) + len(result.dead_letters) == len(records)
    outcome: dict[int, str] = {}
    for letter in result.dead_letters:
        assert letter.record.offset not in outcome, "two outcomes for one record"
        assert letter.record is records[letter.record.offset]
        assert letter.record.value == item.cases[letter.record.offset].raw
        assert letter.reason in INGEST_REASONS, (letter.reason, letter.detail)
        assert (letter.feed, letter.stage) == (item.feed, "ingest") and letter.detail
        sent = orjson.loads(letter.to_json(NOW))
        assert base64.b64decode(sent["original_b64"]) == letter.record.value
        assert sent["reason"] == letter.reason
        outcome[letter.record.offset] = letter.reason
    accepted = [i for i in range(len(records)) if i not in outcome]
    assert len(accepted) == len(result.observations)
    for i, obs in zip(accepted, result.observations, strict=True):
        outcome[i] = "observation"
        assert obs.feed == item.feed
        assert obs.source_id == FEEDS[item.feed].parse(records[i].value).source_id  # in order
        assert math.isfinite(obs.lon) and math.isfinite(obs.lat)
        assert -180 <= obs.lon <= 180 and -90 <= obs.lat <= 90, obs
        obs.observed_at.astimezone(UTC)
        # what the rules loop of the same worker relies on to take the observation instead
        # of decoding its record (streams/handoff.py): the bytes decode to an equal value,
        # to the same types (the same bytes again) and the same event time
        value = obs.to_json()
        again = Observation.from_json(value)
        assert again == obs and again.to_json() == value
        assert again.event_seconds() == obs.event_seconds()
    for i, case in enumerate(item.cases):
        if case.kind == "known":
            assert outcome[i] == "observation", (outcome[i], case)
    return [(case, outcome[i]) for i, case in enumerate(item.cases)]


def test_ingest_stage_survives_fuzzing() -> None:
    stats = fuzz("IngestStage.process", batch, check_batch, batch=20, per_item=10)
    assert stats.outcomes.get("observation", 0) >= stats.inputs // 5, stats.outcomes
    assert {"unknown-source", "unknown-feed", "invalid-json", "schema-invalid"} <= set(
        stats.outcomes), stats.outcomes
