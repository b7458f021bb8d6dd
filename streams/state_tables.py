"""The stages' state seen through one batch, written after the batch's output.

``EventBoundTable`` is a faust table bound to the events of a batch (the lifecycle stage);
``SourceStateTable`` the rules' per-source state in its small-to-write layout
(streams/source_state.py), over any store with ``get``: faust's table or the rules loop's
own (streams/rules_loop.py).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, cast

import faust
from faust.types import EventT

from onemap.streams.source_state import assemble, chunk_key, split

#: keys of the per-partition changelog markers (see EventBoundTable.seal); not state
MARKER_PREFIX = "__marker__:"

DELETED = object()


class EventBoundTable(MutableMapping[str, Any]):
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
        # faust.Stream (the concrete class every agent gets) sets the current event
        self.stream = cast(faust.Stream[bytes], stream)
        self.table = table
        self.events_by_key = events_by_key
        self.pending: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            value = self.pending[key]
            if value is DELETED:
                raise KeyError(key)
            return value
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.pending:
            value = self.pending[key]
            return default if value is DELETED else value
        return self.table.get(key, default)

    def _as_of(self, event: EventT[bytes]) -> Any:
        """Make ``event`` current for a table write; returns what to restore afterwards
        (the stream's own current event: its take buffer relies on it)."""
        previous = self.stream.current_event
        self.stream._set_current_event(event)
        return previous

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.events_by_key:
            raise KeyError(f"{key!r} is not bound to an event of this batch")
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self.events_by_key:
            raise KeyError(f"{key!r} is not bound to an event of this batch")
        self.pending[key] = DELETED

    def _write(self, key: str, value: Any) -> None:
        event = self.events_by_key[key]
        if isinstance(value, dict):
            value["partition"] = event.message.partition  # for per-partition stream time
        previous = self._as_of(event)
        try:
            for table_key, stored in self._stored_form(key, value):
                if stored is DELETED:
                    self.table.pop(table_key, None)
                else:
                    self.table[table_key] = stored
        finally:
            self.stream._set_current_event(previous)

    def _stored_form(self, key: str, value: Any) -> list[tuple[str, Any]]:
        """The table records one logical write becomes, in write order (one here)."""
        return [(key, value)]

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


class SourceStateTable(EventBoundTable):
    """The rules' per-source state, stored so that a batch writes only what changed.

    The rules read and write one logical value per source (up to 24 h of readings); the
    table holds it as a small head plus hourly chunks (streams/source_state.py), written
    after the batch's output like any EventBoundTable. Reads assemble the logical value once
    and keep it (``cache``, owned by the caller across batches) for as long as the table
    still holds the same head object: a recovery or another write replaces that object.
    """

    def __init__(self, table: Any, stream: faust.StreamT[bytes],
                 events_by_key: dict[str, EventT[bytes]], changed_from: dict[str, float],
                 cache: dict[str, tuple[Any, Any]]) -> None:
        super().__init__(table, stream, events_by_key)
        self.changed_from = changed_from
        self.cache = cache

    def _logical(self, key: str, default: Any) -> Any:
        head = self.table.get(key)
        if not head:
            return default if head is None else head
        cached = self.cache.get(key)
        if cached is not None and cached[0] is head:
            return cached[1]
        value = assemble(head, lambda k: self.table.get(chunk_key(key, k)), key)
        self.cache[key] = (head, value)
        return value

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            return super().__getitem__(key)
        value = self._logical(key, None)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.pending:
            return super().get(key, default)
        return self._logical(key, default)

    def _stored_form(self, key: str, value: Any) -> list[tuple[str, Any]]:
        head = self.table.get(key)
        if value is DELETED:
            self.cache.pop(key, None)
            sealed = head.get("sealed", []) if isinstance(head, dict) else []
            return [(key, DELETED), *((chunk_key(key, k), DELETED) for k in sealed)]
        if not isinstance(value, dict):
            return [(key, value)]
        stored = split(value, head, self.changed_from.get(key))
        self.cache[key] = (stored.head, value)
        # the head first: see streams/source_state.py on crash safety
        return [(key, stored.head), *((chunk_key(key, k), DELETED if c is None else c)
                                      for k, c in stored.chunks.items())]


