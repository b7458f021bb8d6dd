"""One batch's output, handed to an aiokafka producer in one call per partition.

``await topic.send(...)`` per record costs faust's layers for every record (a future
message, serialisers, sensors, a debug log call, then aiokafka's own per-record send and
partitioner): measured, a worker does 22 % more per CPU-second without them
(benchmarks/results/pipeline-ab-per-record-send.md). Here records are appended to one
aiokafka batch per partition (the producer's own partitioner, so the same partitions as a
plain send) and each batch is queued with ``send_batch``, which returns once the batch is
queued, not delivered. The stage awaits delivery itself (``producer.flush()``) before it
writes its state or commits its offsets. A failed delivery calls ``on_error`` (the worker
counts it as ``onemap_broker_errors_total{op="send"}``).

Every stage uses it, on faust's producer (rules, lifecycle) or on the ingest loop's own
(streams/ingest_loop.py); both partition the same way, so a key lands on the same partition
whichever stage wrote it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: (topic, key) -> (partition count, partition); kept by the caller across batches: the
#: partitioner's murmur2 is pure Python (~7 µs a key) and keys repeat
PartitionCache = dict[tuple[str, bytes], tuple[int, int]]


class Outbox:
    PARTITIONS_CACHED = 100_000
    #: records queued between two yields to the worker's other tasks: a commit queues a
    #: network's ~10,000 state records (~15 µs each), which at once stopped every alert
    #: for ~200 ms; a turn's output (at most a batch) is queued in one go
    YIELD_RECORDS = 2_000

    def __init__(self, producer: Callable[[], Any], on_error: Callable[[], None],
                 partitions: PartitionCache) -> None:
        #: returns the started aiokafka producer to send with (faust makes its own lazily)
        self.producer = producer
        self.on_error = on_error
        self.partitions = partitions
        self.records: dict[str, list[tuple[bytes | None, bytes | None, int | None]]] = {}

    def __bool__(self) -> bool:
        return bool(self.records)

    def _partition(self, client: Any, topic: str, count: int, key: bytes | None) -> int:
        if key is not None:
            found = self.partitions.get((topic, key))
            if found is not None and found[0] == count:
                return found[1]
        partition = int(client._partition(topic, None, None, None, key, None))
        if key is not None:
            if len(self.partitions) >= self.PARTITIONS_CACHED:
                self.partitions.clear()
            self.partitions[(topic, key)] = (count, partition)
        return partition

    def add(self, topic: str, key: bytes | None, value: bytes | None,
            partition: int | None = None) -> None:
        """Add a record; ``partition`` None: the producer's partitioner decides (by key);
        ``value`` None: a tombstone (a changelog's delete)."""
        self.records.setdefault(topic, []).append((key, value, partition))

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("a batch was not delivered: %r", future.exception())
            self.on_error()

    async def send(self) -> None:
        """Queue everything added so far (the caller then flushes the producer)."""
        if not self.records:
            return
        client = self.producer()
        by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for topic, records in self.records.items():
            await client.client._wait_on_metadata(topic)
            count = len(client._metadata.partitions_for_topic(topic) or ())
            for key, value, partition in records:
                tp = (topic, self._partition(client, topic, count, key)
                      if partition is None else partition)
                by_partition.setdefault(tp, []).append((key, value))
        self.records = {}
        appended = 0
        for (topic, partition), pairs in by_partition.items():
            batch = client.create_batch()
            for key, value in pairs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    appended = await self._queue(client, batch, topic, partition, appended)
                    batch = client.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record of {len(value or b'')} bytes does not "
                                         f"fit in a batch of topic {topic}")
                appended += 1
            appended = await self._queue(client, batch, topic, partition, appended)

    async def _queue(self, client: Any, batch: Any, topic: str, partition: int,
                     appended: int) -> int:
        """Queue ``batch``; ``appended``: records appended since the last yield; returns
        that count after this (0 if it yielded)."""
        batch.close()  # complete: sent without waiting out the producer's linger
        future = await client.send_batch(batch, topic, partition=partition)
        future.add_done_callback(self._delivered)
        if appended < self.YIELD_RECORDS:
            return appended
        await asyncio.sleep(0)
        return 0
