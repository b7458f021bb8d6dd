"""The batch loops' pure parts: a fetched batch as records per feed, what to commit, how long
to linger after a short batch."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import NamedTuple, cast

import orjson
import pytest
from aiokafka import TopicPartition

from onemap.errors import ConfigError
from onemap.registries import Registries, default_registries_dir
from onemap.settings import Settings
from onemap.streams.batch_loop import BatchLoop, next_offsets
from onemap.streams.context import WorkerContext
from onemap.streams.deadletter import RawRecord
from onemap.streams.ingest import IngestStage
from onemap.streams.ingest_loop import by_feed


class Fetched(NamedTuple):  # the fields of aiokafka's ConsumerRecord the loop reads
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def fetched(topic: str, partition: int, offsets: range) -> list[Fetched]:
    return [Fetched(topic, partition, o, b"k", b"v%d" % o) for o in offsets]


def test_batch_by_feed_keeps_each_partitions_order_and_where_each_record_came_from() -> None:
    water0, water1 = TopicPartition("p.in.water", 0), TopicPartition("p.in.water", 1)
    cap = TopicPartition("p.in.cap", 3)
    batch = {water1: fetched("p.in.water", 1, range(7, 9)),
             cap: fetched("p.in.cap", 3, range(2, 3)),
             water0: fetched("p.in.water", 0, range(0, 2))}
    out = by_feed(batch, {"p.in.water": "water", "p.in.cap": "cap"})
    assert sorted(out) == ["cap", "water"]
    assert [(r.partition, r.offset, r.value) for r in out["water"]] == [
        (1, 7, b"v7"), (1, 8, b"v8"), (0, 0, b"v0"), (0, 1, b"v1")]
    assert [(r.topic, r.partition, r.offset) for r in out["cap"]] == [("p.in.cap", 3, 2)]


def test_a_tombstone_becomes_an_empty_record_in_the_dead_letters() -> None:
    tp = TopicPartition("p.in.water", 0)
    out = by_feed({tp: [Fetched("p.in.water", 0, 5, None, None),
                        *fetched("p.in.water", 0, range(6, 7))]}, {"p.in.water": "water"})
    stage = IngestStage(lambda lon, lat: [], Registries.load(default_registries_dir()))
    result = stage.process("water", out["water"])
    assert not result.observations
    assert [(d.record, d.reason) for d in result.dead_letters] == [
        (RawRecord(b"", None, "p.in.water", 0, 5), "invalid-json"),
        (RawRecord(b"v6", b"k", "p.in.water", 0, 6), "invalid-json")]
    assert orjson.loads(result.dead_letters[0].to_json(datetime.now(UTC)))["original_b64"] == ""


def test_commit_one_past_each_partitions_last_record() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert next_offsets({a: fetched("t", 0, range(10, 13)), b: []}) == {a: 13}


def loop_with(**settings: str) -> BatchLoop:
    ctx = SimpleNamespace(settings=Settings.from_env(settings), metrics=None)
    return BatchLoop(cast(WorkerContext, ctx), ["p.in.water"])


def test_a_short_batch_lingers_a_full_or_empty_one_does_not() -> None:
    loop = loop_with(ONEMAP_BATCH_SIZE="4", ONEMAP_BATCH_LINGER="0.02")
    tp = TopicPartition("p.in.water", 0)
    now = time.monotonic()
    assert loop.linger({tp: fetched("p.in.water", 0, range(4))}, now) == 0.0
    assert loop.linger({}, now) == 0.0
    short = {tp: fetched("p.in.water", 0, range(2))}
    assert 0.015 < loop.linger(short, now) <= 0.02
    assert loop.linger(short, now - 0.05) == 0.0  # the turn itself took longer


def test_the_linger_is_at_most_the_batch_wait() -> None:
    loop = loop_with(ONEMAP_BATCH_LINGER="0.5", ONEMAP_BATCH_WAIT="0.005")
    short = {TopicPartition("p.in.water", 0): fetched("p.in.water", 0, range(1))}
    assert loop.linger(short, time.monotonic()) <= 0.005


def test_a_linger_out_of_range_fails_at_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as failed:
        Settings.from_env({"ONEMAP_BATCH_LINGER": "5"})
    assert failed.value.field == "ONEMAP_BATCH_LINGER"


@pytest.mark.parametrize("wait", ["0", "-1", "11"])
def test_a_batch_wait_out_of_range_fails_at_start_up_naming_the_variable(wait: str) -> None:
    """(faust's take with no wait would hold a short batch until the batch size is reached:
    at the alerts' rates, for ever)"""
    with pytest.raises(ConfigError) as failed:
        Settings.from_env({"ONEMAP_BATCH_WAIT": wait})
    assert failed.value.field == "ONEMAP_BATCH_WAIT"


def test_a_batch_in_slices_gives_every_observation_and_lets_other_tasks_run() -> None:
    """600 water records (one malformed) in slices of 250: every observation and the dead
    letter in the outbox, in the order of one go, with the worker's other tasks run between
    the slices."""
    import asyncio
    from typing import Any

    from onemap.streams.context import build_context
    from onemap.streams.ingest_loop import IngestLoop
    from onemap.streams.outbox import Outbox

    seen: list[int] = []
    health = SimpleNamespace(saw=lambda feed, n, observations: seen.append(n))
    loop = IngestLoop(build_context(Settings.from_env({})), cast(Any, health),
                      {"water": "p.in.water"}, lambda feed: f"p.observations.{feed}",
                      "p.deadletter")
    tp = TopicPartition("p.in.water", 0)
    values = [b'{"station_id":"ZH-RIV-001","observed_at":"2017-08-23T%02d:%02d:00+08:00",'
              b'"level_m":1.5}' % divmod(i, 60) for i in range(600)]
    values[301] = b'{"station_id": "ZH-RIV-001", "lev'
    batch = {tp: [Fetched(tp.topic, 0, i, b"ZH-RIV-001", v) for i, v in enumerate(values)]}
    out = Outbox(lambda: None, lambda: None, {})
    ran: list[int] = []

    async def run() -> int:
        async def other() -> None:
            while True:
                await asyncio.sleep(0)
                ran.append(1)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        ran.clear()
        produced = await loop.process(cast(Any, batch), out, cast(Any, None))
        task.cancel()
        return produced

    assert asyncio.run(run()) == 599
    assert seen == [250, 250, 100] and len(ran) >= 2
    observed = [orjson.loads(v or b"")["observed_at"]
                for _, v, _ in out.records["p.observations.water"]]
    assert observed == [f"2017-08-23T{i // 60:02d}:{i % 60:02d}:00+08:00"
                        for i in range(600) if i != 301]
    assert len(out.records["p.deadletter"]) == 1
