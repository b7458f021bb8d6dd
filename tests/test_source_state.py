"""The stored layout of the rules' per-source state (streams/source_state.py): a head plus
hourly chunks, so that a batch writes only what it changed, and exactly the same rules
outcome as keeping the whole value."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, MutableMapping
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from onemap.records import Hazard, KeyFigure, Observation, Place
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import RulesStage, state_key
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.streams.source_state import CHUNK_S, assemble, chunk_key, is_chunk_key, split

BOOK = load_rulebook(default_rules_dir())
REGISTRIES = Registries.load(default_registries_dir())
CST = timezone(timedelta(hours=8))
T0 = datetime(2017, 8, 22, 0, 0, tzinfo=CST)
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001", "x")


def json_copy(value: Any) -> Any:
    """What a restart recovers: the changelog's JSON, decoded."""
    return orjson.loads(orjson.dumps(value))


class SplitStore(MutableMapping[str, Any]):
    """The rules loop's LoopSourceState in miniature (no broker, a write per reading):
    logical values in, head + chunk records out (``records``, in write order, as JSON),
    assembled again on read."""

    def __init__(self) -> None:
        self.raw: dict[str, Any] = {}
        self.records: list[tuple[str, bytes | None]] = []
        #: the logical value each head record was written from
        self.values: list[Any] = []
        self.changed_from: dict[str, float] = {}

    def __getitem__(self, key: str) -> Any:
        return assemble(self.raw[key], lambda k: self.raw.get(chunk_key(key, k)), key)

    def __setitem__(self, key: str, value: Any) -> None:
        stored = split(value, self.raw.get(key), self.changed_from.get(key))
        self.values.append(json_copy(value))
        writes = [(key, stored.head), *((chunk_key(key, k), c) for k, c in stored.chunks.items())]
        for table_key, record in writes:
            self.records.append((table_key, None if record is None else orjson.dumps(record)))
            if record is None:
                self.raw.pop(table_key, None)
            else:
                self.raw[table_key] = json_copy(record)  # as recovered: no shared objects

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return (k for k in self.raw if not is_chunk_key(k))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def readings(seed: int) -> list[list[Observation]]:
    """Two days of batches for a water, a weather and a geohazard source: in order, late,
    duplicate, too late, accumulations with resets, a long gap, rain high enough to alert."""
    rng = random.Random(seed)
    out: list[list[Observation]] = []
    minute = 0.0
    since = T0.isoformat()
    accum = 0.0
    while minute < 48 * 60:
        batch: list[Observation] = []
        for _ in range(rng.randint(1, 8)):
            minute += rng.choice((5.0, 5.0, 5.0, 1.0, 17.0))
            if rng.random() < 0.01:
                minute += 300  # a 5-hour silence
            at = T0 + timedelta(minutes=minute)
            lag = timedelta(minutes=rng.choice((0, 0, 0, 0, 3, 7, 14, 16, 40)))
            storm = 2000 < minute < 2400
            rain = round(rng.random() * (12.0 if storm else 0.8), 1)
            if rng.random() < 0.3:
                if rng.random() < 0.1:
                    accum, since = 0.0, (at - lag).isoformat()
                accum = round(accum + rain, 1)
                batch.append(_obs("weather", "ZH-AWS-028", at - lag,
                                  {"rain_accum_mm": accum}, {"accum_since": since}))
            else:
                batch.append(_obs("weather", "ZH-AWS-028", at - lag,
                                  {"rain_mm": rain, "wind_speed_ms": rng.random() * 20,
                                   "wind_gust_ms": rng.random() * 35}))
            batch.append(_obs("water", "ZH-RIV-001", at - lag,
                              {"level_m": round(1.2 + (1.3 if storm else 0.2) * rng.random(), 2)}))
            sensor = rng.choice(("gnss", "rain"))
            values = ({"displacement_mm": round(minute / 60 * (0.9 if storm else 0.1), 2)}
                      if sensor == "gnss" else {"rain_mm": rain})
            batch.append(_obs("geohazard", _point(), at - lag, values, {"sensor": sensor}))
            if rng.random() < 0.05:
                batch.append(batch[rng.randrange(len(batch))])  # a duplicate
        out.append(batch)
    return out


def _point() -> str:
    return next(iter(REGISTRIES.hazard_points))


def _obs(feed: str, source: str, at: datetime, values: dict[str, float],
         attrs: dict[str, str] | None = None) -> Observation:
    return Observation(feed=feed, source_id=source, source_kind=feed, observed_at=at,
                       lon=113.3, lat=22.1, place=PLACE, values=values, attrs=attrs or {})


def _run(batches: list[list[Observation]], state: MutableMapping[str, Any],
         store: SplitStore | None = None) -> list[Hazard]:
    stage = RulesStage(REGISTRIES)
    hazards: list[Hazard] = []
    for batch in batches:
        if store is not None:
            store.changed_from = {}
            for o in batch:
                key, t = state_key(o), o.observed_at.timestamp()
                store.changed_from[key] = min(t, store.changed_from.get(key, t))
        hazards += stage.process(batch, state, BOOK).hazards
    return hazards


def test_split_layout_gives_the_same_hazards_and_state_as_the_whole_value() -> None:
    batches = readings(seed=3)
    whole: dict[str, Any] = {}
    expected = _run(batches, whole)
    store = SplitStore()
    got = _run(batches, store, store)
    assert got == expected
    assert {h.level.label for h in expected} >= {"blue", "yellow"}  # the run did alert
    assert sorted(store) == sorted(whole)
    for key, value in whole.items():
        assert store[key] == json_copy(value), key
    # every sealed chunk a head names is stored, and nothing else is
    live = {chunk_key(k, c) for k in store for c in store.raw[k].get("sealed", [])}
    assert {k for k in store.raw if is_chunk_key(k)} == live


