"""A/B prelude for ``bench_pipeline --prelude``: the batch loops linger longer under load:
after a batch of at least a quarter of the batch size, half the batch wait (25 ms with the
defaults) instead of ``ONEMAP_BATCH_LINGER`` (10 ms); after a smaller one as before. At a
high rate the turns are then about full (fewer, each with its overhead); at a moderate
rate nothing changes. Tried 2026-12-08: no gain (benchmarks/README.md)."""

from __future__ import annotations

import time

from onemap.streams import batch_loop


def _linger(self: batch_loop.BatchLoop, batch: batch_loop.Batch, fetched: float) -> float:
    s = self.ctx.settings
    records = sum(map(len, batch.values()))
    if not records or records >= s.batch_size:
        return 0.0
    linger = min(s.batch_linger_s, s.batch_wait_s)
    if records * 4 >= s.batch_size:
        linger = max(linger, s.batch_wait_s / 2)
    return float(max(0.0, linger - (time.monotonic() - fetched)))


setattr(batch_loop.BatchLoop, "linger", _linger)  # noqa: B010 (a method replaced)
