"""A stage's state seen through one batch, written after the batch's output.

``HeldWrites`` holds a batch's writes; ``EventBoundTable`` is a faust table bound to the
events of a batch (the lifecycle stage); the rules loop's ``LoopSourceState``
(streams/rules_loop.py) is its per-source state over its own store.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, cast

import faust
from faust.types import EventT

#: keys of the per-partition changelog markers (see EventBoundTable.seal); not state
MARKER_PREFIX = "__marker__:"

DELETED = object()


class HeldWrites(MutableMapping[str, Any]):
    """A stage's state seen through one batch: writes are held in ``pending`` (reads see
    them) until the batch's output is out, then written by the subclass; a key may be
    written only if :meth:`_bound` (it belongs to the batch). ``_stored`` reads what is
    written already."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] = {}

    def _bound(self, key: str) -> bool:
        raise NotImplementedError

    def _stored(self, key: str, default: Any) -> Any:
        raise NotImplementedError

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.pending:
            value = self.pending[key]
            return default if value is DELETED else value
        return self._stored(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if not self._bound(key):
            raise KeyError(f"{key!r} is not bound to a record of this batch")
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        self[key] = DELETED


class EventBoundTable(HeldWrites):
    """A faust table seen through the events of one batch, written when the batch is done.

    Faust writes a table key to the changelog partition of the *current event*; in a batch
    there is none, so each write first makes current the event its key came from. State thus
    stays co-partitioned with the records that change it, and recovers with them.

    Writes are held (reads see them) until :meth:`seal`, which the stage calls after its
    output is flushed to the broker: if the worker dies before, the batch is consumed again
    and its output re-issued under the same ids; were the state written first, the second
    run would find the batch already applied and its output would be lost.
    """

    def __init__(self, table: Any, stream: faust.StreamT[bytes],
                 events_by_key: dict[str, EventT[bytes]]) -> None:
        super().__init__()
        # faust.Stream (the concrete class every agent gets) sets the current event
        self.stream = cast(faust.Stream[bytes], stream)
        self.table = table
        self.events_by_key = events_by_key

    def _bound(self, key: str) -> bool:
        return key in self.events_by_key

    def _stored(self, key: str, default: Any) -> Any:
        return self.table.get(key, default)

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            value = self.pending[key]
            if value is DELETED:
                raise KeyError(key)
            return value
        return self.table[key]  # the table's default for a missing key, as faust gives it

    def _as_of(self, event: EventT[bytes]) -> Any:
        """Make ``event`` current for a table write; returns what to restore afterwards
        (the stream's own current event: its take buffer relies on it)."""
        previous = self.stream.current_event
        self.stream._set_current_event(event)
        return previous

    def _write(self, key: str, value: Any) -> None:
        event = self.events_by_key[key]
        if isinstance(value, dict):
            value["partition"] = event.message.partition  # for per-partition stream time
        previous = self._as_of(event)
        try:
            if value is DELETED:
                self.table.pop(key, None)
            else:
                self.table[key] = value
        finally:
            self.stream._set_current_event(previous)

    async def seal(self, producer: Any) -> None:
        """Write the batch's state, then one marker per changelog partition it touched.

        Call it after the batch's output is flushed. The embedded broker (Tansu) reports a
        partition's end offset low (DESIGN.md: it answers with the start of the last
        produced batch), and faust recovers a changelog only up to that end offset, so after
        a restart the last writes of a partition would be missing. So the batch's writes are
        flushed first, and a marker follows them in a batch of its own: everything before
        the marker is recovered.
        """
        for key, value in self.pending.items():
            self._write(key, value)
        self.pending.clear()
        await producer.flush()
        last_per_partition: dict[int, EventT[bytes]] = {}
        for event in self.events_by_key.values():
            last_per_partition[event.message.partition] = event
        for partition, event in last_per_partition.items():
            previous = self._as_of(event)
            try:
                self.table[f"{MARKER_PREFIX}{partition}"] = {"marker": True}
            finally:
                self.stream._set_current_event(previous)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)
