"""A/B prelude for ``bench_pipeline --prelude``: the batch loops as before 2026-12-07
evening: each commit inline in the loop's turn (the loop's next turn waits for the broker
to take its output, the state and the offsets) and every 0.5 s (``ONEMAP_COMMIT_INTERVAL``).
The turn below is the old ``BatchLoop.turn``, kept as the "before" side on purpose."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from onemap.streams import batch_loop

os.environ["ONEMAP_COMMIT_INTERVAL"] = "0.5"


async def turn(self: Any, consumer: Any, producer: Any) -> None:
    batch = await self.fetch(consumer)
    fetched = time.monotonic()
    self._turn_generation = self.generation
    await self.idle(producer)
    if batch:
        started = time.perf_counter()
        out = self.outbox(producer)
        self._partial = True
        produced = await self.process(batch, out, producer)
        if self.current():
            self.held.update(batch_loop.next_offsets(batch))
        await out.send()
        self._partial = False
        self.m.records_out.labels(self.name).inc(produced)
        self.m.batch_seconds.labels(self.name).observe(time.perf_counter() - started)
    if (self.held and time.monotonic() - self._committed_at
            >= self.ctx.settings.commit_interval_s):
        await self.commit(consumer, producer)
    await asyncio.sleep(self.linger(batch, fetched))


batch_loop.BatchLoop.turn = turn  # type: ignore[method-assign]
