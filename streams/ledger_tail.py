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
Reading stops when a fetch returns nothing new, not at the reported end offset (Tansu's can
read a little low, DESIGN.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

#: how long one fetch of the tail waits for records before the tail is taken as read
QUIET_MS = 300


def alert_id_of(value: bytes) -> str | None:
    """An alert record's id, or None for a record that is not an alert (never ours)."""
    try:
        got = json.loads(value).get("alert_id")
    except (ValueError, AttributeError):
        return None
    return got if isinstance(got, str) else None


async def ledger_tails(bootstrap_servers: Sequence[str], topic: str,
                       partitions: Iterable[int], last_n: int) -> dict[int, set[str]]:
    """partition -> the ids of the last ``last_n`` (or a few more) alerts on it.

    Raises what aiokafka raises when the broker cannot be reached; the caller then issues
    the batch unfiltered (at least once, as before).
    """
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    ids: dict[int, set[str]] = {tp.partition: set() for tp in tps}
    if not tps:
        return ids
    consumer = AIOKafkaConsumer(bootstrap_servers=list(bootstrap_servers),
                                enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, max(0, end - last_n))
        while True:
            got = await consumer.getmany(*tps, timeout_ms=QUIET_MS)
            if not any(got.values()):
                return ids
            for tp, records in got.items():
                for record in records:
                    if record.value is not None and (alert_id := alert_id_of(record.value)):
                        ids[tp.partition].add(alert_id)
    finally:
        await consumer.stop()
