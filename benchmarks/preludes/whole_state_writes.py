"""A/B prelude for ``bench_pipeline --prelude``: the rules' per-source state is written
whole on every batch again (the layout before streams/source_state.py), i.e. each source's
24 h of readings re-serialised to the changelog after every batch that touched it.

Applied to today's code it undoes only the split layout, so the difference between a run
with and without it is what writing only the changed head and chunks buys.
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


def _stored(self: Any, key: str, default: Any) -> Any:
    sealing = self.sealing.get(key, rules_loop._NONE)
    if sealing is not rules_loop._NONE:  # a commit under way took it (see _stored's own)
        flight = self._flight
        if flight is not None and key in flight.unmade:
            self._make(flight, key)
        return default if sealing is DELETED else sealing
    raw = self.store.data.get(key)
    if raw is None:
        return default
    cached = self.cache.get(key)
    if cached is not None and cached[0] is raw:
        return cached[1]
    value = orjson.loads(raw)
    self.cache[key] = (raw, value, None)
    return value


rules_loop.LoopSourceState._stored_form = _stored_form  # type: ignore[method-assign]
rules_loop.LoopSourceState._stored = _stored  # type: ignore[method-assign]
