"""The rules stage's hot path decides exactly as the full evaluation does.

For every reading the stage now computes only the level (``*_reached``), carries an upper
bound of a station's rain sum from one reading to the next (``windows.carry_bound``) and
builds the candidate's figure and reason only for a hazard it emits. These tests check that
each shortcut gives the same answer as the plain computation it replaces, on random inputs
and through whole runs of the stage.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_stages_ablation import insert_before
from onemap.geo.places import PlaceIndex
from onemap.levels import WarningLevel
from onemap.records import Hazard, Observation, Place
from onemap.registries import Registries, default_registries_dir
from onemap.rules import evaluate
from onemap.rules.evaluate import RulesStage
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.rules.water_level import water_candidate, water_level_reached
from onemap.rules.weather import (
    RainstormRule,
    rainstorm_level,
    rainstorm_reached,
    wind_level,
    wind_reached,
)
from onemap.rules.windows import (
    Owned,
    Series,
    WindowBound,
    carry_bound,
    insert,
    window_bound,
    window_max,
    window_sum,
)
from onemap.streams import ingest
from onemap.streams.deadletter import RawRecord
from onemap.streams.ingest import IngestStage

BOOK = load_rulebook(default_rules_dir())
REGISTRIES = Registries.load(default_registries_dir())
CST = timezone(timedelta(hours=8))
T0 = datetime(2017, 8, 23, 0, 0, tzinfo=CST)
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001", "x")
HOUR = 3600.0

#: ``windows.insert`` as it was (list comparisons, two copies): the reference
_insert_before = insert_before


def _rainstorm_before(rain: Series, newest: float, rule: RainstormRule) -> WarningLevel:
    """The rainstorm level as it was computed: every colour's window summed."""
    reached = WarningLevel.NONE
    for colour in (WarningLevel.BLUE, WarningLevel.YELLOW, WarningLevel.ORANGE,
                   WarningLevel.RED):
        bound = rule.levels[colour.label]
        if window_sum(rain, newest, bound.window_h * 3600) >= bound.rain_mm - 1e-9:
            reached = colour
    return reached


times = st.lists(st.integers(0, 40), max_size=14)


@given(times, st.integers(-5, 60), st.integers(0, 3), st.integers(0, 30))
@settings(max_examples=400, deadline=None)
def test_insert_equals_the_list_comparing_version(ts: list[int], t: int, v: int,
                                                  keep: int) -> None:
    series = sorted([[float(x), float(i % 3)] for i, x in enumerate(ts)])
    expected = _items(_insert_before(series, t, v, keep))
    assert _items(insert(series, t, v, keep)) == expected
    # new points are tuples, restored ones lists: a series may hold both
    mixed: Series = [tuple(p) if i % 2 else p for i, p in enumerate(series)]
    assert _items(insert(mixed, t, v, keep)) == expected


@given(st.lists(st.integers(0, 40), max_size=20), st.integers(-5, 60), st.integers(0, 45))
@settings(max_examples=400, deadline=None)
def test_window_max_is_the_largest_value_in_its_window(ts: list[int], end: int,
                                                       seconds: int) -> None:
    # windows of a few points (read from the end) and of more than window_max reads so
    # (bisected), ending after, at and before the newest point
    series: Series = sorted((float(x), float((i * 7) % 5)) for i, x in enumerate(ts))
    inside = [v for t, v in series if end - seconds <= t <= end]
    assert window_max(series, end, seconds) == (max(inside) if inside else None)


@given(st.lists(st.lists(st.tuples(st.integers(-5, 60), st.integers(0, 3)), max_size=6),
                max_size=6), st.integers(0, 30))
