"""Reading back the end of the alert ledger (streams/ledger_tail.py) on the real embedded
broker: every id of a partition's last batch is found, right after it was produced and
also when the broker's answers come late (a loaded machine: the worker's event loop busy,
Tansu holding fetches), and a broker that never answers is a TimeoutError by the deadline.

The broker sits behind a proxy in the test's event loop that can hold back every answer
for a while: how long an answer takes must not decide whether the tail looks empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from onemap.embedded import stop
from onemap.streams.ledger_tail import ledger_tails
from tests.integration.fault_kit import free_port, start_broker_behind
from tests.proxy_kit import forward

pytestmark = pytest.mark.integration

PARTITIONS = 3
BATCH = 20  # the lifecycle stage's batch size: the tail to read


class SlowProxy:
    """Forwards to the broker; each answer is held back ``delay`` seconds."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self._writers: set[asyncio.StreamWriter] = set()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await forward(reader, writer, ("127.0.0.1", self.target_port), self._writers,
                      lambda: self.delay)

    @contextlib.asynccontextmanager
    async def serving(self, port: int) -> AsyncIterator[SlowProxy]:
        server = await asyncio.start_server(self._client, "127.0.0.1", port,
                                            reuse_address=True)
        try:
            yield self
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await server.wait_closed()


@pytest.fixture(scope="module")
def broker_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(proxy port, broker port): a Tansu that advertises the proxy's port, so that every
    connection, the metadata-directed ones too, goes through the proxy."""
    proxy_port = free_port()
    proc, port = start_broker_behind(
        proxy_port, Path(tmp_path_factory.mktemp("tail-broker")) / "broker.log")
    yield proxy_port, port
    stop([proc])


def new_topic(bootstrap: str, name: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        admin.close()
    return name


def alert_id(partition: int, n: int) -> str:
    return f"hz{partition}:ZH-{n:04d}#1"


async def produce_batch(producer: AIOKafkaProducer, topic: str, partition: int,
                        first: int) -> list[str]:
    """One lifecycle batch on ``partition``: BATCH alerts, flushed together; their ids."""
    ids = [alert_id(partition, n) for n in range(first, first + BATCH)]
    for i in ids:
        await producer.send(topic, json.dumps({"alert_id": i}).encode(), partition=partition)
    await producer.flush()
    return ids


@pytest.mark.parametrize("answer_delay", [0.0, 0.5], ids=["prompt", "answers-late"])
def test_every_id_of_the_last_batch_is_found_right_after_it_was_produced(
        broker_ports: tuple[int, int], answer_delay: float) -> None:
    """Each round produces one more batch to two of the three partitions and at once reads
    the tails: every id of each one's last batch must be there (the tail was taken as
    empty when a poll came back empty before the broker had answered), not the whole
    partition, and the empty partition's tail is empty."""
    proxy_port, port = broker_ports
    bootstrap = f"127.0.0.1:{proxy_port}"

    async def main() -> None:
        async with SlowProxy(port).serving(proxy_port) as proxy:
            topic = await asyncio.to_thread(
                new_topic, bootstrap, f"tail{time.monotonic_ns() % 10**9}.alerts")
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            try:
                written: dict[int, list[str]] = {0: [], 1: []}
                for round_ in range(3):
                    last = {p: await produce_batch(producer, topic, p, round_ * BATCH)
                            for p in written}
                    proxy.delay = answer_delay
                    started = time.monotonic()
                    tails = await ledger_tails([bootstrap], topic, range(PARTITIONS), BATCH)
                    took = time.monotonic() - started
                    proxy.delay = 0.0
                    print(f"round {round_}: tails read in {took:.1f} s")
                    for p, ids in last.items():
                        written[p] += ids
                        missing = set(ids) - tails[p]
                        assert not missing, (f"round {round_}: partition {p}'s last batch "
                                             f"not read back: {sorted(missing)}")
                        assert tails[p] <= set(written[p])
                        if round_ == 2:
                            assert set(written[p][:BATCH]).isdisjoint(tails[p]), (
                                "the tail is about the last batch, not the whole partition")
                    assert tails[2] == set()
                    assert took < 12, f"reading the tails took {took:.1f} s"
            finally:
                await producer.stop()

    asyncio.run(main())


def test_nothing_to_read_gives_empty_tails(broker_ports: tuple[int, int]) -> None:
    proxy_port, port = broker_ports
    bootstrap = f"127.0.0.1:{proxy_port}"

    async def main() -> dict[int, set[str]]:
        async with SlowProxy(port).serving(proxy_port):
            topic = await asyncio.to_thread(
                new_topic, bootstrap, f"tail{time.monotonic_ns() % 10**9}.empty")
            return await ledger_tails([bootstrap], topic, [0, 1], BATCH)

    assert asyncio.run(main()) == {0: set(), 1: set()}


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a broker that hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_a_broker_that_never_answers_is_a_timeout_error_by_the_deadline(
        silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"end of t\.alerts .* not read within 1 s"):
        asyncio.run(ledger_tails([f"127.0.0.1:{silent_port}"], "t.alerts", [0], BATCH,
                                 deadline_s=1.0))
    assert time.monotonic() - started < 5
