"""The whole path to the wall: a reading produced to Kafka shows on the page in Chromium.

Real broker, real worker (every stage), real Redis, the real dashboard process and a real
browser: the test the command room cares about ("a reading crosses the line; the wall shows it").
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, RunningWorker
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration


def reading(station: str, level_m: float, at: datetime) -> bytes:
    return json.dumps({"station_id": station, "observed_at": at.isoformat(),
                       "level_m": level_m}).encode()


def test_reading_produced_to_kafka_is_on_the_wall_within_two_seconds(
        worker: RunningWorker, broker: Broker, open_wall: Any, artifacts: Path) -> None:
    wall = open_wall(1920, 1080)
    page = wall.page
    now = datetime.now(UTC).replace(microsecond=0)
    # warm-up: the first record through a fresh worker pays for its first fetches
    produce(broker.bootstrap, worker.topic("in.water"),
            [reading("ZH-TIDE-002", 1.0, now - timedelta(minutes=10)),
             reading("ZH-TIDE-002", 3.30, now - timedelta(minutes=5))], key=b"ZH-TIDE-002")
    page.wait_for_selector('#top-list li[data-hazard="water_level:ZH-TIDE-002"]',
                           timeout=30_000)

    # 灯笼山潮位站: guaranteed level 2.90 m, so 3.40 m is red
    selector = '#top-list li[data-hazard="water_level:ZH-TIDE-001"]'
    started = time.monotonic()
    produce(broker.bootstrap, worker.topic("in.water"),
            [reading("ZH-TIDE-001", 1.0, now - timedelta(minutes=1)),
             reading("ZH-TIDE-001", 3.40, now)], key=b"ZH-TIDE-001")
    page.wait_for_selector(selector, timeout=2_000)  # the budget (measured ~0.8 s
    latency = time.monotonic() - started             # here with other work on both cores)
    item = page.locator(selector)
    assert item.get_attribute("data-level") in ("red", "4") or "红" in item.inner_text()
    assert "灯笼山潮位站" in item.inner_text()
    assert not [e for e in wall.errors if "error" in e], wall.errors
    (artifacts / "kafka-to-wall-latency.json").write_text(
        json.dumps({"kafka_to_wall_s": round(latency, 3)}))
