"""A/B prelude for ``bench_pipeline --prelude``: the rules' per-source state is written
whole on every batch again (the layout before streams/source_state.py), i.e. each source's
24 h of readings re-serialised to the changelog after every batch that touched it.

Applied to today's code it undoes only the split layout, so the difference between a run
with and without it is what writing only the changed head and chunks buys.
"""

from __future__ import annotations

from typing import Any

from onemap.streams import rules_loop


def _stored_form(self: Any, key: str, value: Any) -> list[tuple[str, Any]]:
    return [(key, value)]


def _stored(self: Any, key: str, default: Any) -> Any:
    value = self.store.get(key)
    return default if value is None else value


rules_loop.LoopSourceState._stored_form = _stored_form  # type: ignore[method-assign]
rules_loop.LoopSourceState._stored = _stored  # type: ignore[method-assign]