def test_a_batch_writes_one_small_head_and_a_chunk_only_when_an_hour_closes() -> None:
    batches = readings(seed=5)
    store = SplitStore()
    _run(batches[:-40], store, store)
    full = len(orjson.dumps(store["weather:ZH-AWS-028"]))
    assert full > 5_000  # a day of history: the value the old layout wrote every time
    store.records.clear()
    _run(batches[-40:], store, store)
    heads = [r or b"" for k, r in store.records if k == "weather:ZH-AWS-028"]
    chunks = [r for k, r in store.records if is_chunk_key(k)]
    written = sum(len(r or b"") for k, r in store.records if k.endswith("ZH-AWS-028"))
    assert written < len(heads) * full / 3  # the old layout wrote `full` each time
    assert sorted(len(h) for h in heads)[len(heads) // 2] < 2_000
    # ~40 batches span ~18 h of event time: some chunks sealed, far fewer than heads
    assert 0 < len(chunks) < len(store.records) / 2


def test_every_prefix_of_the_writes_recovers_a_state_that_was_written() -> None:
    """A worker killed while writing: the changelog keeps a prefix of its records."""
    batches = readings(seed=11)[:300]
    store = SplitStore()
    _run(batches, store, store)
    key = "weather:ZH-AWS-028"
    heads = [k for k, _ in store.records if not is_chunk_key(k)]
    written = [v for k, v in zip(heads, store.values, strict=True) if k == key]
    records = [(k, r) for k, r in store.records if k == key or k.endswith(":" + key)]
    heads_seen = 0
    raw: dict[str, Any] = {}
    for table_key, record in records:
        if record is None:
            raw.pop(table_key, None)
        else:
            raw[table_key] = orjson.loads(record)
        if table_key == key:
            heads_seen += 1
        recovered = assemble(raw[key], lambda c: raw.get(chunk_key(key, c)), key)
        assert recovered == written[heads_seen - 1]


def test_a_value_of_the_previous_layout_is_read_as_is_and_split_on_its_next_write() -> None:
    batches = readings(seed=7)
    assert len(batches) > 60
    whole: dict[str, Any] = {}
    _run(batches[:40], whole)
    store = SplitStore()
    store.raw = {k: json_copy(v) for k, v in whole.items()}  # as the old worker left it
    assert store["weather:ZH-AWS-028"] == json_copy(whole["weather:ZH-AWS-028"])
    expected = _run(batches[40:], whole)
    assert _run(batches[40:], store, store) == expected
    for key, value in whole.items():
        assert store[key] == json_copy(value)
        assert "sealed" in store.raw[key]


def test_chunks_of_another_chunk_size_are_replaced() -> None:
    value = {"newest": 3 * CHUNK_S, "series": {"rain": [[t * 900.0, 1.0] for t in range(13)]}}
    old = split(value, {}, None, chunk_s=1800.0)
    new = split(value, old.head, 3 * CHUNK_S, chunk_s=CHUNK_S)
    assert set(new.head["sealed"]) == {0, 1, 2}
    deleted = {k for k, c in new.chunks.items() if c is None}
    assert deleted == set(old.head["sealed"]) - set(new.head["sealed"])
    merged = {k: c for k, c in old.chunks.items() if c is not None}
    merged.update(new.chunks)
    assert assemble(new.head, merged.get) == value


def test_record_dicts_are_the_dataclass_fields_in_order() -> None:
    """Place and KeyFigure write their dicts by hand (speed): same keys, order, values."""
    assert PLACE.to_dict() == dataclasses.asdict(PLACE)
    assert list(PLACE.to_dict()) == [f.name for f in dataclasses.fields(Place)]
    assert Place.from_dict(PLACE.to_dict()) == PLACE
    figure = KeyFigure("水位", 3.52, "米", "警戒水位", 3.2)
    assert list(figure.to_dict().items()) == list(dataclasses.asdict(figure).items())


def test_a_head_shares_nothing_the_rules_change_in_place() -> None:
    """The rules loop keeps changing a source's logical value in place after it is written
    (streams/rules_loop.py): the head written from it, with or without series, keeps what
    was written; the parts the rules replace whole (``latest``) are shared, not copied."""
    for value in ({"newest": 7500.0, "levels": {"rainstorm": 2}, "below_since": {},
                   "flags": {}, "seen": {"": [[7500.0, 0.0]]},
                   "latest": {"values": {"rain_mm": 3.0}},
                   "series": {"rain": [[0.0, 1.0], [7500.0, 3.0]]}},
                  {"newest": 5.0, "levels": {"incident": 3}, "seen": {"": [[5.0, 0.0]]},
                   "latest": {"values": {}}, "series": {}}):
        first = split(value, {}, None).head
        # and a write of the common kind (same hour, nothing sealed) after the first
        value["newest"] += 60.0
        head = split(value, first, value["newest"]).head
        assert head["latest"] is value["latest"]
        written = orjson.dumps(head)
        value["levels"]["x"] = 1
        value["seen"][""].append((7800.0, 0.0))
        value["series"].setdefault("rain", []).append((7800.0, 4.0))
        value["latest"] = {"values": {"rain_mm": 4.0}}
        assert orjson.dumps(head) == written
