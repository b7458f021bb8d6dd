"""A stage on a plain aiokafka batch loop: consumer, producer, turns, commits, lag.

faust's per-event stream costs 300-400 µs of CPU per record on this machine, a plain
aiokafka loop ~16 µs (benchmarks/README.md), so the stages that see every reading (ingest,
rules) run on this loop, each in a consumer group of its own, in the same worker process and
event loop as the faust app (which keeps the low-rate lifecycle and sinks).

Each turn: take what is fetched (the priority topics' records first: the consumer fetches
every partition ahead and would otherwise hand out a partition's thousands of buffered
readings before an incident report fetched with them), let the stage process it into an
``Outbox`` and queue that for the broker. Every ``commit_interval_s`` (Kafka Streams'
``commit.interval.ms``), not every turn: take the offsets of the turns since the last commit
and what the stage held back for it (the rules' state, :meth:`BatchLoop.seal`), then, in a
task beside the next turns, wait until the broker has everything queued, write what the
stage held back, wait again, then commit those offsets. The turns go on meanwhile (the
waits for the broker, tens to hundreds of milliseconds when a network of sources writes
thousands of state heads, held up every reading behind them); one commit runs at a time,
and one that fails fails the loop at its next turn. A worker that dies in between
consumes those turns' records again: at least once, as with a commit per turn, only with up
to an interval's records to replay; a state record written once per interval instead of once
per turn is most of what the interval buys.

A rebalance (revoking partitions) drops what was held back: the new assignment starts every
partition at its committed offset, so the dropped turns' records come again, and a turn
that was under way when it happened is not kept either (``generation``), nor a commit that
had not written all of the stage's state yet: it stops writing (what it wrote goes to the
broker, each source's records whole) and commits no offsets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

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
#: how long a stopping loop waits to commit what it holds before leaving it to be replayed
STOP_COMMIT_S = 10.0
#: the largest producer batch (aiokafka's default is 16 KiB). The producer keeps one request
#: in flight per partition, so a batch's 200-300 KB of output in 16 KiB pieces waited for a
#: broker round trip per piece; under the broker's default 1 MB record-batch limit
#: (``message.max.bytes``) with room for the batch header
MAX_BATCH_BYTES = 1_000_000
#: the share of the worker a commit's state writing takes while it runs beside the turns
#: (StateWrite.write). Over a network of 10,000 sources a commit makes 0.2-0.5 s of
#: records; taken at once (with a full collection and the silence check landing in it) the
#: turns fell behind for up to 0.8 s every commit (benchmarks/README.md, "A network: what
#: the tail was"). A commit awaited in a turn (``commit_interval_s`` 0, or at the stop)
#: takes all of it: nothing else of the stage could run in its pauses.
COMMIT_SHARE = 1 / 3
Batch = dict[TopicPartition, list[Any]]
T = TypeVar("T")


def slices(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``.

    >>> [list(s) for s in slices([1, 2, 3, 4, 5], 2)]
    [[1, 2], [3, 4], [5]]
    """
    for i in range(0, len(items), size):
        yield items[i:i + size]


def next_offsets(batch: Mapping[TopicPartition, Sequence[Any]]) -> dict[TopicPartition, int]:
    """What to commit once a batch is out: one past each partition's last record."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


class StateWrite(Protocol):
    """What a commit writes of a stage's held-back state (BatchLoop.seal)."""

    async def write(self, out: Outbox, current: Callable[[], bool], share: float = 1.0) -> bool:
        """Put it into ``out`` and the stage's store; may yield to the worker's other tasks
        (the turns go on), taking about ``share`` of the worker's time while it writes (1:
        it only yields), and then stops once ``current()`` is false (a rebalance), with
        what it wrote in ``out`` too. Whether all of it is written."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Commit:
    """A commit under way: the generation it began in, the offsets it commits, and what
    writes the stage's held-back state."""

    generation: int
    offsets: dict[TopicPartition, int]
    state: StateWrite | None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:  # should one come back, its offset is read again
            self.loop.committed.pop(tp, None)
        self.loop.drop_held()
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.loop.assigned(set(assigned))