@settings(max_examples=300, deadline=None)
def test_insert_in_place_gives_what_copying_gives_and_leaves_the_state_alone(
        batches: list[list[tuple[int, int]]], keep: int) -> None:
    """The rules stage's way (a batch copies a series once, then changes its copy) ends
    with the same series as copying at every insert, and never changes a list it was given
    before the batch."""
    copied: Series = [[0.0, 1.0], [10.0, 2.0]]
    changed: Series = copied
    for batch in batches:
        before, content = changed, _items(changed)
        owned: Owned = {}
        for t, v in batch:
            copied = insert(copied, t, v, keep)
            changed = insert(changed, t, v, keep, owned)
            assert _items(changed) == _items(copied)
        assert _items(before) == content  # the state before the batch is untouched


def _items(series: Series) -> list[tuple[float, ...]]:
    return [tuple(p) for p in series]


def _rain_run(seed: int, steps: int, heavy: float,
              batch: int | None = None) -> Iterator[tuple[Series, float]]:
    """A station's rain series after each reading: 5-minute readings, some late, some
    dropped, showers of up to ``heavy`` mm; the state's 24 h + 15 min of history. With
    ``batch``, inserted as the rules stage does (windows.insert's ``owned``): each series
    copied at the first reading of a batch of that many, then changed in place, so a
    series yielded is valid until the next one."""
    rnd = random.Random(seed)
    series: Series = []
    newest = 0.0
    owned: Owned | None = None
    for i in range(steps):
        if batch is not None and i % batch == 0:
            owned = {}
        t = i * 300.0
        if rnd.random() < 0.05 and newest > 900:
            t = newest - rnd.choice([60.0, 240.0, 600.0])  # late, within the lateness
        elif rnd.random() < 0.05:
            continue  # a missed reading
        value = round(rnd.random() * heavy, 1) if rnd.random() < 0.3 else 0.0
        if any(p[0] == t for p in series):
            continue  # a duplicate: the stage drops it before the series
        series = insert(series, t, value, BOOK.history_s, owned)
        newest = max(newest, t)
        yield series, newest


@pytest.mark.parametrize("batch", [None, 1, 3, 50])
@pytest.mark.parametrize(("seed", "heavy"), [(1, 0.5), (2, 4.0), (3, 12.0), (4, 30.0)])
def test_carried_rain_bound_never_changes_a_level(seed: int, heavy: float,
                                                  batch: int | None) -> None:
    rule = BOOK.rainstorm
    previous: WindowBound | None = None
    carried = 0
    levels = set()
    for series, newest in _rain_run(seed, 1500, heavy, batch):
        at_most = carry_bound(previous, series, newest, rule.longest_window_s)
        if at_most is not None:
            carried += 1
            # a bound: never below the longest window's sum (float sums, as computed)
            assert at_most >= window_sum(series, newest, rule.longest_window_s)
        level, at_least = rainstorm_reached(series, newest, rule, at_most)
        assert level == _rainstorm_before(series, newest, rule)
        assert level == rainstorm_level(series, newest, rule).level
        levels.add(level)
        previous = window_bound(series, newest, rule.longest_window_s, at_least)
    assert carried > 1000, "most readings carry the bound"
    if heavy >= 12.0:
        assert len(levels) > 1, "the run reaches some colour"


def test_a_bound_is_not_carried_to_a_series_it_was_not_made_for() -> None:
    s0 = [[0.0, 1.0], [300.0, 2.0], [600.0, 3.0]]
    b = window_bound(s0, 600.0, 3600.0, 6.0)
    assert carry_bound(b, orjson.loads(orjson.dumps(s0)), 600.0, 3600.0) is None  # a copy
    assert carry_bound(b, s0, 300.0, 3600.0) is None  # the window moved back
    assert carry_bound(window_bound(s0, 600.0, 7200.0, 6.0), s0, 600.0, 3600.0) is None  # other
    late = insert(s0, 450.0, 5.0, BOOK.history_s)
    assert carry_bound(b, late, 600.0, 3600.0) is None
    # a late reading and then an in-order one: the result shares both ends with s0 + 1 point
    # appended only if nothing was inserted in the middle
    assert carry_bound(b, insert(late, 900.0, 1.0, BOOK.history_s), 900.0, 3600.0) is None
    assert carry_bound(b, insert(s0, 900.0, 1.0, 700.0), 900.0, 3600.0) == 7.0


