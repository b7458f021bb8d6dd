"""Diagnostic prelude for ``bench_pipeline --prelude``: how much of a worker's CPU the cyclic
garbage collector takes. Changes nothing in the worker; counts collections and their wall
time per generation (``gc.callbacks``) and appends a line every 5 s to the file named by
``BENCH_GC_TIME_LOG`` (not ``ONEMAP_*``: bench_pipeline keeps those from its workers;
default: the worker's stderr, i.e. its log)::

    gc 1796584344 collections=[2277, 206, 18] seconds=[0.581, 0.341, 0.33] cpu=15.93

The share during a capacity drain is the difference of two lines' seconds over the
difference of their ``cpu`` (the process's CPU seconds). How it was used:
benchmarks/README.md, "Garbage collection".
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Any, TextIO

_seconds = [0.0, 0.0, 0.0]
_collections = [0, 0, 0]
_started = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    generation = info["generation"]
    _seconds[generation] += time.perf_counter() - _started[0]
    _collections[generation] += 1


def _report(out: TextIO) -> None:
    while True:
        time.sleep(5.0)
        print(f"gc {time.time():.0f} collections={_collections} "
              f"seconds={[round(s, 3) for s in _seconds]} cpu={time.process_time():.2f}",
              file=out, flush=True)


_path = os.environ.get("BENCH_GC_TIME_LOG")
gc.callbacks.append(_on_gc)
threading.Thread(target=_report, args=(open(_path, "a") if _path else sys.stderr,),  # noqa: SIM115
                 daemon=True, name="gc-time").start()
