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

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from onemap.streams.batch_loop import Batch, BatchLoop, slices
from onemap.streams.context import WorkerContext
from onemap.streams.deadletter import Consumed
from onemap.streams.handoff import LocalObservations
from onemap.streams.health import HealthMonitor
from onemap.streams.outbox import Outbox

log = logging.getLogger(__name__)



def by_feed(batch: Mapping[Any, Sequence[Consumed]], feed_of_topic: Mapping[str, str],
            ) -> dict[str, list[Consumed]]:
    """A fetched batch (partition -> aiokafka records) per feed, each partition's records in
    offset order (as consumed: the stage turns only a rejected one into a RawRecord, and
    rejects a record without a value, a tombstone, as an empty one, with its offset)."""
    out: dict[str, list[Consumed]] = {}
    for tp, records in batch.items():
        out.setdefault(feed_of_topic[tp.topic], []).extend(records)
    return out


class IngestLoop(BatchLoop):
    """The ingest stage; ``run`` is a task of the faust app."""

    name = "ingest"
    #: ~25 µs a record: a slice of 250 is a few milliseconds (BatchLoop.pause)
    slice_records = 250

    def __init__(self, ctx: WorkerContext, health: HealthMonitor,
                 topics: Mapping[str, str], lanes: Callable[[str], str],
                 deadletter_topic: str, *, priority_feeds: Collection[str] = (),
                 local: LocalObservations | None = None) -> None:
        """``topics``: feed -> its input topic; ``lanes``: feed -> the observations topic
        its observations go to; ``priority_feeds``: feeds whose records are taken before
        any other fetched record; ``local``: where this worker's rules loop looks for the
        observations before decoding them (streams/handoff.py)."""
        super().__init__(ctx, topics.values(),
                         [t for feed, t in topics.items() if feed in priority_feeds])
        self.health = health
        self.feed_of_topic = {topic: feed for feed, topic in topics.items()}
        self.lanes = lanes
        self.deadletter_topic = deadletter_topic
        self.local = local

    async def starting(self) -> None:
        try:
            await self.seed_from_faust()
        except (KafkaError, OSError) as exc:
            log.warning("cannot read the faust group's offsets of the feeds; partitions "
                        "this group never consumed start at the earliest record: %r", exc)

    async def process(self, batch: Batch, out: Outbox, producer: AIOKafkaProducer) -> int:
        produced = 0
        paused = False
        for feed, records in by_feed(batch, self.feed_of_topic).items():
            for part in slices(records, self.slice_records):
                if paused and not await self.pause():
                    return produced  # revoked: the batch's records come again
                produced += self.process_feed(feed, part, out)
                paused = True
        return produced

    def process_feed(self, feed: str, records: Sequence[Consumed], out: Outbox) -> int:
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
        local = self.local
        for obs in result.observations:
            value = obs.to_json()
            out.add(lane, obs.source_id.encode(), value)
            if local is not None:
                local.put(value, obs)
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
            for group in (self.group, s.app_id))
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