@pytest.mark.parametrize("batch", [None, 1, 3, 50])
@pytest.mark.parametrize(("seed", "strong"), [(1, 9.0), (2, 20.0), (3, 45.0)])
def test_carried_wind_bound_never_changes_a_level(seed: int, strong: float,
                                                  batch: int | None) -> None:
    """The stage skips the wind windows' scans while a bound carried from the previous
    reading is below every colour (``evaluate._bounded_max``): each series' bound is never
    below its window's largest value, is that value whenever it could reach a colour, and
    the level is the one the scans give."""
    rule = BOOK.wind
    window = BOOK.limits.wind_window_s
    gust_floor = BOOK.limits.wind_gust_floor_ms
    assert window == rule.window_min * 60
    assert (BOOK.limits.wind_mean_floor_ms, gust_floor) == pytest.approx(
        (min(b.mean_ms for b in rule.levels.values()),
         min(b.gust_ms for b in rule.levels.values())))
    carried: dict[str, Any] = {}
    skipped = 0
    levels = set()
    for series, newest in _rain_run(seed, 1500, strong, batch):
        exact = window_max(series, newest, window)
        could_carry = evaluate.carry_bound(carried.get("gust"), series, newest, window, max)
        gust = evaluate._bounded_max(carried, "gust", series, newest, window,
                                      floor=gust_floor)
        assert gust >= (exact or 0.0)
        if could_carry is not None and could_carry < gust_floor:
            skipped += 1
            assert gust == could_carry < gust_floor
        else:
            assert gust == (exact or 0.0)
        level = WarningLevel.NONE if gust < gust_floor else wind_reached(0.0, gust, rule)
        assert level == wind_reached(None, exact, rule)
        levels.add(level)
    if strong < gust_floor:
        assert skipped > 1000, "calm readings carry the bound"
    if strong > 40:
        assert len(levels) > 2, "the run reaches some colours"


def test_a_changed_rule_set_has_its_own_limits() -> None:
    """The numbers the stage reads at every reading (RuleBook.limits) follow the rules."""
    lower = {label: b.model_copy(update={"gust_ms": b.gust_ms - 5})
             for label, b in BOOK.wind.levels.items()}
    wetter = {label: b.model_copy(update={"window_h": b.window_h * 2, "rain_mm": b.rain_mm + 1})
              for label, b in BOOK.rainstorm.levels.items()}
    changed = dataclasses.replace(
        BOOK, wind=BOOK.wind.model_copy(update={"levels": lower, "window_min": 30}),
        rainstorm=BOOK.rainstorm.model_copy(update={"levels": wetter}),
        pipeline=BOOK.pipeline.model_copy(update={"lateness_s": 60.0}))
    before, after = BOOK.limits, changed.limits
    assert after.wind_gust_floor_ms == pytest.approx(before.wind_gust_floor_ms - 5)
    assert after.wind_mean_floor_ms == before.wind_mean_floor_ms
    assert after.wind_window_s == 1800.0
    assert after.rain_window_s == 2 * before.rain_window_s
    assert after.rain_floor_mm == pytest.approx(before.rain_floor_mm + 1)
    assert after.lateness_s == 60.0
    assert after.history_s == 24 * 3600.0 + 60.0
    assert BOOK.limits is before  # computed once per rule set


@given(st.one_of(st.none(), st.floats(0, 60)), st.one_of(st.none(), st.floats(0, 80)))
@settings(max_examples=300, deadline=None)
def test_wind_reached_is_wind_levels_level(mean: float | None, gust: float | None) -> None:
    assert wind_reached(mean, gust, BOOK.wind) == wind_level(mean, gust, BOOK.wind).level


