"""Stage 1 on a plain aiokafka batch loop: the feeds' topics -> observations, dead letters.

Why not a faust agent like the other stages: faust's per-event stream costs 300-400 µs of CPU
per record on this machine, a plain aiokafka loop ~16 µs (benchmarks/README.md), and every
reading crossed faust twice (ingest, then rules). Ingest keeps no state, so it needs none of
faust's tables: it is a consumer of its own, in a consumer group of its own
(``<app id>-ingest``), in the same worker process and event loop as the faust app.

Each turn of the loop: fetch what is there (up to ``batch_size`` records, waiting at most
``batch_wait_s`` when nothing is), parse and locate it per feed (``IngestStage.process``,
vectorised), queue the output per partition (``Outbox``), wait until the broker has it,
then commit the batch's offsets. A worker that dies in between consumes the batch again:
at least once, as before; the rules stage is idempotent on a reading it already has.

Partitions are shared between the workers of the group like faust's: a rebalance may
re-deliver a batch whose commit it cut off (the same at-least-once). A partition this group
has never committed starts where faust's group (``<app id>``, which consumed the feeds
before this loop existed) left it, else at the earliest record: an upgraded deployment
neither skips nor re-reads its input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, KafkaError

from onemap.streams.context import WorkerContext
from onemap.streams.deadletter import RawRecord
from onemap.streams.health import HealthMonitor, consumer_lag
from onemap.streams.outbox import Outbox, PartitionCache

log = logging.getLogger(__name__)

#: how long the lag gauge waits for a new partition's position before leaving it out
POSITION_WAIT_S = 1.0


def group_of(app_id: str) -> str:
    """The ingest loop's consumer group (the faust app's is ``app_id`` itself)."""
    return f"{app_id}-ingest"


def by_feed(batch: Mapping[Any, Sequence[Any]], feed_of_topic: Mapping[str, str],
            ) -> dict[str, list[RawRecord]]:
    """A fetched batch (partition -> aiokafka records) as raw records per feed, each
    partition's records in offset order. A record without a value (a tombstone) becomes
    an empty one: the parser rejects it into the dead letters, with its offset."""
    out: dict[str, list[RawRecord]] = {}
    for tp, records in batch.items():
        feed = feed_of_topic[tp.topic]
        rows = out.setdefault(feed, [])
        rows.extend(RawRecord(r.value if r.value is not None else b"", r.key, r.topic,
                              r.partition, r.offset) for r in records)
    return out


def next_offsets(batch: Mapping[TopicPartition, Sequence[Any]]) -> dict[TopicPartition, int]:
    """What to commit once a batch is out: one past each partition's last record."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


