"""The SMPP provider against the real loopback SMSC over TCP: no mocks.

Each test runs its own event loop with an SMSC on 127.0.0.1 and a free port, and short
timeouts so the unhappy paths (throttling, a hung SMSC, an outage) take well under a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from onemap.errors import ComponentError, ConfigError
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsEvent, provider_from_url
from onemap.sinks.sms.smpp import (
    ESME_RMSGQFUL,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    SmppConfig,
    SmppProvider,
    encode_parts,
    split_units,
)
from onemap.sinks.sms.smsc import ESME_RINVDSTADR, Smsc
from onemap.sinks.sms.templates import segments

PASSWORD = "Zq9x7Kp"
PHONE = "13800000001"
NOW = datetime(2024, 8, 23, 4, 0, tzinfo=UTC)
SHORT = "【珠海应急】红色暴雨预警 金湾区平沙镇美平社区 3小时降雨112毫米 请立即转移 回复1确认"
LONG = ("【珠海应急】红色暴雨预警 金湾区平沙镇美平社区平沙自动气象站 3小时降雨112毫米 "
        "请立即转移危险区域人员 回复1确认 ") * 3


def message(text: str, key: str = "rainstorm:ZH-AWS-028#1/duty-440404", phone: str = PHONE,
            ) -> SmsMessage:
    alert_id, _, recipient_id = key.partition("/")
    return SmsMessage(key=key, alert_id=alert_id, recipient_id=recipient_id, phone=phone,
                      text=text)


def provider(smsc: Smsc, events: list[SmsEvent] | None = None, **options: str) -> SmppProvider:
    query = {"source_addr": "12110", "timeout": "0.5", "reconnect_min": "0.05",
             "reconnect_max": "0.2", **options}
    url = f"smpp://onemap:{PASSWORD}@127.0.0.1:{smsc.port}?" + "&".join(
        f"{k}={v}" for k, v in query.items())
    return SmppProvider.from_url(url, on_event=None if events is None else events.append)


def run(scenario: Callable[[Smsc], Awaitable[None]], **smsc_options: float) -> None:
    async def main() -> None:
        async with Smsc("onemap", PASSWORD, **smsc_options) as smsc:
            await scenario(smsc)
    asyncio.run(main())


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- session ----------------------------------------------------------------------------------


def test_binds_as_transceiver_and_keeps_the_link_alive_with_enquire_link() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc, enquire_link="0.1")
        await p.check()
        assert smsc.binds == 1 and smsc.bound_sessions == 1
        await wait_until(lambda: p.enquire_links_sent >= 2)
        assert smsc.enquire_links >= 2
        await p.close()
        await smsc.wait_for(lambda: smsc.bound_sessions == 0)
    run(scenario)


def test_a_rejected_bind_names_host_port_and_reason_but_not_the_password() -> None:
    async def scenario(smsc: Smsc) -> None:
        smsc.accounts["onemap"] = "other"
        p = provider(smsc)
        with pytest.raises(ComponentError) as caught:
            await p.check()
        text = str(caught.value)
        assert f"127.0.0.1:{smsc.port}" in text and "ESME_RINVPASWD" in text
        assert PASSWORD not in text
        await p.close()
    run(scenario)


def test_an_unreachable_smsc_fails_the_start_up_check_naming_host_and_port() -> None:
    async def scenario(smsc: Smsc) -> None:
        await smsc.stop()
        p = provider(smsc)
        with pytest.raises(ComponentError, match=f"127.0.0.1:{smsc.port}.*connection refused"):
            await p.check()
        await p.close()
    run(scenario)


# -- text, encoding, concatenation ------------------------------------------------------------


def test_a_short_chinese_message_arrives_as_one_ucs2_segment_with_the_exact_text() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc)
        assert await p.submit([message(SHORT)], NOW) == [Outcome.DELIVERED]
        [stored] = smsc.messages
        assert stored.text == SHORT and stored.parts == [SHORT]
        assert stored.data_coding == 8 and stored.esm_class == 0
        assert stored.registered_delivery == 1
        assert stored.destination == PHONE and stored.source_addr == "12110"
        assert len(smsc.submits) == 1
        await p.close()
    run(scenario)


def test_a_150_character_message_arrives_as_3_concatenated_parts_in_order() -> None:
    text = LONG[:150]
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc)
        assert await p.submit([message(text)], NOW) == [Outcome.DELIVERED]
        [stored] = smsc.messages
        assert stored.text == text
        assert stored.parts == segments(text) and [len(s) for s in stored.parts] == [67, 67, 16]
        assert stored.esm_class & 0x40 and stored.data_coding == 8
        assert [(s.part, s.parts) for s in smsc.submits] == [(1, 3), (2, 3), (3, 3)]
        assert len({s.reference for s in smsc.submits}) == 1
        assert p.message_ids(message(text).key) == tuple(stored.message_ids)
        await p.close()
    run(scenario)


def test_two_long_messages_at_once_get_different_references_and_both_reassemble() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc)
        a, b = message(LONG, key="a#1/x"), message(LONG[::-1], key="b#1/x")
        assert await p.submit([a, b], NOW) == [Outcome.DELIVERED] * 2
        assert sorted(m.text for m in smsc.messages) == sorted([a.text, b.text])
        assert len({m.reference for m in smsc.messages}) == 2
        await p.close()
    run(scenario)


def test_parts_split_like_the_templates_and_carry_the_concatenation_udh() -> None:
    for text in ("啊" * 70, "啊" * 71, LONG[:150], LONG):
        assert split_units(text) == segments(text)
    parts = encode_parts("啊" * 71, 0x2A)
    assert [p[:6].hex() for p in parts] == ["0500032a0201", "0500032a0202"]
    assert parts[0][6:] == ("啊" * 67).encode("utf-16-be") and len(parts[0]) == 140
    # A character outside the BMP takes two UTF-16 units and is never cut in half.
    rare = "𠮷" * 40
    assert all(len(p.encode("utf-16-be")) <= 134 for p in split_units(rare))
    assert "".join(split_units(rare)) == rare


# -- receipts and replies ---------------------------------------------------------------------


def test_delivery_receipts_come_back_tied_to_the_message_key() -> None:
    async def scenario(smsc: Smsc) -> None:
        events: list[SmsEvent] = []
        p = provider(smsc, events)
        m = message(LONG[:150])
        assert await p.submit([m], NOW) == [Outcome.DELIVERED]
        await wait_until(lambda: len(events) == 3)
        assert {e.kind for e in events} == {"receipt"}
        assert {e.key for e in events} == {m.key}
        assert sorted(e.message_id for e in events) == sorted(smsc.messages[0].message_ids)
        assert all(e.delivered and e.phone == PHONE and e.error == "000" for e in events)
        await p.close()
    run(scenario)


def test_a_receipt_says_how_many_parts_its_message_has() -> None:
    async def scenario(smsc: Smsc) -> None:
        events: list[SmsEvent] = []
        p = provider(smsc, events)
        m = message(LONG[:150])
        assert await p.submit([m], NOW) == [Outcome.DELIVERED]  # all parts accepted here
        await wait_until(lambda: len(events) == 3)  # receipts come 0.5 s later
        assert [e.parts for e in events] == [3, 3, 3]
        await p.close()
    run(scenario, receipt_delay=0.5)


def test_an_undelivered_receipt_carries_its_status() -> None:
    async def scenario(smsc: Smsc) -> None:
        smsc.receipt_status, smsc.receipt_error = "UNDELIV", "001"
        events: list[SmsEvent] = []
        p = provider(smsc, events)
        await p.submit([message(SHORT)], NOW)
        await wait_until(lambda: len(events) == 1)
        assert events[0].status == "UNDELIV" and not events[0].delivered
        assert events[0].error == "001" and events[0].key == message(SHORT).key
        await p.close()
    run(scenario)


def test_a_mobile_originated_reply_reaches_the_callback_with_the_phone() -> None:
    async def scenario(smsc: Smsc) -> None:
        events: list[SmsEvent] = []
        p = provider(smsc, events)
        await p.check()
        assert await smsc.send_mo(PHONE, "1", to="12110") == 0
        assert await smsc.send_mo("13900000002", "收到 1") == 0
        assert [(e.kind, e.phone, e.text) for e in events] == [
            ("reply", PHONE, "1"), ("reply", "13900000002", "收到 1")]
        assert events[0].at.tzinfo is not None
        await p.close()
    run(scenario)


def test_a_failing_event_handler_makes_the_smsc_redeliver_and_an_async_one_is_awaited() -> None:
    async def scenario(smsc: Smsc) -> None:
        seen: list[SmsEvent] = []
        async def handler(event: SmsEvent) -> None:
            if not seen:
                seen.append(event)
                raise RuntimeError("Redis is down")
            await asyncio.sleep(0)
            seen.append(event)
        p = SmppProvider(provider(smsc).config, on_event=handler)
        await p.check()
        assert await smsc.send_mo(PHONE, "1") == ESME_RX_T_APPN  # not lost: redelivered
        assert await smsc.send_mo(PHONE, "1") == 0
        assert [e.text for e in seen] == ["1", "1"]
        await p.close()
    run(scenario)


# -- outcomes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [ESME_RTHROTTLED, ESME_RMSGQFUL])
def test_throttling_is_retry_then_the_retry_succeeds(status: int) -> None:
    async def scenario(smsc: Smsc) -> None:
        smsc.fail_next(status)
        p = provider(smsc)
        m = message(SHORT)
        assert await p.submit([m], NOW) == [Outcome.RETRY]
        assert smsc.messages == []
        assert await p.submit([m], NOW) == [Outcome.DELIVERED]
        assert [s.text for s in smsc.messages] == [SHORT]
        await p.close()
    run(scenario)


def test_a_throttled_part_is_resumed_so_no_part_is_sent_twice() -> None:
    async def scenario(smsc: Smsc) -> None:
        smsc.fail_next(ESME_RTHROTTLED, after=1)  # part 1 accepted, part 2 throttled
        p = provider(smsc)
        m = message(LONG[:150])
        assert await p.submit([m], NOW) == [Outcome.RETRY]
        assert await p.submit([m], NOW) == [Outcome.DELIVERED]
        accepted = [(s.reference, s.part) for s in smsc.submits if s.status == 0]
        assert sorted(accepted) == sorted(set(accepted)) and len(accepted) == 3
        [stored] = smsc.messages
        assert stored.text == m.text and stored.parts == segments(m.text)
        await p.close()
    run(scenario)


def test_permanent_errors_are_failed() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc)
        assert await p.submit([message(SHORT, phone="12ab")], NOW) == [Outcome.FAILED]
        smsc.fail_next(ESME_RINVDSTADR)
        assert await p.submit([message(SHORT, key="k2")], NOW) == [Outcome.FAILED]
        assert smsc.messages == []
        await p.close()
    run(scenario)


def test_an_smsc_that_stops_answering_is_retry_and_the_link_comes_back() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc, timeout="0.3")
        await p.check()
        smsc.answering = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await p.submit([message(SHORT)], NOW) == [Outcome.RETRY]
        assert loop.time() - started < 1.5
        smsc.answering = True
        assert await p.submit([message(SHORT)], NOW) == [Outcome.DELIVERED]
        assert p.binds == 2  # the hung link was dropped and a new one bound
        assert [m.text for m in smsc.messages] == [SHORT]
        await p.close()
    run(scenario)


def test_a_hung_link_is_noticed_by_enquire_link_and_replaced() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc, enquire_link="0.1", timeout="0.2")
        await p.check()
        smsc.answering = False
        await asyncio.sleep(0.5)
        smsc.answering = True
        await wait_until(lambda: p.binds >= 2)
        assert await p.submit([message(SHORT)], NOW) == [Outcome.DELIVERED]
        await p.close()
    run(scenario)


def test_an_smsc_outage_is_retry_and_the_provider_reconnects_when_it_is_back() -> None:
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc)
        await p.check()
        await smsc.stop()
        assert await p.submit([message(SHORT)], NOW) == [Outcome.RETRY]
        await smsc.start()  # same port
        await wait_until(lambda: p.binds == 2)
        assert await p.submit([message(SHORT)], NOW) == [Outcome.DELIVERED]
        assert [m.text for m in smsc.messages] == [SHORT]
        await p.close()
    run(scenario)


# -- secrets and personal data ----------------------------------------------------------------


def test_the_password_never_appears_in_logs_repr_or_errors_and_phones_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[SmsEvent] = []
    async def scenario(smsc: Smsc) -> None:
        p = provider(smsc, events)
        assert PASSWORD not in repr(p) and PASSWORD not in repr(p.config)
        await p.submit([message(LONG)], NOW)
        smsc.fail_next(ESME_RTHROTTLED)
        await p.submit([message(SHORT, key="k2")], NOW)
        await smsc.send_mo(PHONE, "1")
        await wait_until(lambda: len(events) >= 2)
        smsc.accounts["onemap"] = "other"
        smsc.drop_connections()
        await asyncio.sleep(0.2)  # a few refused re-binds get logged
        await p.close()
        bad = provider(smsc)
        with pytest.raises(ComponentError) as caught:
            await bad.check()
        assert PASSWORD not in str(caught.value)
        await bad.close()
    run(scenario)
    assert "ESME_RINVPASWD" in caplog.text  # the refused binds were logged...
    assert PASSWORD not in caplog.text  # ...without the password
    assert PHONE not in caplog.text and "138****0001" in caplog.text
    assert PHONE not in repr(events)


def test_url_options_are_strict_and_errors_never_echo_the_password() -> None:
    with pytest.raises(ConfigError, match="unknown SMPP option 'sorce_addr'"):
        SmppConfig.from_url(f"smpp://onemap:{PASSWORD}@127.0.0.1:2775?sorce_addr=1")
    with pytest.raises(ConfigError) as caught:
        SmppConfig.from_url("smpp://onemap:toolongpassword@127.0.0.1:2775")
    assert "toolongpassword" not in str(caught.value)
    config = SmppConfig.from_url("smpp://onemap:x@smsc.example:2776?source_addr=12110"
                                 "&dest_ton=1&enquire_link=15", secret=PASSWORD)
    assert config.password == PASSWORD and config.port == 2776 and config.dest_ton == 1
    assert config.enquire_link_s == 15.0 and config.source_addr == "12110"
    assert isinstance(provider_from_url("smpp://onemap@h:1?source_addr=1"), SmppProvider)