@pytest.mark.parametrize("station_id", sorted(REGISTRIES.water))
def test_water_level_reached_is_the_candidates_level(station_id: str) -> None:
    station = REGISTRIES.water[station_id]
    rnd = random.Random(station_id)
    top = (station.guaranteed_level_m or station.warning_level_m) + 0.5
    for _ in range(60):
        levels = [[i * 300.0, round(rnd.uniform(0.0, top), 2)] for i in range(4)]
        current = WarningLevel(rnd.randrange(5))
        full = water_candidate(levels, levels[-1][0], station, BOOK.water_level, current)
        assert water_level_reached(levels, station, BOOK.water_level, current) == full.level


def _weather(station: str, minutes: float, values: dict[str, float]) -> Observation:
    return Observation(feed="weather", source_id=station, source_kind="weather",
                       observed_at=T0 + timedelta(minutes=minutes), lon=113.3, lat=22.1,
                       place=PLACE, values=values)


def _storm(seed: int) -> list[list[Observation]]:
    """Batches of readings of three stations through a day with two storms, some readings
    late or repeated."""
    rnd = random.Random(seed)
    out: list[list[Observation]] = []
    for k in range(0, 24 * 12, 3):
        batch = []
        for station in ("ZH-AWS-028", "ZH-AWS-053", "ZH-AWS-111"):
            for j in range(3):
                minutes = 5.0 * (k + j)
                storm = 60 <= k < 90 or 180 <= k < 200
                rain = round(rnd.uniform(2.0, 12.0), 1) if storm else (
                    0.2 if rnd.random() < 0.1 else 0.0)
                gale = storm or rnd.random() < 0.1  # calm between storms, mostly
                batch.append(_weather(station, minutes, {
                    "rain_mm": rain,
                    "wind_speed_ms": round(rnd.uniform(3, 20) if gale else rnd.uniform(0, 8), 1),
                    "wind_gust_ms": round(rnd.uniform(5, 36) if gale else rnd.uniform(0, 14),
                                          1)}))
                if rnd.random() < 0.05:
                    batch.append(batch[-1])  # a duplicate
        if rnd.random() < 0.2 and out:
            batch.append(rnd.choice(out[-1]))  # late (or a duplicate by now)
        out.append(batch)
    return out


