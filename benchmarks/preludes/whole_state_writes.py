"""A/B prelude for ``bench_pipeline --prelude``: the rules' per-source state is written
whole on every batch again (the layout before streams/source_state.py), i.e. each source's
24 h of readings re-serialised to the changelog after every batch that touched it.

Applied to today's code it undoes only the split layout, so the difference between a run
with and without it is what writing only the changed head and chunks buys. Reads need no
change: a whole value has no ``sealed``, so ``source_state.assemble`` returns it as it is.
"""

from __future__ import annotations

from typing import Any

import orjson

from onemap.streams import rules_loop
from onemap.streams.state_tables import DELETED


def _stored_form(self: Any, key: str, value: Any, changed_from: float | None,
                 ) -> list[tuple[str, Any]]:
    if value is DELETED:
        self.cache.pop(key, None)
        return [(key, DELETED)]
    encoded = orjson.dumps(value)
    self.cache[key] = (encoded, value, None)
    return [(key, encoded)]


rules_loop.LoopSourceState._stored_form = _stored_form  # type: ignore[method-assign]
