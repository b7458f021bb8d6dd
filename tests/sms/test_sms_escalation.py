"""Escalation of unacknowledged alerts: the pure ladder decisions, then the Redis edge on a
real redis-server with an injected clock (no timing: the clock is moved by hand)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.registries import default_registries_dir
from onemap.rules.response import Loop, Step
from onemap.sinks.response import record_step
from onemap.sinks.sms.escalation import (
    AWAITING_KEY,
    Awaiting,
    decide,
    escalate_due,
    escalation_key,
    escalation_text,
    note_sent,
    on_sent,
    read_awaiting,
)
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import FileOutbox
from onemap.sinks.sms.replies import short_code
from onemap.sinks.sms.roster import DutyRoster, load_roster
from onemap.sinks.sms.routing import recipients
from onemap.sinks.sms.smpp import split_units

PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
T0 = datetime(2024, 8, 23, 4, 0, tzinfo=UTC)  # 12:00 Beijing time, a Friday

POLICY = {"red": {"ack_within_min": 10}, "orange": {"ack_within_min": 20},
          "yellow": {"ack_within_min": 60}, "blue": {"ack_within_min": 120, "up_to": "district"}}


def officer(oid: str, area: str, phone: str, **extra: Any) -> dict[str, Any]:
    return {"id": oid, "name": oid, "area_code": area, "phone": phone, **extra}


def make_roster(**changes: Any) -> DutyRoster:
    data: dict[str, Any] = {"version": 1, "escalation": POLICY, "officers": [
        officer("village", "440404104001", "13800000301"),
        officer("town", "440404104", "13800000302", hazard_types=["rainstorm"]),
        officer("town-water", "440404104", "13800000303", hazard_types=["water_level"]),
        officer("district", "440404", "13800000304", min_level="yellow",
                shifts=[{"start": "08:00", "end": "20:00"}], deputy="district-night"),
        officer("district-night", "440404", "13800000305", min_level="yellow",
                shifts=[{"start": "20:00", "end": "08:00"}]),
        officer("city", "440400", "13800000306", min_level="red"),
    ]}
    data.update(changes)
    return DutyRoster.model_validate(data)


ROSTER = make_roster()


def alert(level: WarningLevel = WarningLevel.RED, seq: int = 1, transition: str = "new", *,
          previous: WarningLevel = WarningLevel.NONE, exercise: bool = False,
          hazard_type: str = "rainstorm", place: Place = PLACE) -> Alert:
    h = Hazard(hazard_id=f"{hazard_type}:ZH-AWS-028", hazard_type=hazard_type, feed="weather",
               source_id="ZH-AWS-028", source_name="平沙自动气象站", level=level,
               previous_level=previous, place=place, lon=113.2, lat=22.1, observed_at=T0,
               key_figure=KeyFigure("3小时降雨", 112.0, "毫米", "红色预警线", 100.0),
               reason="r", rule_id=hazard_type, rule_version="v", exercise=exercise)
    return Alert(alert_id=f"{h.hazard_id}#{seq}", hazard_id=h.hazard_id, seq=seq,
                 transition=transition, level=level, previous_level=previous, hazard=h,
                 score=100.0, score_breakdown={}, issued_at=T0)


def messages(a: Alert, *ids: str, roster: DutyRoster = ROSTER) -> list[SmsMessage]:
    return [SmsMessage(key=f"{a.alert_id}/{i}", alert_id=a.alert_id, recipient_id=i,
                       phone=roster.by_id(i).phone, text="t") for i in ids]


def entry_for(a: Alert, *told: str, roster: DutyRoster = ROSTER) -> Awaiting:
    entry, why = on_sent(None, a, told, roster, T0)
    assert entry is not None, why
    return entry


# -- pure decisions --------------------------------------------------------------------------


def test_a_sent_alert_awaits_acknowledgement_for_its_colours_deadline() -> None:
    red = entry_for(alert(WarningLevel.RED), "village")
    yellow = entry_for(alert(WarningLevel.YELLOW), "village", "town")
    assert red.due_at == T0 + timedelta(minutes=10)
    assert yellow.due_at == T0 + timedelta(minutes=60)
    assert (red.reached, yellow.reached) == (0, 1)  # village, town


def test_before_the_deadline_it_waits() -> None:
    d = decide(entry_for(alert(), "village"), Loop(), ROSTER, T0 + timedelta(minutes=9))
    assert d.action == "wait" and d.next_due == T0 + timedelta(minutes=10)


def test_unacknowledged_it_climbs_one_level_at_a_time_to_the_city() -> None:
    entry = entry_for(alert(), "village")
    climbed = []
    now = T0
    while True:
        now = entry.due_at
        d = decide(entry, Loop(), ROSTER, now)
        if d.action != "escalate":
            break
        assert d.level is not None and d.next_due == now + timedelta(minutes=10)
        climbed.append((d.level, [o.id for o in d.targets]))
        entry = Awaiting(entry.alert_id, entry.seq, entry.alert, entry.noted_at, d.next_due,
                         (*entry.told, *(o.id for o in d.targets)),
                         ["village", "town", "district", "city"].index(d.level))
    # the town officer for rainstorms, not the one for water levels; the district officer on
    # shift at 12:00; the city officer although his min_level is red-only for routine notices
    assert climbed == [("town", ["town"]), ("district", ["district"]), ("city", ["city"])]
    assert d.action == "exhausted" and "above city" in d.reason


def test_outside_the_shift_the_deputy_is_escalated_to() -> None:
    night = T0.replace(hour=14)  # 22:00 Beijing time
    entry = entry_for(alert(), "village", "town")
    d = decide(entry, Loop(), ROSTER, max(night, entry.due_at))
    assert d.action == "escalate" and [o.id for o in d.targets] == ["district-night"]


def test_a_level_with_nobody_for_the_area_is_skipped() -> None:
    roster = make_roster(officers=[o for o in ROSTER.model_dump()["officers"]
                                   if o["id"] not in ("town", "town-water")])
    d = decide(entry_for(alert(), "village", roster=roster), Loop(), roster,
               T0 + timedelta(minutes=10))
    assert d.action == "escalate" and d.level == "district"


def test_a_colour_stops_at_its_top_level() -> None:
    entry = entry_for(alert(WarningLevel.BLUE), "village", "town", "district")
    d = decide(entry, Loop(), ROSTER, T0 + timedelta(minutes=120))
    assert d.action == "exhausted" and "up to district" in d.reason


def test_an_acknowledgement_of_this_or_a_later_transition_stops_it() -> None:
    entry = entry_for(alert(seq=2, transition="escalated"), "village")
    later = T0 + timedelta(hours=1)
    for seq, stops in ((1, False), (2, True), (3, True)):
        loop = Loop((Step("acknowledged", "town", "sms", T0, seq=seq),))
        d = decide(entry, loop, ROSTER, later)
        assert (d.action == "acknowledged") is stops, (seq, d)
    assert decide(entry, loop, ROSTER, later).reason == "acknowledged by town via sms"


def test_drills_do_not_escalate_unless_the_policy_says_so() -> None:
    drill = alert(exercise=True)
    assert on_sent(None, drill, ["village"], ROSTER, T0) == (None, "drills do not escalate")
    with_drills = make_roster(escalation={**POLICY, "drills": True})
    entry = entry_for(drill, "village", roster=with_drills)
    d = decide(entry, Loop(), with_drills, entry.due_at)
    assert d.action == "escalate"
    assert escalation_text(drill, entry.reached, 10).startswith("【演练】【珠海应急】【升级】")


def test_without_a_policy_nothing_escalates() -> None:
    bare = make_roster(escalation=None)
    assert on_sent(None, alert(), ["village"], bare, T0)[0] is None
    assert decide(entry_for(alert(), "village"), Loop(), bare, T0 + timedelta(hours=1)).action \
        == "disabled"


def test_a_retried_send_does_not_postpone_and_a_resolution_ends_the_wait() -> None:
    entry = entry_for(alert(), "village")
    again, why = on_sent(entry, alert(), ["town"], ROSTER, T0 + timedelta(minutes=5))
    assert why == "already awaited" and again is not None
    assert again.due_at == entry.due_at and again.told == ("village", "town")
    assert again.reached == 1
    stale, why = on_sent(again, alert(seq=0), ["city"], ROSTER, T0)
    assert stale is again and why == "a later transition is already awaited"
    lower, why = on_sent(again, alert(WarningLevel.ORANGE, 2, "de-escalated"), [], ROSTER, T0)
    assert lower is not None and lower.seq == 1 and lower.alert.level == WarningLevel.ORANGE
    assert on_sent(lower, alert(WarningLevel.NONE, 3, "resolved"), [], ROSTER, T0) == \
        (None, "resolved")


def test_the_escalation_text_says_who_did_not_acknowledge_and_fits_two_parts() -> None:
    a = alert()
    text = escalation_text(a, 1, 10)
    code = short_code(a.hazard_id)
    assert text == ("【珠海应急】【升级】红色暴雨预警 金湾区平沙镇美平社区平沙自动气象站 "
                    f"3小时降雨112毫米 平沙镇10分钟未确认 请督促处置 回复1 {code}确认")
    assert len(split_units(text)) == 2


def test_the_shipped_roster_escalates_an_unread_yellow_water_alert_to_the_city() -> None:
    roster = load_roster(default_registries_dir() / "duty_roster.yaml")
    qianshan = Place("440400", "珠海市", "440402", "香洲区", "440402003", "前山街道")
    a = alert(WarningLevel.YELLOW, hazard_type="water_level", place=qianshan)
    told = [o.id for o in recipients(a, roster)]
    assert sorted(told) == ["ZH-DUTY-440402-01", "ZH-DUTY-440402003-01"]
    entry = entry_for(a, *told, roster=roster)
    d = decide(entry, Loop(), roster, T0 + timedelta(minutes=60))
    assert d.action == "escalate" and [o.id for o in d.targets] == ["ZH-DUTY-440400-01"]


# -- the Redis edge --------------------------------------------------------------------------


redis_test = pytest.mark.integration


@pytest.fixture()
def redis_db(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/3"  # apart from the worker fixtures' db 0
    yield url


def run(url: str, scenario: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        try:
            await scenario(client)
        finally:
            await client.aclose()
    asyncio.run(main())


def sent(outbox: Path) -> list[dict[str, Any]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]


@redis_test
def test_escalation_on_redis_climbs_once_per_level_then_ends(redis_db: str,
                                                             tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "out.jsonl")
    a = alert()

    async def scenario(client: aioredis.Redis) -> None:
        assert await note_sent(client, a, messages(a, "village"), ROSTER, T0) == \
            "awaiting acknowledgement"
        assert await escalate_due(client, ROSTER, outbox, T0 + timedelta(minutes=9)) == []
        due = T0 + timedelta(minutes=10)
        [first] = await escalate_due(client, ROSTER, outbox, due)
        assert (first.outcome, first.level, first.recipients) == ("escalated", "town",
                                                                  ("town",))
        # the same tick again, or a second worker: nothing is due, nothing sent twice
        assert await escalate_due(client, ROSTER, outbox, due) == []
        [second] = await escalate_due(client, ROSTER, outbox, due + timedelta(minutes=10))
        [third] = await escalate_due(client, ROSTER, outbox, due + timedelta(minutes=20))
        assert (second.level, third.level) == ("district", "city")
        [last] = await escalate_due(client, ROSTER, outbox, due + timedelta(minutes=30))
        assert last.outcome == "exhausted"
        assert await client.zcard(AWAITING_KEY) == 0
        steps = {k.decode(): v.decode()
                 for k, v in (await client.hgetall(escalation_key(a.alert_id))).items()}
        assert steps["town/town"] == steps["city/city"] == "delivered"
        assert json.loads(steps["district"])["to"] == ["district"]
        assert json.loads(steps["district"])["minutes"] == 20

    run(redis_db, scenario)
    out = sent(tmp_path / "out.jsonl")
    assert [m["recipient_id"] for m in out] == ["town", "district", "city"]
    assert all(m["key"] == f"{a.alert_id}/{m['recipient_id']}" for m in out)
    assert "【升级】" in out[0]["text"] and "美平社区10分钟未确认" in out[0]["text"]
    assert "平沙镇20分钟未确认" in out[1]["text"] and "金湾区30分钟未确认" in out[2]["text"]


@redis_test
def test_an_acknowledgement_before_the_deadline_stops_it_on_redis(redis_db: str,
                                                                 tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "out.jsonl")
    a = alert()

    async def scenario(client: aioredis.Redis) -> None:
        await note_sent(client, a, messages(a, "village"), ROSTER, T0)
        await record_step(client, a.hazard_id, Step("acknowledged", "值班长", "api",
                                                    T0 + timedelta(minutes=3), seq=1))
        [result] = await escalate_due(client, ROSTER, outbox, T0 + timedelta(minutes=10))
        assert result.outcome == "acknowledged" and "via api" in result.reason
        assert await read_awaiting(client, a.hazard_id) is None

    run(redis_db, scenario)
    assert sent(tmp_path / "out.jsonl") == []


@redis_test
def test_concurrent_workers_send_each_escalation_once(redis_db: str, tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "out.jsonl")
    alerts = [alert(seq=1), alert(WarningLevel.ORANGE, hazard_type="water_level")]

    async def scenario(client: aioredis.Redis) -> None:
        for a in alerts:
            await note_sent(client, a, messages(a, "village"), ROSTER, T0)
        due = T0 + timedelta(minutes=20)
        results = await asyncio.gather(*(escalate_due(client, ROSTER, outbox, due)
                                         for _ in range(4)))
        outcomes = sorted(r.outcome for rs in results for r in rs)
        assert outcomes.count("escalated") == 2, outcomes

    run(redis_db, scenario)
    got = sorted((m["alert_id"], m["recipient_id"]) for m in sent(tmp_path / "out.jsonl"))
    assert got == [("rainstorm:ZH-AWS-028#1", "town"), ("water_level:ZH-AWS-028#1",
                                                       "town-water")]


@redis_test
def test_a_newer_transition_replaces_the_wait_and_a_resolution_clears_it(
        redis_db: str, tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "out.jsonl")
    first, second = alert(WarningLevel.ORANGE), alert(WarningLevel.RED, 2, "escalated")

    async def scenario(client: aioredis.Redis) -> None:
        await note_sent(client, first, messages(first, "village"), ROSTER, T0)
        later = T0 + timedelta(minutes=5)
        await note_sent(client, second, messages(second, "village"), ROSTER, later)
        entry = await read_awaiting(client, first.hazard_id)
        assert entry is not None and entry.seq == 2
        assert entry.due_at == later + timedelta(minutes=10)  # red's deadline, from its send
        # a late note of the older transition (a retry) changes nothing
        await note_sent(client, first, messages(first, "town"), ROSTER, later)
        assert await read_awaiting(client, first.hazard_id) == entry
        resolved = alert(WarningLevel.NONE, 3, "resolved", previous=WarningLevel.RED)
        assert await note_sent(client, resolved, [], ROSTER, later) == "resolved"
        assert await client.zcard(AWAITING_KEY) == 0
        assert await escalate_due(client, ROSTER, outbox, T0 + timedelta(hours=2)) == []

    run(redis_db, scenario)


@redis_test
def test_a_step_claimed_by_a_worker_that_died_is_never_sent_twice(redis_db: str,
                                                                  tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "out.jsonl")
    a = alert()
    due = T0 + timedelta(minutes=10)

    async def scenario(client: aioredis.Redis) -> None:
        await note_sent(client, a, messages(a, "village"), ROSTER, T0)
        # a worker recorded the step, claimed the town officer's message and died mid-submit
        await client.hset(escalation_key(a.alert_id), mapping={
            "town": json.dumps({"to": ["town"], "minutes": 10}),
            "town/town": f"pending {due.timestamp():.0f}"})
        [busy] = await escalate_due(client, ROSTER, outbox, due + timedelta(seconds=30))
        assert busy.outcome == "busy"
        [moved_on] = await escalate_due(client, ROSTER, outbox, due + timedelta(minutes=2))
        assert (moved_on.outcome, moved_on.level) == ("escalated", "town")
        entry = await read_awaiting(client, a.hazard_id)
        assert entry is not None and entry.reached == 1
        [district] = await escalate_due(client, ROSTER, outbox, entry.due_at)
        assert district.level == "district"

    run(redis_db, scenario)
    assert [m["recipient_id"] for m in sent(tmp_path / "out.jsonl")] == ["district"]