def _run(batches: list[list[Observation]], *, reload_state: bool,
         new_stage: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stage = RulesStage(REGISTRIES)
    state: dict[str, Any] = {}
    hazards: list[Hazard] = []
    for batch in batches:
        if new_stage:
            stage = RulesStage(REGISTRIES)  # nothing carried in memory
        if reload_state:
            state = orjson.loads(orjson.dumps(state))  # as recovered from the changelog
        hazards += stage.process(batch, state, BOOK).hazards
    return [h.to_dict() for h in hazards], state


@pytest.mark.parametrize("seed", [11, 12])
def test_what_is_carried_in_memory_changes_no_hazard_and_no_state(seed: int) -> None:
    batches = _storm(seed)
    hazards, state = _run(batches, reload_state=False, new_stage=False)
    assert {h["hazard_type"] for h in hazards} >= {"rainstorm", "wind"}
    assert {h["level"] for h in hazards if h["hazard_type"] == "rainstorm"} >= {"orange", "red"}
    for reload_state, new_stage in ((True, False), (False, True), (True, True)):
        again_hazards, again_state = _run(batches, reload_state=reload_state,
                                          new_stage=new_stage)
        assert again_hazards == hazards, (reload_state, new_stage)
        # the same state as the changelog holds it (points are tuples in memory, lists
        # once restored)
        assert orjson.dumps(again_state) == orjson.dumps(state), (reload_state, new_stage)


@pytest.mark.parametrize("seed", [11, 13])
def test_series_changed_in_place_within_a_batch_change_no_hazard_and_no_state(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage copies a series and a source's state once per batch and changes the
    copies in place (``evaluate.Copies``): the same
    hazards and state as copying at every reading."""
    batches = _storm(seed)
    hazards, state = _run(batches, reload_state=False, new_stage=False)
    monkeypatch.setattr(evaluate, "insert",
                        lambda series, t, value, keep_s, owned=None: insert(series, t, value,
                                                                             keep_s))
    writable = RulesStage._writable

    def copying(stage: RulesStage, stored: dict[str, Any] | None) -> dict[str, Any]:
        stage.copies = evaluate.Copies()  # nothing copied yet: a copy at every reading
        return writable(stage, stored)

    monkeypatch.setattr(RulesStage, "_writable", copying)
    copying_hazards, copying_state = _run(batches, reload_state=False, new_stage=False)
    assert len(hazards) > 10
    assert copying_hazards == hazards
    assert orjson.dumps(copying_state) == orjson.dumps(state)


def test_a_batch_that_fails_midway_leaves_the_state_it_was_given_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    batches = _storm(11)
    stage = RulesStage(REGISTRIES)
    state: dict[str, Any] = {}
    for batch in batches[:70]:
        stage.process(batch, state, BOOK)
    before = orjson.dumps(state)
    held = dict(state)
    record = RulesStage._record
    calls = 0

    def failing(self: RulesStage, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 7:  # after each station's state and series were changed in place
            raise RuntimeError("boom")
        return record(self, *args, **kwargs)

    monkeypatch.setattr(RulesStage, "_record", failing)
    with pytest.raises(RuntimeError):
        stage.process(batches[70], state, BOOK)
    assert calls == 7
    # the batch wrote its states into the mapping (the loop drops such a turn's writes);
    # what the mapping held before the batch was not changed
    assert orjson.dumps(held) == before


def test_a_changed_rainstorm_rule_has_its_own_bounds() -> None:
    rule = BOOK.rainstorm
    assert rule.lowest_mm == min(b.rain_mm for b in rule.levels.values())
    assert rule.longest_window_s == 3600.0 * max(b.window_h for b in rule.levels.values())
    wider = {label: b.model_copy(update={"window_h": b.window_h * 2,
                                         "rain_mm": b.rain_mm + 1})
             for label, b in rule.levels.items()}
    changed = rule.model_copy(update={"levels": wider})
    assert changed.lowest_mm == rule.lowest_mm + 1
    assert changed.longest_window_s == 2 * rule.longest_window_s
    assert rule.lowest_mm == min(b.rain_mm for b in rule.levels.values())  # unchanged


def test_decoded_observations_keep_their_time_text_and_change_nothing() -> None:
    """A decoded observation keeps the text its time came in, and its seconds and ISO form
    are looked up by it (records.event_time) instead of computed for every record; the
    hazards and the state are the same as with observations made here."""
    batches = _storm(12)
    hazards, state = _run(batches, reload_state=False, new_stage=False)
    decoded = [[Observation.from_json(o.to_json()) for o in batch] for batch in batches]
    assert all(o.event is not None and o.event.at is o.observed_at for b in decoded for o in b)
    assert decoded[0][0] == batches[0][0]  # the text is not part of the value
    again_hazards, again_state = _run(decoded, reload_state=False, new_stage=False)
    assert again_hazards == hazards
    assert orjson.dumps(again_state) == orjson.dumps(state)


def test_emitted_hazards_explain_the_level_they_carry() -> None:
    hazards, _ = _run(_storm(13), reload_state=False, new_stage=False)
    for h in hazards:
        level = h["level"]
        if h["hazard_type"] == "rainstorm" and level != "none":
            assert f"达{WarningLevel.parse(level).chinese}暴雨预警" in h["reason"]
        if h["hazard_type"] == "wind" and level != "none":
            assert f"达{WarningLevel.parse(level).chinese}台风" in h["reason"]


def test_ingest_locates_each_distinct_point_once_and_places_are_unchanged() -> None:
    places = PlaceIndex.load()
    located: list[int] = []

    def find(lon: np.ndarray, lat: np.ndarray) -> list[Place]:
        located.append(len(lon))
        return places.find(lon, lat)

    stage = IngestStage(find, REGISTRIES)
    stations = sorted(REGISTRIES.weather)[:5]
    records = [RawRecord(json.dumps({
        "station_id": s, "observed_at": f"2017-08-23T{8 + k:02d}:00:00+08:00",
        "rain_mm": 1.0}).encode()) for k in range(3) for s in stations]
    records.append(RawRecord(json.dumps({  # a record with its own position, elsewhere
        "station_id": stations[0], "observed_at": "2017-08-23T12:00:00+08:00",
        "rain_mm": 1.0, "lon": 113.3, "lat": 22.2}).encode()))
    observations = stage.process("weather", records).observations
    assert located == [len(stations) + 1]
    one_by_one = [places.find(np.array([o.lon]), np.array([o.lat]))[0] for o in observations]
    assert [o.place for o in observations] == one_by_one
    assert len({o.place.town_code for o in observations}) > 1
    # the next batches: known points are not located again, a new one is
    again = stage.process("weather", records[:5]).observations
    assert located == [len(stations) + 1]
    assert [o.place for o in again] == one_by_one[:5]
    elsewhere = RawRecord(json.dumps({
        "station_id": stations[1], "observed_at": "2017-08-23T13:00:00+08:00",
        "rain_mm": 1.0, "lon": 113.5, "lat": 22.25}).encode())
    [moved] = stage.process("weather", [records[0], elsewhere]).observations[1:]
    assert located == [len(stations) + 1, 1]
    assert moved.place == places.find(np.array([113.5]), np.array([22.25]))[0]


def test_ingest_keeps_at_most_located_max_points(monkeypatch: pytest.MonkeyPatch) -> None:
    places = PlaceIndex.load()
    monkeypatch.setattr(ingest, "LOCATED_MAX", 4)
    stage = IngestStage(places.find, REGISTRIES)
    for k in range(6):
        records = [RawRecord(json.dumps({
            "station_id": s, "observed_at": f"2017-08-23T{8 + k:02d}:00:00+08:00",
            "rain_mm": 1.0}).encode()) for s in sorted(REGISTRIES.weather)[k:k + 3]]
        observations = stage.process("weather", records).observations
        assert len(stage.located) <= 4
        assert [o.place for o in observations] == [
            places.find(np.array([o.lon]), np.array([o.lat]))[0] for o in observations]


_PLACE_VALUE = st.one_of(st.text(max_size=3), st.integers(-2, 2), st.floats(-2, 2),
                         st.booleans(), st.none())


@given(st.lists(st.dictionaries(st.sampled_from(["city_code", "city_name", "district_code",
                                                 "town_code", "village_code", "village_name",
                                                 "town_name", "district_name", "other"]),
                                _PLACE_VALUE), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_decoded_places_come_from_the_cache_only_when_they_are_the_same(
        dicts: list[dict[str, Any]]) -> None:
    """Place.from_dict keeps the Places it decoded: whatever dicts come in, in any order
    (keys missing, in another order, numbers equal to each other), each gives the Place
    built field by field."""
    fields = [f for f in Place.__dataclass_fields__]
    full = [{k: d.get(k, "") for k in fields} for d in dicts]  # to_dict's shape: cached
    for d in [*dicts, *full, *dicts, *full]:
        assert Place.from_dict(d) == Place(*[str(d.get(k, "")) for k in fields])
    place = Place.from_dict({k: "x" for k in fields})
    assert Place.from_dict(place.to_dict()) is place  # the cache is really used


def test_the_state_s_points_are_out_of_the_garbage_collector_s_sight() -> None:
    """A day of readings per source is ~160,000 points in a worker; as two-item lists the
    cyclic collector scanned each at every full collection (18-22 % of a worker's CPU).
    New points are tuples of floats, which it stops tracking once it has seen them."""
    _, state = _run(_storm(11), reload_state=False, new_stage=False)
    gc.collect()
    points = [p for st in state.values() for part in ("series", "seen")
              for series in st[part].values() for p in series]
    assert len(points) > 1_000
    assert not any(gc.is_tracked(p) for p in points)


def test_a_worker_s_collector_is_tuned_and_its_start_up_objects_frozen() -> None:
    from onemap.streams.worker import GC_YOUNG, tune_gc
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG, *before[1:])
        assert gc.get_freeze_count() > 10_000  # this test process's modules, at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
