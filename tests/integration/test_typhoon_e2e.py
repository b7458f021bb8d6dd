"""The typhoon scenario end to end on the real broker, Redis and a worker: its key moments
are in the dashboard state as the expected levels at the expected places."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from onemap.settings import Settings
from onemap.streams import typhoon
from onemap.streams.replay import replay
from tests.conftest import Broker, RunningWorker

pytestmark = pytest.mark.integration


def alert(client: redis.Redis, hazard_id: str) -> dict[str, object] | None:
    raw = client.hget(f"onemap:alert:{hazard_id}", "alert")
    return json.loads(raw) if raw else None


def test_typhoon_key_moments_reach_the_dashboard_state(
    worker: RunningWorker, broker: Broker, redis_client: redis.Redis, tmp_path: Path,
) -> None:
    path = typhoon.write(tmp_path / "typhoon.jsonl")
    settings = Settings.from_env(env={}, kafka_url=broker.url,
                                 topic_prefix=worker.topic_prefix)
    # 600x: eight hours in 48 s, so the feeds stay roughly level with each other in stream
    # time, as they do live (at full speed one feed's batch can run hours of scenario ahead)
    sent = replay(settings, [path], speed=600, progress=None)
    assert sent > 10_000

    def done() -> bool:
        cap = alert(redis_client, "cap_warning:44040041600000_TY_201708230800")
        silent = alert(redis_client, "sensor_silent:ZH-TIDE-005")
        return bool(cap and cap["transition"] == "resolved" and silent)

    deadline = time.monotonic() + 150
    while not done() and time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.log.read_text()[-3000:]
        time.sleep(1)
    assert done(), (
        "the storm did not finish flowing within 2 minutes: "
        f"cap={alert(redis_client, 'cap_warning:44040041600000_TY_201708230800')} "
        f"silent={alert(redis_client, 'sensor_silent:ZH-TIDE-005')} "
        f"metrics={[m for m in worker.metrics().splitlines() if m.startswith('onemap_r')]}")

    silent = alert(redis_client, "sensor_silent:ZH-TIDE-005")
    assert silent is not None and silent["level"] == "orange"  # lost while red

    open_silent = {m.decode() for m in redis_client.zrange("onemap:alerts:open:actual", 0, -1)
                   if m.startswith(b"sensor_silent:")}
    assert open_silent == {"sensor_silent:ZH-TIDE-005"}, "only the lost gauge stays silent"

    tide = alert(redis_client, "water_level:ZH-TIDE-004")  # 横琴潮位站
    assert tide is not None
    open_ids = {m.decode() for m in redis_client.zrange("onemap:alerts:open:actual", 0, -1)}
    assert any(i.startswith("rainstorm:") for i in open_ids)
    assert any(i.startswith("wind:") for i in open_ids)
    top = redis_client.zrevrange("onemap:alerts:open:actual", 0, 0)[0].decode()
    top_alert = alert(redis_client, top)
    assert top_alert is not None and top_alert["level"] == "red"
