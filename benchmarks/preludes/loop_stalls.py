"""Diagnostic prelude for ``bench_pipeline --prelude``: what stops a worker's event loop.
Changes nothing in the worker; appends a line to the file named by ``BENCH_STALL_LOG``
(default: the worker's stderr, i.e. its log) for every

* stall of the event loop over 50 ms (a task that sleeps 10 ms and measures how late it
  wakes: ``LOOP STALL 412 ms``),
* garbage collection over 20 ms (``gc gen2 440 ms``),
* call over 20 ms of the suspects: the loops' ``_begin_commit`` (between two turns),
  ``_finish_commit`` (a task beside the turns: its wall time) and ``process``, and the rules
  loop's silence check,

each with the monotonic time, so that a stall can be matched with what ran in it; with
``BENCH_GC_CENSUS=<seconds>``, also what the collector tracks, per generation. How it was
used: benchmarks/README.md, "A network of sources".
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import sys
import time
from typing import Any, TextIO

from onemap.streams import batch_loop, rules_loop

_path = os.environ.get("BENCH_STALL_LOG")
_out: TextIO = open(_path, "a", buffering=1) if _path else sys.stderr  # noqa: SIM115
_gc_started = [0.0]


def _log(text: str) -> None:
    _out.write(f"{time.monotonic():.3f} {text}\n")


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started[0]
    if took > 0.02:
        _log(f"gc gen{info['generation']} {took * 1000:.0f} ms "
             f"({info['collected']} collected)")


def _timed(cls: type, name: str) -> None:
    f = getattr(cls, name)
    if asyncio.iscoroutinefunction(f):
        @functools.wraps(f)
        async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = await f(self, *args, **kwargs)
            took = time.perf_counter() - started
            if took > 0.02:
                _log(f"{self.name}.{name} {took * 1000:.0f} ms (wall)")
            return result
        setattr(cls, name, timed)
        return

    @functools.wraps(f)
    def timed_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = f(self, *args, **kwargs)
        took = time.perf_counter() - started
        if took > 0.02:
            _log(f"{self.name}.{name} {took * 1000:.0f} ms")
        return result
    setattr(cls, name, timed_sync)


async def _watch() -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        late = time.perf_counter() - started - 0.01
        if late > 0.05:
            _log(f"LOOP STALL {late * 1000:.0f} ms")


gc.callbacks.append(_on_gc)
for _name in ("_begin_commit", "_finish_commit", "process"):
    _timed(batch_loop.BatchLoop, _name)
_timed(rules_loop.RulesLoop, "silent_sources")
_run = rules_loop.RulesLoop.run
_tasks: set[asyncio.Task[None]] = set()


async def _census() -> None:
    """Every ``BENCH_GC_CENSUS`` seconds: the objects each generation of the collector
    tracks, and the ten commonest types of the oldest (the census itself stalls the loop)."""
    every = float(os.environ["BENCH_GC_CENSUS"])
    while True:
        await asyncio.sleep(every)
        counts = [len(gc.get_objects(generation)) for generation in range(3)]
        types: dict[str, int] = {}
        for o in gc.get_objects(2):
            name = type(o).__name__
            types[name] = types.get(name, 0) + 1
        top = sorted(types.items(), key=lambda kv: -kv[1])[:10]
        _log(f"census gen0/1/2 {counts} frozen {gc.get_freeze_count()} "
             f"oldest: {', '.join(f'{n} {c}' for n, c in top)}")


async def _run_watched(self: Any) -> None:
    loop = asyncio.get_running_loop()
    _tasks.add(loop.create_task(_watch()))  # (a reference, so that it is not collected)
    if os.environ.get("BENCH_GC_CENSUS"):
        _tasks.add(loop.create_task(_census()))
    await _run(self)


rules_loop.RulesLoop.run = _run_watched  # type: ignore[method-assign]
