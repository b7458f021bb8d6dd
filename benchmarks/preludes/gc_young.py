"""Diagnostic prelude for ``bench_pipeline --prelude``: what the cyclic collector's young
generations hold when it collects the middle one, and how long each collection of the
older generations takes (the event loop stops meanwhile: every alert in flight waits).
Changes nothing in the worker but its speed (counting the young objects takes a few ms);
appends lines to the file named by ``BENCH_GC_YOUNG_LOG`` (default: the worker's stderr)::

    1796639695.39 before gen1: 33127 objs, 176876 items, lists>100: 122, top [...]
    1796639695.41 gen1 14.5ms

How it was used: benchmarks/results/pipeline-ab-copies-kept.md.
"""

from __future__ import annotations

import collections
import gc
import os
import sys
import time
from typing import Any, TextIO

_started = [0.0]
_path = os.environ.get("BENCH_GC_YOUNG_LOG")
_out: TextIO = open(_path, "a", encoding="utf-8") if _path else sys.stderr  # noqa: SIM115


def _young() -> str:
    objects = gc.get_objects(0) + gc.get_objects(1)
    kinds = collections.Counter(type(o).__name__ for o in objects)
    items = sum(len(o) for o in objects if type(o) in (list, dict, tuple))
    big = sum(1 for o in objects if type(o) is list and len(o) > 100)
    return (f"{len(objects)} objs, {items} items, lists>100: {big}, "
            f"top {kinds.most_common(8)}")


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    generation = info["generation"]
    if phase == "start":
        if generation == 1:
            print(f"{time.time():.2f} before gen1: {_young()}", file=_out, flush=True)
        _started[0] = time.perf_counter()
        return
    if generation >= 1:
        print(f"{time.time():.2f} gen{generation} "
              f"{(time.perf_counter() - _started[0]) * 1000:.1f}ms", file=_out, flush=True)


gc.callbacks.append(_on_gc)
