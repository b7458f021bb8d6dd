"""The alert ids already at the end of a ledger partition: what a restarted lifecycle stage
must not issue again.

Why: the lifecycle stage writes a batch's alerts, flushes them, and only then writes its
state (``Pipeline.output_then_state``). A worker killed in between leaves alerts on
``onemap.alerts`` whose state was never written; the batch is consumed again after the
restart and makes the same alerts again, under the same ids (``hazard#seq``). With a broker
that has transactions the two writes would be one; the embedded broker (Tansu) has none. So
the stage reads back the end of each ledger partition the first time it issues alerts to it
after taking it over, and leaves out any alert whose id is already there: every alert once
on the ledger, not only once on the wall and the phones.

Only the last batch of a partition can be in doubt (each batch's state is written before
the next batch starts, and batches already applied make no alerts when consumed again), so
the tail to read is at most one batch of alerts: ``last_n`` records, the stage's batch size.

When the tail is read: not at the first poll that comes back empty, nor at the reported end
offset alone. A poll can come back empty before the broker answered at all (a fetch may be
held for the consumer's whole ``fetch_max_wait_ms``, aiokafka's default 500 ms, and a busy
worker's event loop gets to the answer late): the tail then looked empty, and a worker
restarted after a crash issued again alerts already on the ledger. And Tansu's end offset
can read a little low (it answers with the start of the last produced batch, DESIGN.md),
so it only tells roughly where to start. So reading stops only once, for every partition,
the broker has answered (the fetch's high watermark is known) and the position has reached
that high watermark, and then a further answer for every partition brought nothing new.
The whole read is bounded by :data:`DEADLINE_S`, past which it raises TimeoutError.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

#: how long the broker may hold a fetch of the tail that finds nothing new (aiokafka's
#: default is 500 ms): the answer that confirms the end comes after that long
FETCH_MAX_WAIT_MS = 100
#: how long one poll waits for records before the partitions' progress is looked at again
POLL_MS = 100
#: the longest the whole read may take (connecting included); past it, TimeoutError
DEADLINE_S = 15.0


def alert_id_of(value: bytes) -> str | None:
    """An alert record's id, or None for a record that is not an alert (never ours)."""
    try:
        got = json.loads(value).get("alert_id")
    except (ValueError, AttributeError):
        return None
    return got if isinstance(got, str) else None


async def ledger_tails(bootstrap_servers: Sequence[str], topic: str,
                       partitions: Iterable[int], last_n: int,
                       deadline_s: float = DEADLINE_S) -> dict[int, set[str]]:
    """partition -> the ids of the last ``last_n`` (or a few more) alerts on it.

    Raises what aiokafka raises when the broker cannot be reached, and TimeoutError when
    the tail is not read within ``deadline_s`` (monotonic); the caller then issues the
    batch unfiltered (at least once, as before).
    """
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    ids: dict[int, set[str]] = {tp.partition: set() for tp in tps}
    if not tps:
        return ids
    consumer = AIOKafkaConsumer(bootstrap_servers=list(bootstrap_servers),
                                enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest",
                                fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    seen: dict[TopicPartition, tuple[int | None, int | None]] = {}  # for the error only
    try:
        async with asyncio.timeout(deadline_s):
            await consumer.start()
            consumer.assign(tps)
            for tp, end in (await consumer.end_offsets(tps)).items():
                consumer.seek(tp, max(0, end - last_n))

            def add(tp: TopicPartition, record: Any) -> None:
                if record.value is not None and (alert_id := alert_id_of(record.value)):
                    ids[tp.partition].add(alert_id)

            await read_to_end(consumer, tps, add, seen)
            return ids
    except TimeoutError as exc:
        where = ", ".join(f"{tp.partition}: position {pos}, high watermark {high}"
                          for tp, (pos, high) in seen.items()) or "never fetched"
        raise TimeoutError(f"the end of {topic} (partitions {sorted(ids)}) was not read "
                           f"within {deadline_s:g} s ({where})") from exc
    finally:
        await consumer.stop()


async def read_to_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                      on_record: Callable[[TopicPartition, Any], None],
                      seen: dict[TopicPartition, tuple[int | None, int | None]]) -> None:
    """Read from the positions set until the end of every partition (module docstring),
    calling ``on_record`` for each record in order; ``seen`` tells each partition's
    position and high watermark (for an error message)."""
    #: once every partition caught up: the time of each one's last fetch answer then
    caught_up: dict[TopicPartition, int | None] | None = None
    while True:
        got = await consumer.getmany(*tps, timeout_ms=POLL_MS)
        if not any(got.values()) and caught_up is not None and all(
                (at := consumer.last_poll_timestamp(tp)) is not None
                and (was is None or at > was) for tp, was in caught_up.items()):
            # every partition answered again since it caught up, at the same position
            # (aiokafka drops an answer for another offset); whatever those answers
            # brought is buffered, so a poll that does not wait takes it
            got = await consumer.getmany(*tps, timeout_ms=0)
            if not any(got.values()):
                return
        if any(got.values()):
            caught_up = None
            for tp, records in got.items():
                for record in records:
                    on_record(tp, record)
        if caught_up is None and await _caught_up(consumer, tps, seen):
            caught_up = {tp: consumer.last_poll_timestamp(tp) for tp in tps}


async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                     seen: dict[TopicPartition, tuple[int | None, int | None]]) -> bool:
    """Every partition answered, and is read up to the high watermark of its last answer."""
    for tp in tps:
        seen[tp] = (await consumer.position(tp), consumer.highwater(tp))
    return all(high is not None and pos is not None and pos >= high
               for pos, high in seen.values())