class BatchLoop:
    """The shell of a stage on its own consumer group; subclasses process the batches."""

    #: the stage's name: its group is ``<app id>-<name>``, its metrics' stage label
    name = "stage"
    #: records a stage processes before it lets the worker's other tasks run (:meth:`pause`)
    slice_records = 100

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
        #: the offsets to commit at the next commit (turns processed since the last one)
        self.held: dict[TopicPartition, int] = {}
        #: the offsets of the commit under way (:attr:`_commit_task`), until it is done
        self.committing: dict[TopicPartition, int] = {}
        self._commit_task: asyncio.Task[None] | None = None
        #: counts revocations; a turn or commit that saw it change keeps nothing
        self.generation = 0
        self._turn_generation = 0
        #: a turn's output is being queued: what is held is not complete yet
        self._partial = False
        self._committed_at = time.monotonic()
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
        """Commit what is held if the last turn finished, then leave the group at once (its
        partitions go to the others without waiting for the session to time out) and
        deliver what is queued."""
        if self._partial:  # the last turn did not finish: only the commit under way
            self.held.clear()
        if (self.held or self._commit_task) and self.consumer and self.producer:
            try:
                await asyncio.wait_for(self.commit(self.consumer, self.producer),
                                       STOP_COMMIT_S)
            except Exception:  # stopping anyway: those records come again
                log.warning("%s loop: the last offsets were not committed, their records "
                            "will be consumed again", self.name, exc_info=True)
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
        """One batch into ``out``; returns the records produced. The loop sends ``out``;
        it flushes and commits at the next commit. A stage that holds writes back must not
        make them once :meth:`current` is false, nor await after making them."""
        raise NotImplementedError

    def seal(self) -> StateWrite | None:
        """At the start of a commit (between two turns): take what the stage held back for
        it, and return what writes it once every earlier turn's output is delivered (then
        it is delivered, then the offsets are committed); None: nothing held. The turns go
        on meanwhile and must see what was taken as written."""
        return None

    def drop(self) -> None:
        """A rebalance: forget what was held back for the next commit."""

    # -- held back until the next commit ----------------------------------------------------

    async def pause(self) -> bool:
        """Between two slices of a batch: let the worker's other tasks run, then whether the
        batch may go on (no revocation meanwhile).

        A batch of 500 readings is 30-60 ms of CPU; processed in one go, every other task of
        the worker (the other loop, faust's alert lifecycle and sinks, the broker's answers)
        waits for it, and an alert passes several such waits on its way (benchmarks/
        README.md, "Where the latency goes"). In slices of ``slice_records`` each waits at
        most a slice. A stage that holds writes back stops at a revocation (what it held
        is dropped; the batch's records come again)."""
        await asyncio.sleep(0)
        return self.current()

    def current(self) -> bool:
        """No revocation since this turn began (what it processes may be kept)."""
        return self.generation == self._turn_generation

    def drop_held(self) -> None:
        self.generation += 1
        self.held.clear()
        self.drop()

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
        fetched = time.monotonic()
        # the fetch may have spanned a rebalance: its records are the new assignment's
        self._turn_generation = self.generation
        await self.idle(producer)
        if batch:
            started = time.perf_counter()
            out = self.outbox(producer)
            self._partial = True
            produced = await self.process(batch, out, producer)
            if self.current():
                self.held.update(next_offsets(batch))
            await out.send()
            self._partial = False
            self.m.records_out.labels(self.name).inc(produced)
            self.m.batch_seconds.labels(self.name).observe(time.perf_counter() - started)
        committing = self._commit_task
        if committing is not None and committing.done():
            self._commit_task = None
            committing.result()  # a commit that failed fails the loop
        interval = self.ctx.settings.commit_interval_s
        if not interval and self.held:  # a commit per turn, each before the next turn
            await self.commit(consumer, producer)
        elif (self.held and self._commit_task is None
              and time.monotonic() - self._committed_at >= interval):
            # in the background: the turns go on while the broker takes what it writes
            self._commit_task = asyncio.create_task(
                self._finish_commit(consumer, producer, self._begin_commit(), COMMIT_SHARE),
                name=f"{self.name}-commit")
        await asyncio.sleep(self.linger(batch, fetched))

    def linger(self, batch: Batch, fetched: float) -> float:
        """How long to let records gather before the next turn. A fetch hands over whatever
        is buffered, however little, so at a moderate rate turns would carry a few records
        each and cost their overhead (a produce request per partition, ...) per few
        records: after a short batch, the next turn starts ``batch_linger_s`` (at most
        ``batch_wait_s``) after this one's fetch (Kafka's ``linger.ms``). Otherwise 0,
        which still yields: a fetch from buffered records and a send with room in the
        producer do not suspend, and a loop with a backlog would keep the worker's other
        stages waiting until its commit."""
        s = self.ctx.settings
        if not batch or sum(map(len, batch.values())) >= s.batch_size:
            return 0.0
        linger = min(s.batch_linger_s, s.batch_wait_s)
        return max(0.0, linger - (time.monotonic() - fetched))

    async def commit(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """Everything queued delivered, then what the stage held back, then the offsets
        (after the commit under way, if there is one)."""
        if self._commit_task is not None:
            committing, self._commit_task = self._commit_task, None
            await committing
        if self.held:
            await self._finish_commit(consumer, producer, self._begin_commit())

    def _begin_commit(self) -> _Commit:
        """Take what the turns so far held back: the offsets, and the stage's writes."""
        offsets, self.held = self.held, {}
        self._committed_at = time.monotonic()
        self.committing = offsets
        return _Commit(self.generation, offsets, self.seal())

    async def _finish_commit(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                             commit: _Commit, share: float = 1.0) -> None:
        """Everything queued delivered (the output of the turns the commit covers, and
        maybe of later ones), then what the stage held back (taking ``share`` of the
        worker while it writes), then the offsets."""
        try:
            await producer.flush()
            if commit.generation != self.generation:
                return  # revoked meanwhile: what was held is dropped, the records come again
            if commit.state is not None:
                out = self.outbox(producer)
                whole = await commit.state.write(
                    out, lambda: commit.generation == self.generation, share)
                await out.send()  # what the store took, the changelog gets
                if not whole:
                    return  # as above; the sources written read the records as duplicates
                await producer.flush()
            try:
                await consumer.commit(commit.offsets)
            except CommitFailedError as exc:  # a rebalance took the partitions meanwhile
                self.m.broker_errors.labels("commit").inc()
                log.warning("%s offsets not committed, their records may come again: %r",
                            self.name, exc)
            else:
                self.committed.update(commit.offsets)
        finally:
            self.committing = {}

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records left per assigned partition: the broker's end - processed (offsets held
        for the next commit, else committed, else the consumer's position where this worker
        has processed nothing yet), so the gauge does not follow the commit interval."""
        consumer = self.consumer
        if consumer is None:
            return {}
        processed: dict[tuple[str, int], int] = {}
        by_key: dict[tuple[str, int], TopicPartition] = {}
        for tp in consumer.assignment():
            offset: int | None = self.held.get(
                tp, self.committing.get(tp, self.committed.get(tp)))
            if offset is None:  # known once the first fetch for it was made
                try:
                    offset = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT_S)
                except (TimeoutError, KafkaError):
                    continue
            if offset is None:
                continue
            processed[(tp.topic, tp.partition)] = offset
            by_key[(tp.topic, tp.partition)] = tp
        return consumer_lag(by_key, self.topics,
                            lambda k: consumer.highwater(by_key[k]), processed.get)
