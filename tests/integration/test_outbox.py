"""An Outbox on the real broker: a large one (a commit's state records for a network of
sources, ~10,000 at once) is queued in pieces with the worker's other tasks run between
them, and every record arrives once, in order, on the partition it was given."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from onemap.streams.outbox import Outbox
from tests.conftest import Broker
from tests.integration.kafka_helpers import read_until

pytestmark = pytest.mark.integration


def test_a_large_outbox_lets_other_tasks_run_while_it_is_queued_and_delivers_every_record(
    broker: Broker,
) -> None:
    topic = f"ob{int(time.time() * 1000) % 10_000_000}.state"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    count = 3 * Outbox.YIELD_RECORDS

    async def send() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                    max_batch_size=1_000_000)
        await producer.start()
        errors: list[int] = []
        out = Outbox(lambda: producer, lambda: errors.append(1), {})
        for i in range(count):
            out.add(topic, b"source-%d" % i, b"%06d" % i, i % 2)
        ticks: list[int] = []

        async def other_task() -> None:
            while True:
                await asyncio.sleep(0)
                ticks.append(1)

        try:
            await out.send()  # metadata known first: the queueing itself must yield
            task = asyncio.create_task(other_task())
            await asyncio.sleep(0)
            ticks.clear()
            for i in range(count):
                out.add(topic, b"source-%d" % i, b"%06d" % (count + i), i % 2)
            await out.send()
            ran = len(ticks)
            task.cancel()
            await producer.flush()
        finally:
            await producer.stop()
        return ran, len(errors)

    ran, errors = asyncio.run(send())
    assert ran >= 2 and errors == 0  # the other task ran while the records were queued
    records = read_until(broker.bootstrap, topic, lambda got: len(got) >= 2 * count)
    values = [int(v) for _, v in records]
    assert sorted(values) == list(range(2 * count))  # each once
    for parity in (0, 1):  # each partition in the order added
        mine = [v for v in values if v % 2 == parity]
        assert mine == sorted(mine)
