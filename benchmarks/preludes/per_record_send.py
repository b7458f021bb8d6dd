"""A/B prelude for ``bench_pipeline --prelude``: the stages send each record with faust's
``await topic.send`` again, as before ``Outbox`` batched them per partition. Written for
the code before ingest left faust (git bf46763~1): its ``add`` takes faust topics.

Applied to today's code it undoes only that change (same topics, keys and partitions; the
stage still flushes before writing its state), so the difference between a run with and
without it is what the batched hand-over buys.
"""

from __future__ import annotations

from typing import Any

from onemap.streams import app


class PerRecordOutbox:
    """Outbox's interface, sending record by record through faust."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.records: list[tuple[Any, bytes | None, bytes]] = []

    def add(self, topic: Any, key: bytes | None, value: bytes) -> None:
        self.records.append((topic, key, value))

    async def send(self) -> None:
        for topic, key, value in self.records:
            await topic.send(key=key, value=value)
        self.records = []


app.Outbox = PerRecordOutbox  # type: ignore[misc,assignment]
