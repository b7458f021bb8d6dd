"""One feed through every stage on the real embedded broker and Redis, with a real worker."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.conftest import Broker, RunningWorker
from tests.integration.kafka_helpers import produce, read_until

pytestmark = pytest.mark.integration


def water(station: str, level: float, minutes: int = 0) -> bytes:
    at = datetime(2017, 8, 23, 3, 0, tzinfo=UTC) + timedelta(minutes=minutes)
    return json.dumps({"station_id": station, "observed_at": at.isoformat(),
                       "level_m": level}).encode()


def wait_for(check: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def outbox(worker: RunningWorker) -> list[dict[str, Any]]:
    if not worker.outbox.exists():
        return []
    return [json.loads(line) for line in worker.outbox.read_text().splitlines() if line]


def metric(worker: RunningWorker, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in worker.metrics().splitlines():
        if line.startswith(f"{name}{{") or line.startswith(f"{name} "):
            series, _, value = line.rpartition(" ")
            got = series[len(name):].strip("{}")
            if all(part in got.split(",") for part in wanted.split(",") if part):
                return float(value)
    return 0.0


def test_water_reading_over_guaranteed_level_becomes_red_alert_everywhere(
    worker: RunningWorker, broker: Broker, redis_client: redis.Redis,
) -> None:
    # 香洲港潮位站: warning 2.40 m, guaranteed 3.00 m -> 3.12 m is red
    produce(broker.bootstrap, worker.topic("in.water"),
            [water("ZH-TIDE-005", 1.20, 0), water("ZH-TIDE-005", 3.12, 5)],
            key=b"ZH-TIDE-005")

    stored = wait_for(lambda: redis_client.hget("onemap:alert:water_level:ZH-TIDE-005",
                                                "alert"), what="the alert in Redis")
    alert = json.loads(stored)
    assert alert["level"] == "red" and alert["transition"] == "new"
    place = alert["hazard"]["place"]
    assert (place["district_name"], place["town_name"]) == ("香洲区", "香湾街道")
    assert place["village_code"].startswith(place["town_code"])
    assert "超保证水位0.12米" in alert["hazard"]["reason"]
    assert redis_client.zscore("onemap:alerts:open:actual", "water_level:ZH-TIDE-005") == \
        alert["score"]

    messages = wait_for(lambda: [m for m in outbox(worker)
                                 if m["alert_id"] == alert["alert_id"]], what="SMS")
    recipients = {m["recipient_id"] for m in messages}
    assert len(recipients) == len(messages), "one SMS per recipient"
    assert recipients, "someone on the roster covers 香湾街道"
    assert all(m["text"].startswith("【珠海应急】红色预警") for m in messages)

    ledger = read_until(broker.bootstrap, worker.topic("alerts"),
                        lambda rs: any(b"ZH-TIDE-005#1" in v for _, v in rs))
    assert any(json.loads(v)["alert_id"] == "water_level:ZH-TIDE-005#1" for _, v in ledger)

    wait_for(lambda: metric(worker, "onemap_alerts_total", level="red", transition="new") >= 1,
             what="alert counter")
    assert metric(worker, "onemap_records_in_total", feed="water") >= 2
    assert metric(worker, "onemap_stage_batch_duration_seconds_count", stage="ingest") >= 1


def test_same_reading_again_sends_no_second_sms(
    worker: RunningWorker, broker: Broker, redis_client: redis.Redis,
) -> None:
    def sms_settled() -> float:  # alerts the SMS sink is done with (all their recipients)
        return sum(metric(worker, "onemap_sink_deliveries_total", sink="sms", outcome=o)
                   for o in ("delivered", "duplicate", "failed"))

    settled = sms_settled()
    produce(broker.bootstrap, worker.topic("in.water"),
            [water("ZH-RIV-001", 2.45, 0)], key=b"ZH-RIV-001")
    wait_for(lambda: redis_client.hget("onemap:alert:water_level:ZH-RIV-001", "alert"),
             what="first alert")
    wait_for(lambda: sms_settled() > settled, what="the first alert's SMS to every recipient")
    first = len([m for m in outbox(worker) if "ZH-RIV-001" in m["alert_id"]])
    assert first >= 1
    # the identical record again, and a newer one at the same level
    produce(broker.bootstrap, worker.topic("in.water"),
            [water("ZH-RIV-001", 2.45, 0), water("ZH-RIV-001", 2.50, 5)], key=b"ZH-RIV-001")
    wait_for(lambda: metric(worker, "onemap_rule_decisions_total", decision="duplicate") >= 1,
             what="the duplicate to be recognised")
    wait_for(lambda: metric(worker, "onemap_rule_decisions_total", decision="unchanged") >= 1,
             what="the newer reading to be evaluated")
    assert len([m for m in outbox(worker) if "ZH-RIV-001" in m["alert_id"]]) == first


def test_malformed_record_goes_to_dead_letter_and_worker_keeps_running(
    worker: RunningWorker, broker: Broker, redis_client: redis.Redis,
) -> None:
    bad = b'{"station_id": "ZH-RIV-002", "level_m": 1.'
    produce(broker.bootstrap, worker.topic("in.water"), [bad])
    letters = read_until(broker.bootstrap, worker.topic("deadletter"),
                         lambda rs: any(b"invalid-json" in v for _, v in rs))
    [letter] = [json.loads(v) for _, v in letters if b"invalid-json" in v]
    assert letter["feed"] == "water" and letter["stage"] == "ingest"
    assert base64.b64decode(letter["original_b64"]) == bad
    assert letter["source"]["topic"] == worker.topic("in.water")
    assert letter["source"]["offset"] >= 0

    wait_for(lambda: metric(worker, "onemap_dead_letters_total", feed="water",
                            reason="invalid-json") >= 1, what="dead-letter counter")
    # still alive and working: a good record after the bad one becomes an alert
    assert worker.proc.poll() is None
    produce(broker.bootstrap, worker.topic("in.water"),
            [water("ZH-WLG-002", 0.31, 0)], key=b"ZH-WLG-002")
    wait_for(lambda: redis_client.hget("onemap:alert:water_level:ZH-WLG-002", "alert"),
             what="alert after the bad record")


def test_rainstorm_from_weather_feed_and_too_late_reading_in_dead_letter(
    worker: RunningWorker, broker: Broker, redis_client: redis.Redis,
) -> None:
    def rain(hour: int, minute: int, mm: float) -> bytes:
        return json.dumps({"station_id": "ZH-AWS-010", "rain_mm": mm,
                           "observed_at": f"2017-08-23T{hour:02d}:{minute:02d}:00+08:00"}).encode()

    produce(broker.bootstrap, worker.topic("in.weather"),
            [rain(10, 0, 45.0), rain(11, 0, 30.0), rain(12, 0, 30.0)], key=b"ZH-AWS-010")
    stored = wait_for(lambda: redis_client.hget("onemap:alert:rainstorm:ZH-AWS-010", "alert"),
                      what="rainstorm alert")
    wait_for(lambda: json.loads(redis_client.hget("onemap:alert:rainstorm:ZH-AWS-010",
                                                  "alert"))["level"] == "red",
             what="red rainstorm (105 mm in 3 h)")
    assert json.loads(stored)["hazard"]["rule_version"].startswith("rainstorm@v1+")

    produce(broker.bootstrap, worker.topic("in.weather"), [rain(11, 30, 5.0)],
            key=b"ZH-AWS-010")  # 30 minutes older than the newest reading: beyond lateness
    letters = read_until(broker.bootstrap, worker.topic("deadletter"),
                         lambda rs: any(b"too-late" in v for _, v in rs))
    [letter] = [json.loads(v) for _, v in letters if b"too-late" in v]
    assert letter["stage"] == "rules" and letter["feed"] == "weather"
    # the record as the rules stage consumed it: the located observation, with its values
    rejected = json.loads(base64.b64decode(letter["original_b64"]))
    assert rejected["values"] == {"rain_mm": 5.0}
    assert rejected["observed_at"] == "2017-08-23T11:30:00+08:00"


def test_a_silence_set_on_the_wall_mutes_the_station_alert_but_keeps_it_on_the_ledger(
    worker: RunningWorker, broker: Broker, redis_url: str, redis_client: redis.Redis,
) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from onemap.rules.silences import Matchers, Silence
    from onemap.sinks.silences import add_silence

    start = datetime(2017, 8, 23, 0, 0, tzinfo=UTC)  # the readings' own event time
    silence = Silence(id="maint-1", matchers=Matchers(source_id="ZH-TIDE-001"),
                      starts_at=start, ends_at=start + timedelta(hours=12),
                      created_by="值班员张三", comment="潮位站检修")

    async def store() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await add_silence(client, silence)
        await client.aclose()

    asyncio.run(store())
    time.sleep(6)  # the worker reads silences every 5 s
    produce(broker.bootstrap, worker.topic("in.water"),
            [water("ZH-TIDE-001", 1.20, 0), water("ZH-TIDE-001", 3.50, 5)],
            key=b"ZH-TIDE-001")
    stored = wait_for(lambda: redis_client.hget("onemap:alert:water_level:ZH-TIDE-001",
                                                "alert"), what="the silenced alert on the wall")
    alert = json.loads(stored)
    assert alert["level"] == "red"
    assert alert["notify"] == "silenced"
    assert "maint-1" in alert["notify_reason"] and "潮位站检修" in alert["notify_reason"]