class _Forget(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions leave the lag gauge's committed offsets (should one come back,
    its offset is the group's, read again, not the one this worker last saw)."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.committed = committed

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class IngestLoop:
    """The ingest stage's consumer, producer and loop; ``run`` is a task of the faust app."""

    def __init__(self, ctx: WorkerContext, health: HealthMonitor,
                 topics: Mapping[str, str], lanes: Callable[[str], str],
                 deadletter_topic: str, *, priority_feeds: Collection[str] = ()) -> None:
        """``topics``: feed -> its input topic; ``lanes``: feed -> the observations topic
        its observations go to; ``priority_feeds``: feeds whose records are taken before
        any other fetched record."""
        self.ctx = ctx
        self.health = health
        self.m = ctx.metrics
        self.feed_of_topic = {topic: feed for feed, topic in topics.items()}
        self.lanes = lanes
        self.deadletter_topic = deadletter_topic
        self.priority_topics = {t for t, feed in self.feed_of_topic.items()
                                if feed in priority_feeds}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        #: this worker's committed offsets per assigned partition (for the lag gauge)
        self.committed: dict[TopicPartition, int] = {}
        self._partitions: PartitionCache = {}

    async def run(self) -> None:
        s = self.ctx.settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=group_of(s.app_id),
            client_id=f"{s.app_id}-ingest", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=s.batch_size,
            fetch_max_wait_ms=int(s.fetch_max_wait_s * 1000),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000))
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers,
                                         client_id=f"{s.app_id}-ingest", acks="all",
                                         linger_ms=5)
        try:
            await self.producer.start()
            await self.consumer.start()
            try:
                await self.seed_from_faust()
            except (KafkaError, OSError) as exc:
                log.warning("cannot read the faust group's offsets of the feeds; partitions "
                            "this group never consumed start at the earliest record: %r", exc)
            self.consumer.subscribe(sorted(self.feed_of_topic), listener=_Forget(self.committed))
            while True:
                await self.turn(self.consumer, self.producer)
        finally:
            await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        """Leave the group at once (its partitions go to the others without waiting for
        the session to time out) and deliver what is queued."""
        for part in (self.consumer, self.producer):
            if part is not None:
                try:
                    await part.stop()
                except Exception:  # stopping anyway: say so and go on
                    log.warning("ingest loop: stopping %s failed", type(part).__name__,
                                exc_info=True)

    async def turn(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        s = self.ctx.settings
        batch = await self.priority_first(consumer)
        if not batch:
            batch = await consumer.getmany(timeout_ms=int(s.batch_wait_s * 1000),
                                           max_records=s.batch_size)
        if not batch:
            return
        started = time.perf_counter()
        out = Outbox(lambda: producer, self.m.broker_errors.labels("send").inc,
                     self._partitions)
        produced = 0
        for feed, records in by_feed(batch, self.feed_of_topic).items():
            produced += self.process(feed, records, out)
        await out.send()
        await producer.flush()
        offsets = next_offsets(batch)
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:  # a rebalance took the partitions meanwhile
            self.m.broker_errors.labels("commit").inc()
            log.warning("ingest offsets not committed, the batch may come again: %r", exc)
        else:
            self.committed.update(offsets)
        self.m.records_out.labels("ingest").inc(produced)
        self.m.batch_seconds.labels("ingest").observe(time.perf_counter() - started)

    async def priority_first(self, consumer: AIOKafkaConsumer,
                             ) -> dict[TopicPartition, list[Any]]:
        """The priority feeds' records already fetched, if any, as a batch of their own.

        The consumer fetches every partition ahead and hands out its buffer partition by
        partition: in a burst, thousands of readings of one partition would go before an
        incident report fetched at the same time (the burst test saw the rules stage decide
        on up to 3,500 readings before the report). Asked for first, without waiting, the
        report leaves at the next turn.
        """
        wanted = [tp for tp in consumer.assignment() if tp.topic in self.priority_topics]
        if not wanted:
            return {}
        got: dict[TopicPartition, list[Any]] = await consumer.getmany(
            *wanted, timeout_ms=0, max_records=self.ctx.settings.batch_size)
        return got

    def process(self, feed: str, records: list[RawRecord], out: Outbox) -> int:
        """One feed's records through the pure stage, into ``out``; returns the number of
        observations."""
        self.m.records_in.labels(feed).inc(len(records))
        result = self.ctx.ingest.process(feed, records)
        self.health.saw(feed, len(records), result.observations)
        now = self.ctx.now()
        for dl in result.dead_letters:
            self.m.dead_letters.labels(feed, dl.reason).inc()
            log.info("dead letter", extra={"feed": feed, "reason": dl.reason,
                                           "offset": dl.record.offset})
            out.add(self.deadletter_topic, dl.record.key, dl.to_json(now))
        lane = self.lanes(feed)
        for obs in result.observations:
            out.add(lane, obs.source_id.encode(), obs.to_json())
        return len(result.observations)

    async def seed_from_faust(self) -> None:
        """Before joining: commit, for this group, where faust's group left each feed
        partition this group has never committed (the version before this loop consumed
        the feeds in faust's group). Done by consumers that join nothing; a partition this
        group has committed is left alone, so a worker joining a running group changes
        nothing."""
        s = self.ctx.settings
        ours, faust_group = (
            AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers, group_id=group,
                             client_id=f"{s.app_id}-ingest-seed", enable_auto_commit=False)
            for group in (group_of(s.app_id), s.app_id))
        await ours.start()
        await faust_group.start()
        try:
            await ours.topics()  # the metadata, for the partitions of each topic
            seeds: dict[TopicPartition, int] = {}
            for topic in sorted(self.feed_of_topic):
                for partition in sorted(ours.partitions_for_topic(topic) or ()):
                    tp = TopicPartition(topic, partition)
                    if await ours.committed(tp) is not None:
                        continue
                    left_at = await faust_group.committed(tp)
                    if left_at is not None and left_at >= 0:
                        seeds[tp] = left_at
            if seeds:
                ours.assign(list(seeds))
                await ours.commit(seeds)
                log.warning("ingest starts %d feed partitions where the faust group left "
                            "them (upgrade): %s", len(seeds),
                            ", ".join(f"{tp.topic}[{tp.partition}]@{n}"
                                      for tp, n in sorted(seeds.items())))
        finally:
            await faust_group.stop()
            await ours.stop()

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records left per assigned feed partition: the broker's end - committed (the
        consumer's position where this worker has committed nothing yet)."""
        consumer = self.consumer
        if consumer is None:
            return {}
        committed: dict[tuple[str, int], int] = {}
        by_key: dict[tuple[str, int], TopicPartition] = {}
        for tp in consumer.assignment():
            offset: int | None = self.committed.get(tp)
            if offset is None:  # known once the first fetch for it was made
                try:
                    offset = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT_S)
                except (TimeoutError, KafkaError):
                    continue
            if offset is None:
                continue
            committed[(tp.topic, tp.partition)] = offset
            by_key[(tp.topic, tp.partition)] = tp
        return consumer_lag(by_key, self.feed_of_topic,
                            lambda k: consumer.highwater(by_key[k]), committed.get)
