"""A/B prelude for ``bench_pipeline --prelude``: the batch loops linger 25 ms after a short
batch instead of the default 10 ms (``ONEMAP_BATCH_LINGER``): fewer, larger turns at moderate
rates, each stage's output up to 15 ms later. Tried 2026-12-07: no gain (benchmarks/README.md)."""

from __future__ import annotations

import os

os.environ["ONEMAP_BATCH_LINGER"] = "0.025"
