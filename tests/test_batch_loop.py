"""The batch loop's shell without a broker: how a commit's state writing is paced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from aiokafka import TopicPartition

from onemap.settings import Settings
from onemap.streams import batch_loop
from onemap.streams.context import build_context
from onemap.streams.outbox import Outbox


class _RecordedWrite:
    """A stage's held-back state that writes nothing and notes the share it was given."""

    def __init__(self, shares: list[float]) -> None:
        self.shares = shares

    async def write(self, out: Outbox, current: Callable[[], bool], share: float = 1.0) -> bool:
        self.shares.append(share)
        return True


class _Consumer:
    """What a turn and a commit ask of aiokafka's consumer: nothing fetched, offsets taken."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set()

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class _Producer:
    async def flush(self) -> None:
        return None


def test_a_commit_beside_the_turns_takes_a_share_of_the_worker_one_awaited_takes_all() -> None:
    """A commit in the background (the turns go on in its pauses) writes the state taking
    COMMIT_SHARE of the worker; one a turn awaits (``ONEMAP_COMMIT_INTERVAL=0``, or at the
    stop) takes all of it, as nothing else of the stage could run in its pauses. Both
    commit their offsets once the state is written."""
    shares: list[float] = []

    class Loop(batch_loop.BatchLoop):
        def seal(self) -> batch_loop.StateWrite:
            return _RecordedWrite(shares)

    loop = Loop(build_context(Settings.from_env({})), ["t"])
    consumer, producer = _Consumer(), _Producer()
    tp = TopicPartition("t", 0)

    async def commits() -> None:
        loop.held = {tp: 5}
        loop._committed_at = -1e9  # the commit interval has passed
        await loop.turn(cast(Any, consumer), cast(Any, producer))
        assert loop._commit_task is not None  # beside the turns
        await loop._commit_task
        loop.held = {tp: 6}
        await loop.commit(cast(Any, consumer), cast(Any, producer))  # awaited, as at the stop

    asyncio.run(commits())
    assert shares == [batch_loop.COMMIT_SHARE, 1.0] and batch_loop.COMMIT_SHARE < 1
    assert consumer.commits == [{tp: 5}, {tp: 6}]
