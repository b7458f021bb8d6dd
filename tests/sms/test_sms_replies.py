"""Acknowledgement by SMS reply: parsing, choosing the alert, recording the loop step on a
real redis-server, and the texts sent back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.rules.response import STEP_LABELS
from onemap.sinks.response import read_loop
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsEvent
from onemap.sinks.sms.replies import (
    HELP_TEXT,
    UNKNOWN_PHONE_TEXT,
    Command,
    RecentAlert,
    choose,
    handle_reply,
    parse_reply,
    remember_sent,
    reply_text,
    short_code,
)
from onemap.sinks.sms.roster import DutyRoster
from onemap.sinks.sms.smpp import SINGLE_UNITS

PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
T0 = datetime(2024, 8, 23, 4, 0, tzinfo=UTC)
ROSTER = DutyRoster.model_validate({"version": 1, "officers": [
    {"id": "town", "name": "镇值班员", "area_code": "440404104", "phone": "13800000302"},
    {"id": "district", "name": "区值班员", "area_code": "440404", "phone": "13800000304"},
]})
TOWN_PHONE = "13800000302"


def alert(source: str = "ZH-AWS-028", seq: int = 1, hazard_type: str = "rainstorm",
          exercise: bool = False) -> Alert:
    h = Hazard(hazard_id=f"{hazard_type}:{source}", hazard_type=hazard_type, feed="weather",
               source_id=source, source_name="平沙自动气象站", level=WarningLevel.RED,
               previous_level=WarningLevel.NONE, place=PLACE, lon=113.2, lat=22.1,
               observed_at=T0, key_figure=KeyFigure("3小时降雨", 112.0, "毫米"), reason="r",
               rule_id=hazard_type, rule_version="v", exercise=exercise)
    return Alert(alert_id=f"{h.hazard_id}#{seq}", hazard_id=h.hazard_id, seq=seq,
                 transition="new", level=WarningLevel.RED, previous_level=WarningLevel.NONE,
                 hazard=h, score=1.0, score_breakdown={}, issued_at=T0)


def to(a: Alert, recipient: str = "town", phone: str = TOWN_PHONE) -> list[SmsMessage]:
    return [SmsMessage(key=f"{a.alert_id}/{recipient}", alert_id=a.alert_id,
                       recipient_id=recipient, phone=phone, text="t")]


def reply(text: str, phone: str = TOWN_PHONE, minutes: int = 3) -> SmsEvent:
    return SmsEvent(kind="reply", phone=phone, at=T0 + timedelta(minutes=minutes), text=text)


# -- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1", Command("acknowledged")), ("确认", Command("acknowledged")),
    ("收到。", Command("acknowledged")), ("１", Command("acknowledged")),
    ("1 4821", Command("acknowledged", "4821")), ("1#4821", Command("acknowledged", "4821")),
    ("确认 0042", Command("acknowledged", "0042")), ("2", Command("on_scene")),
    ("3 4821", Command("handled", "4821")), ("已到场", Command("on_scene")),
    ("", Command(None)), ("10", Command(None)), ("1 48", Command(None)),
    ("好的谢谢", Command(None)), ("STOP", Command(None)), ("9", Command(None)),
])
def test_replies_are_parsed_strictly(text: str, expected: Command) -> None:
    assert parse_reply(text) == expected


def recent(hazard: str, minutes: int) -> RecentAlert:
    return RecentAlert(hazard, f"{hazard}#1", 1, "town", T0 + timedelta(minutes=minutes),
                       short_code(hazard), "红色暴雨预警 金湾区平沙镇美平社区")


def test_a_bare_reply_is_about_the_latest_alert_and_a_code_picks_another() -> None:
    older, newer = recent("rainstorm:A", 1), recent("rainstorm:B", 2)
    assert choose(Command("acknowledged"), [older, newer]) == (newer, "latest")
    assert choose(Command("acknowledged", older.code), [older, newer]) == (older, "by code")
    assert choose(Command("acknowledged", "9999" if older.code != "9999" else "9998"),
                  [older]) == (None, "unknown-code")
    assert choose(Command("acknowledged"), []) == (None, "nothing-to-acknowledge")


def test_every_reply_text_fits_one_sms() -> None:
    target = recent("rainstorm:A", 1)
    texts = [reply_text(o, target, "acknowledged", why)  # type: ignore[arg-type]
             for o, why in (("accepted", ""), ("already", ""), ("refused", "acknowledge first"),
                            ("refused", "already closed"))]
    texts += [HELP_TEXT, UNKNOWN_PHONE_TEXT, reply_text("unknown-code", None, None, code="1234"),
              reply_text("nothing-to-acknowledge", None, None)]
    assert all(t.startswith("【珠海应急】") and len(t) <= SINGLE_UNITS for t in texts), \
        [(len(t), t) for t in texts if len(t) > SINGLE_UNITS]


# -- on Redis --------------------------------------------------------------------------------

redis_test = pytest.mark.integration


def run(redis_url: str, scenario: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4")
        await client.flushdb()
        try:
            await scenario(client)
        finally:
            await client.aclose()
    asyncio.run(main())


@redis_test
def test_a_1_from_the_officers_phone_acknowledges_the_alert_it_was_sent(redis_url: str) -> None:
    a = alert()

    async def scenario(client: aioredis.Redis) -> None:
        await remember_sent(client, a, to(a), T0)
        # the SMSC gives the sender with the country code
        result = await handle_reply(client, ROSTER, reply("1", "8613800000302"), T0)
        assert (result.outcome, result.actor, result.hazard_id) == ("accepted", "town",
                                                                     a.hazard_id)
        assert result.reply is not None
        assert result.reply.startswith("【珠海应急】已确认：红色暴雨预警")
        loop = await read_loop(client, a.hazard_id)
        [step] = loop.steps
        assert (step.step, step.actor, step.via, step.seq) == ("acknowledged", "town", "sms", 1)
        again = await handle_reply(client, ROSTER, reply("确认"), T0)
        assert again.outcome == "already" and again.reply is not None
        assert again.reply.startswith("【珠海应急】此前已确认：")

    run(redis_url, scenario)


@redis_test
def test_a_code_names_one_of_several_alerts_and_later_steps_follow_the_loop_rules(
        redis_url: str) -> None:
    first, second = alert("ZH-AWS-001"), alert("ZH-AWS-002")

    async def scenario(client: aioredis.Redis) -> None:
        await remember_sent(client, first, to(first), T0)
        await remember_sent(client, second, to(second), T0 + timedelta(minutes=1))
        code = short_code(first.hazard_id)
        on_scene = await handle_reply(client, ROSTER, reply(f"2 {code}"), T0)
        assert on_scene.outcome == "refused" and on_scene.reply is not None
        assert "请先回复1确认" in on_scene.reply
        assert (await handle_reply(client, ROSTER, reply(f"1 {code}"), T0)).hazard_id == \
            first.hazard_id
        assert (await handle_reply(client, ROSTER, reply(f"2 {code}"), T0)).outcome == \
            "accepted"
        assert (await read_loop(client, first.hazard_id)).current == "on_scene"
        assert (await read_loop(client, second.hazard_id)).current is None
        wrong = "0000" if code != "0000" and short_code(second.hazard_id) != "0000" else "0001"
        missing = await handle_reply(client, ROSTER, reply(f"1 {wrong}"), T0)
        assert missing.outcome == "unknown-code" and missing.reply is not None
        assert wrong in missing.reply

    run(redis_url, scenario)


@redis_test
def test_strangers_and_gibberish_get_one_polite_help_reply_per_hour(redis_url: str) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        stranger = await handle_reply(client, ROSTER, reply("1", "13912345678"), T0)
        assert (stranger.outcome, stranger.reply) == ("unknown-phone", UNKNOWN_PHONE_TEXT)
        assert (await handle_reply(client, ROSTER, reply("1", "13912345678"), T0)).reply is None
        officer = await handle_reply(client, ROSTER, reply("什么情况?"), T0)
        assert (officer.outcome, officer.reply) == ("unknown-text", HELP_TEXT)
        nothing = await handle_reply(client, ROSTER, reply("1", "13800000304"), T0)
        assert nothing.outcome == "nothing-to-acknowledge"
        assert await client.keys("onemap:response:*") == []

    run(redis_url, scenario)


@redis_test
def test_a_hazard_points_responsible_person_acknowledges_by_their_recipient_id(
        redis_url: str) -> None:
    a = alert("ZH-GH-003", hazard_type="geohazard")
    person = "responsible:ZH-GH-003"

    async def scenario(client: aioredis.Redis) -> None:
        await remember_sent(client, a, to(a, person, "13700000003"), T0)
        result = await handle_reply(client, ROSTER, reply("1", "13700000003"), T0)
        assert (result.outcome, result.actor) == ("accepted", person)

    run(redis_url, scenario)


@redis_test
def test_replies_to_drill_alerts_carry_the_drill_tag(redis_url: str) -> None:
    a = alert(exercise=True)

    async def scenario(client: aioredis.Redis) -> None:
        await remember_sent(client, a, to(a), T0)
        result = await handle_reply(client, ROSTER, reply("1"), T0)
        assert result.reply is not None and result.reply.startswith("【演练】【珠海应急】已确认")

    run(redis_url, scenario)


@redis_test
def test_a_phone_remembers_at_most_thirty_hazards(redis_url: str) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        for i in range(35):
            a = alert(f"S{i:02d}")
            await remember_sent(client, a, to(a), T0 + timedelta(minutes=i))
        kept: dict[Any, Any] = await client.hgetall(f"onemap:sms:recent:{TOWN_PHONE}")
        assert len(kept) == 30 and b"rainstorm:S34" in kept and b"rainstorm:S04" not in kept
        assert 0 < await client.ttl(f"onemap:sms:recent:{TOWN_PHONE}") <= 7 * 24 * 3600

    run(redis_url, scenario)


def test_step_labels_used_in_replies_exist() -> None:
    assert {"acknowledged", "on_scene", "handled"} <= set(STEP_LABELS)
