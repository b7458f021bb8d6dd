"""Reminders of alerts still open (repeat interval), on a real redis-server and the real file
outbox: due after the level's interval, repeated, stopped by a later transition, by the
resolution and by the command room reporting it handled; never twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from onemap.levels import WarningLevel
from onemap.records import Alert
from onemap.rules.response import Step
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.sinks.dashboard.state import RedisStateSink
from onemap.sinks.response import record_step
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import FileOutbox
from onemap.sinks.sms.reminders import REMIND_DUE_KEY, note_reminder, remind_due
from tests.sms.storm_kit import T0, alert

POLICY = load_rulebook(default_rules_dir()).lifecycle
RED_S = POLICY.repeat_interval(WarningLevel.RED)
PEOPLE = [("city", "13800000001"), ("district", "13800000002")]


@pytest.fixture()
def db(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/6"  # apart from the worker fixtures' db 0
    redis.Redis.from_url(url).flushdb()
    yield url


def sent_to(a: Alert) -> list[SmsMessage]:
    return [SmsMessage(key=f"{a.alert_id}/{rid}", alert_id=a.alert_id, recipient_id=rid,
                       phone=phone, text="t") for rid, phone in PEOPLE]


def outbox(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(db: str, tmp_path: Path, script: Any) -> list[dict[str, Any]]:
    async def main() -> None:
        client = aioredis.Redis.from_url(db)
        try:
            await script(client, FileOutbox(tmp_path / "out.jsonl"))
        finally:
            await client.aclose()
    asyncio.run(main())
    return outbox(tmp_path / "out.jsonl")


def test_the_policy_repeats_red_and_orange_only() -> None:
    assert RED_S == 7200.0
    assert POLICY.repeat_interval(WarningLevel.ORANGE) == 14400.0
    assert POLICY.repeat_interval(WarningLevel.YELLOW) is None


def test_red_still_open_is_repeated_every_interval_to_the_same_people(
        db: str, tmp_path: Path) -> None:
    red = alert("A", WarningLevel.RED)
    log: list[list[tuple[str, str]]] = []

    async def script(client: aioredis.Redis, provider: FileOutbox) -> None:
        await RedisStateSink(client).send([red])  # the wall knows the alert is open
        assert await note_reminder(client, red, sent_to(red), RED_S, T0) == "scheduled"
        assert await note_reminder(client, red, sent_to(red), RED_S, T0) == "already scheduled"
        for hours in (1, 2, 2, 3, 4):
            log.append(await remind_due(client, provider, POLICY.repeat_interval,
                                        T0 + timedelta(hours=hours)))

    messages = run(db, tmp_path, script)
    assert [len(step) for step in log] == [0, 1, 0, 0, 1]
    assert log[1][0][1].startswith("sent #1") and log[4][0][1].startswith("sent #2")
    assert [(m["recipient_id"], m["text"][:15]) for m in messages] == [
        ("city", "【珠海应急】【持续2小时】红色"), ("district", "【珠海应急】【持续2小时】红色"),
        ("city", "【珠海应急】【持续4小时】红色"), ("district", "【珠海应急】【持续4小时】红色")]


def test_escalation_resolution_or_handled_loop_stops_the_reminders(
        db: str, tmp_path: Path) -> None:
    first = alert("A", WarningLevel.RED)
    later = alert("A", WarningLevel.ORANGE, WarningLevel.RED, "de-escalated", seq=2)
    gone = alert("B", WarningLevel.RED)
    resolved = alert("B", WarningLevel.NONE, WarningLevel.RED, "resolved", seq=2)
    handled = alert("C", WarningLevel.RED)
    results: list[tuple[str, str]] = []

    async def script(client: aioredis.Redis, provider: FileOutbox) -> None:
        sink = RedisStateSink(client)
        await sink.send([first, gone, handled])
        for a in (first, gone, handled):
            await note_reminder(client, a, sent_to(a), RED_S, T0)
        await sink.send([later, resolved])  # A moved on, B was resolved
        await record_step(client, "wind:C", Step("acknowledged", "duty", "api", T0, seq=1))
        await record_step(client, "wind:C", Step("handled", "duty", "api", T0, seq=1))
        results.extend(await remind_due(client, provider, POLICY.repeat_interval,
                                        T0 + timedelta(hours=3)))
        assert await client.zcard(REMIND_DUE_KEY) == 0

    assert run(db, tmp_path, script) == []
    assert sorted(results) == [("wind:A", "dropped: superseded by #2"),
                               ("wind:B", "dropped: resolved"),
                               ("wind:C", "dropped: reported handled")]


def test_yellow_is_not_reminded_and_a_resolution_cancels_a_schedule(
        db: str, tmp_path: Path) -> None:
    yellow = alert("Y", WarningLevel.YELLOW)
    red = alert("R", WarningLevel.RED)
    resolved = alert("R", WarningLevel.NONE, WarningLevel.RED, "resolved", seq=2)

    async def script(client: aioredis.Redis, provider: FileOutbox) -> None:
        assert await note_reminder(client, yellow, sent_to(yellow), None, T0) == "not reminded"
        await note_reminder(client, red, sent_to(red), RED_S, T0)
        assert await note_reminder(client, resolved, sent_to(resolved), None, T0) == "cancelled"
        assert await client.zcard(REMIND_DUE_KEY) == 0

    assert run(db, tmp_path, script) == []


def test_two_workers_ticking_at_once_send_each_reminder_once(db: str, tmp_path: Path) -> None:
    red = alert("A", WarningLevel.RED)

    async def script(client: aioredis.Redis, provider: FileOutbox) -> None:
        await RedisStateSink(client).send([red])
        await note_reminder(client, red, sent_to(red), RED_S, T0)
        other = aioredis.Redis.from_url(db)
        at = T0 + timedelta(hours=2)
        await asyncio.gather(remind_due(client, provider, POLICY.repeat_interval, at),
                             remind_due(other, provider, POLICY.repeat_interval, at))
        await other.aclose()

    messages = run(db, tmp_path, script)
    assert sorted(m["recipient_id"] for m in messages) == ["city", "district"]


def test_news_at_the_same_level_keeps_reminding_with_the_latest_figures(
        db: str, tmp_path: Path) -> None:
    red = alert("A", WarningLevel.RED)
    news = alert("A", WarningLevel.RED, WarningLevel.RED, "updated", seq=2)

    async def script(client: aioredis.Redis, provider: FileOutbox) -> None:
        await RedisStateSink(client).send([red])
        await note_reminder(client, red, sent_to(red), RED_S, T0)
        await RedisStateSink(client).send([news])
        await remind_due(client, provider, POLICY.repeat_interval, T0 + timedelta(hours=2))

    messages = run(db, tmp_path, script)
    assert {m["alert_id"] for m in messages} == {"wind:A#2"}
    assert len(messages) == 2
