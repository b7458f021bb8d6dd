"""A/B prelude for ``bench_pipeline --prelude``: the collector's oldest generation collected
after 100 collections of the middle one instead of 10 (full collections rarer: over a
network's state each stops the worker for 150-220 ms)."""

from __future__ import annotations

import gc

from onemap.streams import worker

_tune = worker.tune_gc


def _tune_rarer() -> None:
    _tune()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


worker.tune_gc = _tune_rarer
