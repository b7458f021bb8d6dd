"""Small kafka-python helpers for tests: produce, and read a topic back (no consumer group)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

#: kafka-python asks for fetch answers of up to ``fetch_max_bytes`` (50 MiB) but refuses a
#: frame over ``receive_message_max_bytes`` (1 MB) by default: it logs "Invalid frame length",
#: drops the connection and fetches again. A topic of a few MB read from the start hit that
#: in CI. The reading consumers accept what they ask for.
FETCH_MAX_BYTES = 50 * 1024 * 1024


def reading_consumer(bootstrap: str, **config: Any) -> KafkaConsumer:
    """A kafka-python consumer without a group (assign partitions to it) that accepts a
    whole fetch answer."""
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         fetch_max_bytes=FETCH_MAX_BYTES,
                         receive_message_max_bytes=FETCH_MAX_BYTES + 1024 * 1024, **config)


def produce(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in values:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def read_until(
    bootstrap: str, topic: str, done: Callable[[list[tuple[bytes | None, bytes]]], bool],
    timeout_s: float = 30.0,
) -> list[tuple[bytes | None, bytes]]:
    """Every record of ``topic`` from the start, read until ``done(records)`` or timeout.

    Records are counted by reading them (the embedded broker's end offsets can read low).
    """
    consumer = reading_consumer(bootstrap, auto_offset_reset="earliest",
                                consumer_timeout_ms=500)
    records: list[tuple[bytes | None, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        assert partitions, f"topic {topic} does not exist"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        while time.monotonic() < deadline:
            for message in consumer:
                records.append((message.key, message.value))
            if done(records):
                break
    finally:
        consumer.close()
    return records


def produce_keyed(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
                  producer: KafkaProducer | None = None) -> None:
    """Produce (key, value) records in order, each keyed (so a source stays on one
    partition); with ``producer``, by it (already connected: no connection's wait)."""
    own = producer is None
    if producer is None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        if own:
            producer.close()
