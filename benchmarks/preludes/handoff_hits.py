"""Diagnostic prelude for ``bench_pipeline --prelude``: how often the rules loop finds the
ingest loop's observation in the local handoff (streams/handoff.py) instead of decoding it.
Changes nothing in the worker; every second appends a line to the file named by
``BENCH_HANDOFF_LOG`` (default: the worker's stderr): the monotonic time, the observations
taken and decoded (missed) since the previous line, and the handoff's size.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, TextIO

from onemap.streams import rules_loop

_path = os.environ.get("BENCH_HANDOFF_LOG")
_out: TextIO = open(_path, "a", buffering=1) if _path else sys.stderr  # noqa: SIM115
_run = rules_loop.RulesLoop.run
_tasks: set[asyncio.Task[None]] = set()


async def _count(loop: Any) -> None:
    taken = missed = 0
    while True:
        await asyncio.sleep(1.0)
        local = loop.local
        if local.taken != taken or local.missed != missed:
            _out.write(f"{time.monotonic():.3f} taken {local.taken - taken} "
                       f"decoded {local.missed - missed} kept {len(local)}\n")
        taken, missed = local.taken, local.missed


async def _run_counted(self: Any) -> None:
    _tasks.add(asyncio.get_running_loop().create_task(_count(self)))
    await _run(self)


rules_loop.RulesLoop.run = _run_counted  # type: ignore[method-assign]
