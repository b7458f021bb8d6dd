"""The observations a worker's ingest loop hands to its own rules loop by their bytes
(streams/handoff.py): taken once, bounded, and the rules loop's output the same as when it
decodes every record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from aiokafka import TopicPartition

from onemap.records import Observation, Place
from onemap.streams.handoff import LocalObservations
from onemap.streams.outbox import Outbox
from tests.test_ingest_loop import Fetched
from tests.test_rules_loop import HAZARDS, rising_water_batch, rules_loop_with


def _obs(level: float) -> Observation:
    return Observation("water", "ZH-RIV-001", "river", datetime(2017, 8, 23, tzinfo=UTC),
                       113.3, 22.1, Place(), {"level_m": level})


def test_an_observation_is_taken_once_by_its_bytes() -> None:
    local = LocalObservations()
    o = _obs(1.5)
    local.put(o.to_json(), o)
    assert local.take(bytes(bytearray(o.to_json()))) is o  # equal bytes, another object
    assert local.take(o.to_json()) is None  # taken: the record is decoded
    assert (local.taken, local.missed, len(local)) == (1, 1, 0)


def test_at_most_capacity_are_kept_the_oldest_pushed_out() -> None:
    local = LocalObservations(capacity=3)
    kept = [_obs(float(i)) for i in range(5)]
    for o in kept:
        local.put(o.to_json(), o)
    assert len(local) == 3
    assert local.take(kept[0].to_json()) is None and local.take(kept[1].to_json()) is None
    assert [local.take(o.to_json()) for o in kept[2:]] == kept[2:]


def test_with_nothing_to_take_nothing_is_kept() -> None:
    local = LocalObservations(capacity=0)
    o = _obs(1.0)
    local.put(o.to_json(), o)
    assert len(local) == 0 and local.take(o.to_json()) is None


def test_the_rules_loop_takes_what_ingest_kept_and_gives_what_decoding_gives() -> None:
    """The same batch through two rules loops, one decoding every record, one given the
    observations under their bytes (and one record's bytes not given: it is decoded): the
    same hazards (bytes) and the same state, and only the one record decoded."""
    batch = rising_water_batch()
    decoding, taking = rules_loop_with(10_000), rules_loop_with(10_000)
    local = taking.local
    local.capacity = 1_000
    records = [r for rs in batch.values() for r in rs]
    for r in records[1:]:
        assert r.value is not None
        local.put(r.value, Observation.from_json(r.value))
    outs = [Outbox(lambda: None, lambda: None, {}) for _ in range(2)]
    for loop, out in zip((decoding, taking), outs, strict=True):
        asyncio.run(loop.process(cast(Any, batch), out, cast(Any, None)))
    assert outs[0].records[HAZARDS] == outs[1].records[HAZARDS]
    assert {k: orjson.dumps(v) for k, v in decoding.state.pending.items()} == {
        k: orjson.dumps(v) for k, v in taking.state.pending.items()}
    assert (local.taken, local.missed) == (len(records) - 1, 1)
    assert decoding.local.taken == 0  # a loop on its own decodes everything


def test_a_record_without_a_value_still_goes_to_the_dead_letters() -> None:
    loop = rules_loop_with(100)
    tp = TopicPartition("p.observations", 0)
    out = Outbox(lambda: None, lambda: None, {})
    asyncio.run(loop.process(cast(Any, {tp: [Fetched(tp.topic, 0, 0, b"k", None)]}), out,
                             cast(Any, None)))
    assert len(out.records["p.deadletter"]) == 1
