"""A/B prelude for ``bench_pipeline --prelude``: the batch loops' producers back at
aiokafka's default 16 KiB batches, and ``Outbox`` queueing its batches open (each waits out
the producer's 5 ms linger unless full), as before 2026-12-06.

The difference between a run with and without it is what one producer batch per partition
and turn buys (the producer keeps one request in flight per partition, so a turn's output in
16 KiB pieces took a broker round trip per piece).
"""

from __future__ import annotations

from typing import Any

from onemap.streams import batch_loop, outbox

batch_loop.MAX_BATCH_BYTES = 16_384


async def _queue_open(self: Any, client: Any, batch: Any, topic: str, partition: int) -> None:
    future = await client.send_batch(batch, topic, partition=partition)
    future.add_done_callback(self._delivered)


outbox.Outbox._queue = _queue_open  # type: ignore[method-assign]
