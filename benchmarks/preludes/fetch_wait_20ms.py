"""A/B prelude for ``bench_pipeline --prelude``: consumer fetches wait at most 20 ms for
records instead of the default 100 ms (``ONEMAP_FETCH_MAX_WAIT``; the embedded broker answers
a waiting fetch up to about half the wait after a record arrives). Tried 2026-12-07: latency
within the noise (benchmarks/README.md)."""

from __future__ import annotations

import os

os.environ["ONEMAP_FETCH_MAX_WAIT"] = "0.02"
