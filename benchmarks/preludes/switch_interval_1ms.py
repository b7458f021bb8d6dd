"""A/B prelude for ``bench_pipeline --prelude``: the GIL handed between the worker's threads
(its event loop, faust's consumer thread, the metrics server's) after 1 ms instead of
Python's 5 ms. Tried and not kept: benchmarks/results/pipeline-ab-switch-interval.md."""

from __future__ import annotations

import sys

sys.setswitchinterval(0.001)
