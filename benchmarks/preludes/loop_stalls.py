"""Diagnostic prelude for ``bench_pipeline --prelude``: what stops a worker's event loop.
Changes nothing in the worker; appends a line to the file named by ``BENCH_STALL_LOG``
(default: the worker's stderr, i.e. its log) for every

* stall of the event loop over 50 ms (a task that sleeps 10 ms and measures how late it
  wakes: ``LOOP STALL 412 ms``),
* garbage collection over 20 ms (``gc gen2 440 ms``),
* call over 20 ms of the suspects: the loops' ``_begin_commit`` (between two turns),
  ``_finish_commit`` (a task beside the turns: its wall time) and ``process``, and the rules
  loop's silence check,

each with the monotonic time, so that a stall can be matched with what ran in it. How it was
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
        _log(f"gc gen{info['generation']} {took * 1000:.0f} ms")


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


async def _run_watched(self: Any) -> None:
    task = asyncio.get_running_loop().create_task(_watch())
    _tasks.add(task)  # (a reference, so that it is not collected)
    await _run(self)


rules_loop.RulesLoop.run = _run_watched  # type: ignore[method-assign]
