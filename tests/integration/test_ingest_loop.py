"""The ingest stage's own consumer group on the real broker: an upgraded deployment (whose
faust group consumed the feeds before) neither skips nor re-reads its input, and the
input topics' lag is still reported."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPartition

from onemap.embedded import stop
from onemap.settings import Settings
from onemap.topics import ensure_topics
from tests.conftest import Broker, RunningWorker, start_worker, worker_env
from tests.integration.kafka_helpers import produce
from tests.integration.test_pipeline import metric, wait_for, water


async def commit_as(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    """Commit an offset for a group, as a worker of that group would have."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


@pytest.fixture()
def upgraded(broker: Broker, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """A worker's environment whose topics exist and which has not run yet."""
    prefix = f"u{int(time.time() * 1000) % 10_000_000}"
    env = worker_env(broker, redis_url, tmp_path, prefix)
    ensure_topics(Settings.from_env({}, kafka_url=broker.url, topic_prefix=prefix))
    return env


def test_fresh_ingest_group_starts_where_the_faust_group_left(
    upgraded: dict[str, str], broker: Broker, tmp_path: Path,
) -> None:
    topic = f"{upgraded['ONEMAP_TOPIC_PREFIX']}.in.water"
    # one key, so one partition, in order: the first three were consumed by the old version
    produce(broker.bootstrap, topic,
            [water("ZH-RIV-001", 1.0, m) for m in (0, 5, 10, 15)], key=b"ZH-RIV-001")
    probe = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        ends = probe.end_offsets([KafkaPartition(topic, p) for p in range(4)])
    finally:
        probe.close()
    used = [TopicPartition(tp.topic, tp.partition) for tp, n in ends.items() if n > 0]
    assert len(used) == 1, ends
    asyncio.run(commit_as(broker.bootstrap, upgraded["ONEMAP_APP_ID"], used[0], 3))

    running: RunningWorker = start_worker(upgraded, tmp_path)
    try:
        wait_for(lambda: metric(running, "onemap_records_in_total", feed="water") >= 1,
                 timeout_s=60, what="the fourth reading to be ingested")
        # a fifth after it: once it is in, anything before it on the partition would be too
        produce(broker.bootstrap, topic, [water("ZH-RIV-001", 1.0, 20)], key=b"ZH-RIV-001")
        wait_for(lambda: metric(running, "onemap_records_in_total", feed="water") >= 2,
                 what="the fifth reading to be ingested")
        assert metric(running, "onemap_records_in_total", feed="water") == 2
        wait_for(lambda: asyncio.run(committed(broker.bootstrap,
                                               f"{upgraded['ONEMAP_APP_ID']}-ingest",
                                               used[0])) == 5,
                 what="the ingest group to commit past the fifth reading")
        wait_for(lambda: f'onemap_consumer_lag_records{{partition="{used[0].partition}",'
                         f'topic="{topic}"}} 0.0' in running.metrics(),
                 what="the input partition's lag to read 0")
    finally:
        stop([running.proc])
