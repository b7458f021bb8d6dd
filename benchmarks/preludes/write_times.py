"""Diagnostic prelude for ``bench_pipeline --prelude``: how long the worker's asyncio socket
writes take, in wall time and in CPU time of the writing thread. Changes nothing in the
worker; appends a line every 5 s to the file named by ``BENCH_WRITE_TIMES_LOG`` (default:
the worker's stderr, i.e. its log), per peer port::

    writes {41525: (125.6, 3417372, 68.87, 8.25)}

(writes per second, bytes per second, wall ms per second, CPU ms per second). How it was
used: benchmarks/results/pipeline-ab-switch-interval.md.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from asyncio import selector_events
from typing import Any

_stats: collections.defaultdict[Any, list[float]] = collections.defaultdict(
    lambda: [0, 0, 0.0, 0.0])
_write = selector_events._SelectorSocketTransport.write


def _timed_write(self: Any, data: Any) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        _write(self, data)
    finally:
        peer = self._extra.get("peername")
        s = _stats[peer[1] if peer else None]
        s[0] += 1
        s[1] += len(data)
        s[2] += time.perf_counter() - wall
        s[3] += time.thread_time() - cpu


def _report() -> None:
    path = os.environ.get("BENCH_WRITE_TIMES_LOG")
    last = time.monotonic()
    while True:
        time.sleep(5)
        now = time.monotonic()
        dt, last = now - last, now
        snap = {k: v[:] for k, v in _stats.items()}
        _stats.clear()
        line = "writes " + repr({k: (round(v[0] / dt, 1), round(v[1] / dt),
                                     round(v[2] / dt * 1000, 2), round(v[3] / dt * 1000, 2))
                                 for k, v in snap.items()}) + "\n"
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(line)
        else:
            sys.stderr.write(line)


selector_events._SelectorSocketTransport.write = _timed_write  # type: ignore[method-assign]
threading.Thread(target=_report, name="write-times", daemon=True).start()
