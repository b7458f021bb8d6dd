"""A/B prelude for ``bench_pipeline --prelude``: a commit makes and stores the rules' state
as it does, but its changelog records never reach the broker (NOT crash-safe: a bound, to
tell the broker's share of a commit's cost from the worker's). Also logs what
``flush_times`` logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onemap.streams import rules_loop
from onemap.streams.outbox import Outbox

_flush_times = Path(__file__).with_name("flush_times.py")
exec(compile(_flush_times.read_text(), str(_flush_times), "exec"),
     {"__name__": "prelude", "__file__": str(_flush_times)})
_write = rules_loop._SourceStateWrite.write


async def _write_unsent(self: Any, out: Outbox, current: Any, share: float = 1.0) -> bool:
    whole: bool = await _write(self, Outbox(lambda: None, lambda: None, {}), current, share)
    return whole


rules_loop._SourceStateWrite.write = _write_unsent  # type: ignore[method-assign]
