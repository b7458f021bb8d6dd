"""The whole follow-up loop over real SMPP and real Redis: send, receipt, escalation after the
deadline (clock moved by hand), acknowledgement by a mobile-originated "1", the reply, and an
undeliverable message dead-lettered and passed to the deputy. No mocks: the loopback SMSC
(sinks/sms/smsc.py) and redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.sinks.base import Outcome
from onemap.sinks.response import read_loop
from onemap.sinks.sms.escalation import read_awaiting
from onemap.sinks.sms.followup import SmsFollowUp, SmsFollowUpMetrics
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.receipts import read_receipts
from onemap.sinks.sms.roster import DutyRoster
from onemap.sinks.sms.smpp import ESME_RTHROTTLED, SmppProvider
from onemap.sinks.sms.smsc import ESME_RINVDSTADR, Smsc
from onemap.sinks.sms.templates import render

pytestmark = pytest.mark.integration

PASSWORD = "Zq9x7Kp"
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
T0 = datetime(2024, 8, 23, 4, 0, tzinfo=UTC)
PHONES = {"village": "13800000301", "town": "13800000302", "district": "13800000304",
          "district-2": "13800000305", "city": "13800000306"}
ROSTER = DutyRoster.model_validate({
    "version": 1,
    "escalation": {"red": {"ack_within_min": 10}, "orange": {"ack_within_min": 20},
                   "yellow": {"ack_within_min": 60}, "blue": {"ack_within_min": 120}},
    "officers": [
        {"id": "village", "name": "村", "area_code": "440404104001", "phone": PHONES["village"]},
        {"id": "town", "name": "镇", "area_code": "440404104", "phone": PHONES["town"]},
        {"id": "district", "name": "区", "area_code": "440404", "phone": PHONES["district"],
         "deputy": "district-2"},
        {"id": "district-2", "name": "区副", "area_code": "440404",
         "phone": PHONES["district-2"], "min_level": "red",
         "shifts": [{"start": "00:00", "end": "23:59"}]},
        {"id": "city", "name": "市", "area_code": "440400", "phone": PHONES["city"]},
    ]})


def alert(source: str = "ZH-AWS-028") -> Alert:
    h = Hazard(hazard_id=f"rainstorm:{source}", hazard_type="rainstorm", feed="weather",
               source_id=source, source_name="平沙自动气象站", level=WarningLevel.RED,
               previous_level=WarningLevel.NONE, place=PLACE, lon=113.2, lat=22.1,
               observed_at=T0, key_figure=KeyFigure("3小时降雨", 112.0, "毫米"), reason="r",
               rule_id="rainstorm", rule_version="v")
    return Alert(alert_id=f"{h.hazard_id}#1", hazard_id=h.hazard_id, seq=1, transition="new",
                 level=WarningLevel.RED, previous_level=WarningLevel.NONE, hazard=h,
                 score=1.0, score_breakdown={}, issued_at=T0)


class Rig:
    """An SMSC, a provider wired to a follow-up, a Redis client and a hand-moved clock."""

    def __init__(self, smsc: Smsc, client: aioredis.Redis) -> None:
        self.smsc = smsc
        self.client = client
        self.clock = T0
        self.registry = CollectorRegistry()
        self.dead_letters: list[dict[str, Any]] = []
        self.follow = SmsFollowUp(client, roster=lambda: ROSTER, now=lambda: self.clock,
                                  metrics=SmsFollowUpMetrics(self.registry),
                                  dead_letter=self._dead_letter)
        url = (f"smpp://onemap:{PASSWORD}@127.0.0.1:{smsc.port}?source_addr=12110&timeout=1"
               "&reconnect_min=0.05&reconnect_max=0.2")
        self.provider = SmppProvider.from_url(url, on_event=self.follow.on_event)
        self.follow.attach(self.provider)

    async def _dead_letter(self, record: dict[str, Any]) -> None:
        self.dead_letters.append(record)

    async def send(self, a: Alert, *recipients: str) -> None:
        """What the SMS sink does: submit each message, then note what was delivered."""
        msgs = [SmsMessage(key=f"{a.alert_id}/{r}", alert_id=a.alert_id, recipient_id=r,
                           phone=PHONES[r], text=render(a)) for r in recipients]
        assert await self.provider.submit(msgs, self.clock) == [Outcome.DELIVERED] * len(msgs)
        await self.follow.note_sent(a, msgs)

    def to(self, who: str) -> list[str]:
        return [m.text for m in self.smsc.messages if m.destination == PHONES[who]]

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def run(redis_url: str, scenario: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")
        await client.flushdb()
        async with Smsc("onemap", PASSWORD) as smsc:
            rig = Rig(smsc, client)
            try:
                await rig.provider.check()
                await scenario(rig)
            finally:
                await rig.provider.close()
                await client.aclose()
    asyncio.run(main())


def test_unacknowledged_alert_escalates_and_a_1_by_sms_stops_it(redis_url: str) -> None:
    a = alert()

    async def scenario(rig: Rig) -> None:
        await rig.send(a, "village")
        await rig.smsc.wait_for(lambda: ("receipt", 0) in rig.smsc.deliver_responses)
        receipts = await read_receipts(rig.client, a.alert_id)
        assert receipts["village"]["state"] == "delivered"

        rig.clock = T0 + timedelta(minutes=10)
        [result] = await rig.follow.tick()
        assert (result.outcome, result.level) == ("escalated", "town")
        [text] = rig.to("town")
        assert text.startswith("【珠海应急】【升级】红色暴雨预警")
        assert "美平社区10分钟未确认" in text

        rig.clock += timedelta(minutes=2)
        assert await rig.smsc.send_mo(PHONES["town"], "1") == 0  # accepted by the handler
        loop = await read_loop(rig.client, a.hazard_id)
        assert [(s.step, s.actor, s.via) for s in loop.steps] == [("acknowledged", "town",
                                                                    "sms")]
        await rig.smsc.wait_for(lambda: len(rig.to("town")) == 2)
        assert rig.to("town")[1].startswith("【珠海应急】已确认：红色暴雨预警 金湾区平沙镇美平社区")

        rig.clock = T0 + timedelta(minutes=30)
        [stopped] = await rig.follow.tick()
        assert stopped.outcome == "acknowledged"
        assert rig.to("district") == [] and rig.to("city") == []
        assert await read_awaiting(rig.client, a.hazard_id) is None
        assert rig.metric("onemap_sms_escalations_total", outcome="escalated") == 1
        assert rig.metric("onemap_sms_escalations_total", outcome="acknowledged") == 1
        assert rig.metric("onemap_sms_replies_total", outcome="accepted") == 1
        assert rig.metric("onemap_sms_receipts_total", state="delivered") >= 2
        assert rig.metric("onemap_sms_awaiting_ack") == 0

    run(redis_url, scenario)


def test_an_undeliverable_message_is_dead_lettered_and_the_deputy_told_once(
        redis_url: str) -> None:
    a = alert()

    async def scenario(rig: Rig) -> None:
        rig.smsc.receipt_status, rig.smsc.receipt_error = "UNDELIV", "001"
        await rig.send(a, "district")
        await rig.smsc.wait_for(lambda: len(rig.dead_letters) == 1)
        assert await rig.follow.tick() == []  # nothing due; the deputy is told meanwhile
        await rig.smsc.wait_for(lambda: len(rig.to("district-2")) == 1)
        await rig.smsc.wait_for(lambda: len(rig.dead_letters) == 2)  # the deputy's too
        await rig.follow.tick()  # the deputy's own message: no deputy of the deputy
        receipts = await read_receipts(rig.client, a.alert_id)
        assert receipts["district"]["state"] == "failed"
        assert receipts["district"]["error"] == "001"
        first = rig.dead_letters[0]
        assert first["reason"] == "undeliverable:failed" and first["recipient_id"] == "district"
        assert PHONES["district"] not in str(first)  # masked
        assert rig.to("district-2") == [render(a)]
        entry = await read_awaiting(rig.client, a.hazard_id)
        assert entry is not None and "district-2" in entry.told
        assert rig.metric("onemap_sms_undeliverable_total", state="failed") == 2
        assert rig.metric("onemap_sms_deputy_messages_total") == 1

    run(redis_url, scenario)


def test_a_refused_escalation_goes_on_up_at_once(redis_url: str) -> None:
    a = alert()

    async def scenario(rig: Rig) -> None:
        await rig.send(a, "village")
        rig.clock = T0 + timedelta(minutes=10)
        rig.smsc.fail_next(ESME_RINVDSTADR)  # the town officer's number is bad, for good
        [town] = await rig.follow.tick()
        assert (town.outcome, town.level) == ("escalated", "town")
        [district] = await rig.follow.tick()  # nobody was reached: due again at once
        assert (district.outcome, district.level) == ("escalated", "district")
        assert rig.to("town") == [] and len(rig.to("district")) == 1

    run(redis_url, scenario)


def test_a_throttled_escalation_is_retried_later_and_sent_once(redis_url: str) -> None:
    a = alert()

    async def scenario(rig: Rig) -> None:
        await rig.send(a, "village")
        rig.clock = T0 + timedelta(minutes=10)
        rig.smsc.fail_next(ESME_RTHROTTLED)
        assert [r.outcome for r in await rig.follow.tick()] == ["retry"]
        assert await rig.follow.tick() == []  # not again before the retry delay
        rig.clock += timedelta(seconds=30)
        assert [r.outcome for r in await rig.follow.tick()] == ["escalated"]
        assert await rig.follow.tick() == []
        assert len(rig.to("town")) == 1
        refused = [s for s in rig.smsc.submits if s.status == ESME_RTHROTTLED]
        assert len(refused) == 1

    run(redis_url, scenario)
