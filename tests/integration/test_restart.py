"""Per-source state survives a worker restart: the changelogged tables are recovered, so a
rolling window that started before the restart still counts after it."""

from __future__ import annotations

import json
import time

import pytest
import redis

from onemap.embedded import stop
from tests.conftest import Broker, RunningWorker, start_worker
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration


def rain(hour: int, mm: float) -> bytes:
    return json.dumps({"station_id": "ZH-AWS-005", "rain_mm": mm,
                       "observed_at": f"2017-08-23T{hour:02d}:00:00+08:00"}).encode()


def level(client: redis.Redis) -> str | None:
    raw = client.hget("onemap:alert:rainstorm:ZH-AWS-005", "alert")
    return json.loads(raw)["level"] if raw else None


def test_window_state_survives_a_restart(worker: RunningWorker, broker: Broker,
                                         redis_client: redis.Redis) -> None:
    topic = worker.topic("in.weather")
    produce(broker.bootstrap, topic, [rain(10, 40.0), rain(11, 40.0)], key=b"ZH-AWS-005")
    deadline = time.monotonic() + 30
    while level(redis_client) != "orange" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert level(redis_client) == "orange"  # 80 mm in 3 h

    stop([worker.proc])  # a clean stop: offsets and changelogs flushed
    restarted = start_worker(worker.env, worker.log.parent)
    try:
        # 20 mm more at 12:00: red only if the 10:00 and 11:00 rain is still in the window
        produce(broker.bootstrap, topic, [rain(12, 20.0)], key=b"ZH-AWS-005")
        deadline = time.monotonic() + 60
        while level(redis_client) != "red" and time.monotonic() < deadline:
            assert restarted.proc.poll() is None, restarted.log.read_text()[-3000:]
            time.sleep(0.3)
        assert level(redis_client) == "red", "the restarted worker lost the rolling window"
        alert = json.loads(redis_client.hget("onemap:alert:rainstorm:ZH-AWS-005", "alert"))
        assert alert["transition"] == "escalated" and alert["seq"] == 2, \
            "the alert lifecycle continued where it was, not as a new alert"
    finally:
        worker.proc = restarted.proc  # the fixture stops whatever runs at the end
