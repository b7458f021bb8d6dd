"""A stage on a plain aiokafka batch loop: consumer, producer, turns, commits, lag.

faust's per-event stream costs 300-400 µs of CPU per record on this machine, a plain
aiokafka loop ~16 µs (benchmarks/README.md), so the stages that see every reading (ingest,
rules) run on this loop, each in a consumer group of its own, in the same worker process and
event loop as the faust app (which keeps the low-rate lifecycle and sinks).

Each turn: take what is fetched (the priority topics' records first: the consumer fetches
every partition ahead and would otherwise hand out a partition's thousands of buffered
readings before an incident report fetched with them), let the stage process it into an
``Outbox``, wait until the broker has it, then commit the batch's offsets. A worker that dies
in between consumes the batch again: at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError

from onemap.streams.context import WorkerContext
from onemap.streams.health import consumer_lag
from onemap.streams.outbox import Outbox, PartitionCache

log = logging.getLogger(__name__)

#: how long the lag gauge waits for a new partition's position before leaving it out
POSITION_WAIT_S = 1.0
#: the largest producer batch (aiokafka's default is 16 KiB). The producer keeps one request
#: in flight per partition, so a batch's 200-300 KB of output in 16 KiB pieces waited for a
#: broker round trip per piece; under the broker's default 1 MB record-batch limit
#: (``message.max.bytes``) with room for the batch header
MAX_BATCH_BYTES = 1_000_000
Batch = dict[TopicPartition, list[Any]]


def next_offsets(batch: Mapping[TopicPartition, Sequence[Any]]) -> dict[TopicPartition, int]:
    """What to commit once a batch is out: one past each partition's last record."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:  # should one come back, its offset is read again
            self.loop.committed.pop(tp, None)
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.loop.assigned(set(assigned))


class BatchLoop:
    """The shell of a stage on its own consumer group; subclasses process the batches."""

    #: the stage's name: its group is ``<app id>-<name>``, its metrics' stage label
    name = "stage"

    def __init__(self, ctx: WorkerContext, topics: Collection[str],
                 priority_topics: Collection[str] = ()) -> None:
        self.ctx = ctx
        self.m = ctx.metrics
        self.topics = sorted(topics)
        self.priority_topics = set(priority_topics)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        #: this worker's committed offsets per assigned partition (for the lag gauge)
        self.committed: dict[TopicPartition, int] = {}
        self._partitions: PartitionCache = {}

    @property
    def group(self) -> str:
        return f"{self.ctx.settings.app_id}-{self.name}"

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping); a crash propagates."""
        s = self.ctx.settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=self.group,
            client_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=s.batch_size,
            fetch_max_wait_ms=int(s.fetch_max_wait_s * 1000),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000),
            # the same partition number of every topic to the same worker (state keyed by
            # source lives in one partition number whichever lane its records take)
            partition_assignment_strategy=(RangePartitionAssignor,))
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers,
                                         client_id=self.group, acks="all", linger_ms=5,
                                         max_batch_size=MAX_BATCH_BYTES)
        try:
            await self.producer.start()
            await self.consumer.start()
            await self.starting()
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))
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
                    log.warning("%s loop: stopping %s failed", self.name,
                                type(part).__name__, exc_info=True)

    # -- what a stage fills in --------------------------------------------------------------

    async def starting(self) -> None:
        """Before the consumer joins its group."""

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Partitions taken away (called between turns)."""

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """Partitions given (called between turns)."""

    async def idle(self, producer: AIOKafkaProducer) -> None:
        """Each turn, records or not (timers of the stage)."""

    async def process(self, batch: Batch, out: Outbox, producer: AIOKafkaProducer) -> int:
        """One batch into ``out``; returns the records produced. The loop sends ``out``,
        flushes and commits afterwards."""
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------

    def outbox(self, producer: AIOKafkaProducer) -> Outbox:
        return Outbox(lambda: producer, self.m.broker_errors.labels("send").inc,
                      self._partitions)

    async def fetch(self, consumer: AIOKafkaConsumer) -> Batch:
        """The priority topics' fetched records if there are any, else what is fetched
        (waiting up to the batch wait)."""
        s = self.ctx.settings
        wanted = [tp for tp in consumer.assignment() if tp.topic in self.priority_topics]
        if wanted:
            got: Batch = await consumer.getmany(*wanted, timeout_ms=0,
                                                max_records=s.batch_size)
            if got:
                return got
        batch: Batch = await consumer.getmany(timeout_ms=int(s.batch_wait_s * 1000),
                                              max_records=s.batch_size)
        return batch

    async def turn(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        batch = await self.fetch(consumer)
        await self.idle(producer)
        if not batch:
            return
        started = time.perf_counter()
        out = self.outbox(producer)
        produced = await self.process(batch, out, producer)
        await out.send()
        await producer.flush()
        offsets = next_offsets(batch)
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:  # a rebalance took the partitions meanwhile
            self.m.broker_errors.labels("commit").inc()
            log.warning("%s offsets not committed, the batch may come again: %r",
                        self.name, exc)
        else:
            self.committed.update(offsets)
        self.m.records_out.labels(self.name).inc(produced)
        self.m.batch_seconds.labels(self.name).observe(time.perf_counter() - started)

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records left per assigned partition: the broker's end - committed (the
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
        return consumer_lag(by_key, self.topics,
                            lambda k: consumer.highwater(by_key[k]), committed.get)
