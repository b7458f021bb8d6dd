"""The ingest loop's pure parts: a fetched batch as records per feed, and what to commit."""

from __future__ import annotations

from typing import NamedTuple

from aiokafka import TopicPartition

from onemap.streams.batch_loop import next_offsets
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


def test_a_tombstone_becomes_an_empty_record_for_the_dead_letters() -> None:
    tp = TopicPartition("p.in.water", 0)
    out = by_feed({tp: [Fetched("p.in.water", 0, 5, None, None)]}, {"p.in.water": "water"})
    assert out["water"][0].value == b"" and out["water"][0].offset == 5


def test_commit_one_past_each_partitions_last_record() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert next_offsets({a: fetched("t", 0, range(10, 13)), b: []}) == {a: 13}
