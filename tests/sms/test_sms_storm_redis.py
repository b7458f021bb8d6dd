"""Storm protection in the sink on a real Redis: held messages survive restarts and are
shared by two workers, each summary goes out once, nothing held is lost."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from onemap.levels import WarningLevel
from onemap.sinks.base import Outcome
from onemap.sinks.sms.sink import SmsSink
from onemap.sinks.sms.storm import load_limits
from onemap.sinks.sms.storm_store import DUE_KEY, SENT_KEY_PREFIX, state_key
from tests.sms.storm_kit import HONGQI, QIANSHAN, ROSTER, Clock, RecordingProvider, alert

pytestmark = pytest.mark.integration
R, OR, Y, N = WarningLevel.RED, WarningLevel.ORANGE, WarningLevel.YELLOW, WarningLevel.NONE
LIMITS = load_limits()
TOWNS = [dataclasses.replace(HONGQI, town_code=f"44040410{i}", town_name=f"镇{i}")
         for i in range(8)]


@pytest.fixture()
def clean(redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    redis_client.flushdb()
    yield redis_url


def run(redis_url: str, body: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await body(client)
        finally:
            await client.aclose()
    asyncio.run(main())


def sink(client: aioredis.Redis, provider: RecordingProvider, clock: Clock) -> SmsSink:
    return SmsSink(client, provider, roster=lambda: ROSTER, now=clock, limits=lambda: LIMITS)


def test_over_the_limit_messages_are_held_then_sent_as_one_summary(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        out = await s.send([alert(f"S{i}", OR, place=TOWNS[i]) for i in range(6)])
        assert out == [Outcome.DELIVERED] * 6, "held messages are accepted"
        assert len(provider.submitted) == 3
        await s.tick()
        assert len(provider.submitted) == 3, "the summary waits for more to join"
        clock.advance(2)
        await s.send([alert("R1", R, place=TOWNS[0])])
        assert provider.submitted[-1].message.key == "wind:R1#1/city", "red at once"
        clock.advance(LIMITS.digest.wait_minutes)
        await s.tick()
        await s.tick()
        digest = provider.submitted[-1]
        assert len(provider.submitted) == 5, "one summary, sent once"
        assert digest.message.key == "digest/actual/city/1"
        assert digest.message.text == ("【珠海应急】近7分钟金湾区另有3条台风大风预警：橙3，"
                                       "涉及镇3、镇4、镇5，详见应急一张图")
        for i in (3, 4, 5):
            claim = await client.get(f"{SENT_KEY_PREFIX}wind:S{i}#1/city")
            assert claim == b"delivered in digest/actual/city/1"
        assert (await s.store.state("actual", "city")).held == ()
        assert await client.zcard(DUE_KEY) == 0
        assert s.counts["hold:over_limit"] == 1 and s.counts["fold:over_limit"] == 2
        assert s.counts["flush:digest"] == 1

    run(clean, body)


def test_replays_never_send_or_hold_twice(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        batch = [alert(f"S{i}", OR, place=TOWNS[i]) for i in range(5)]
        await s.send(batch)
        assert await s.send(batch) == [Outcome.DUPLICATE] * 5
        assert len((await s.store.state("actual", "city")).held) == 2
        assert len(provider.submitted) == 3

    run(clean, body)


def test_a_restarted_worker_flushes_what_the_old_one_held(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        await sink(client, provider, clock).send(
            [alert(f"S{i}", OR, place=TOWNS[i]) for i in range(5)])
        clock.advance(10)
        fresh = sink(aioredis.Redis.from_url(clean), provider, clock)
        await fresh.tick()
        await fresh.client.aclose()
        assert provider.submitted[-1].message.key == "digest/actual/city/1"
        assert "另有2条台风大风预警：橙2" in provider.submitted[-1].message.text

    run(clean, body)


def test_two_workers_share_one_budget_and_send_each_summary_once(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        other = aioredis.Redis.from_url(clean)
        a, b = sink(client, provider, clock), sink(other, provider, clock)
        # eight oranges in eight towns, half through each worker, at the same moment
        await asyncio.gather(*[
            (a if i % 2 else b).send([alert(f"S{i}", OR, place=TOWNS[i])]) for i in range(8)])
        assert len(provider.submitted) == 3, "3 per 30 min, whichever worker sends"
        clock.advance(10)
        await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
        assert len(provider.submitted) == 4, "the summary went out once"
        assert "另有5条" in provider.submitted[-1].message.text
        await other.aclose()

    run(clean, body)


def test_a_summary_the_gateway_refuses_is_retried_with_the_same_key_and_text(
        clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        await s.send([alert(f"S{i}", OR, place=TOWNS[i]) for i in range(5)])
        clock.advance(10)
        provider.outcomes = [Outcome.RETRY]
        await s.tick()
        assert len(provider.submitted) == 3 and s.counts["flush:retry"] == 1
        await s.send([alert("S6", OR, place=TOWNS[6])])  # arrives meanwhile: next batch
        clock.advance(1)
        await s.tick()
        sent = provider.submitted[-1]
        assert sent.message.key == "digest/actual/city/1" and "另有2条" in sent.message.text
        state = await s.store.state("actual", "city")
        assert [h.alert_id for h in state.held] == ["wind:S6#1"]

    run(clean, body)


def test_a_failed_submit_gives_its_budget_slot_back(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        provider.outcomes = [Outcome.RETRY]
        assert await s.send([alert("S0", OR, place=TOWNS[0])]) == [Outcome.RETRY]
        assert await client.get(f"{SENT_KEY_PREFIX}wind:S0#1/city") is None
        assert await s.send([alert("S0", OR, place=TOWNS[0])]) == [Outcome.DELIVERED]
        out = await s.send([alert(f"S{i}", OR, place=TOWNS[i]) for i in (1, 2)])
        assert out == [Outcome.DELIVERED] * 2 and len(provider.submitted) == 3

    run(clean, body)


def test_drills_and_actual_alerts_are_limited_and_summarised_apart(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        await s.send([alert(f"S{i}", OR, place=TOWNS[i]) for i in range(4)])
        await s.send([alert(f"D{i}", OR, place=TOWNS[i], exercise=True) for i in range(5)])
        assert len(provider.submitted) == 6, "a drill does not use the actual budget"
        clock.advance(10)
        await s.tick()
        texts = provider.texts()[6:]
        assert len(texts) == 2, "one flush per stream"
        drill = [t for t in texts if t.startswith("【演练】")]
        actual = [t for t in texts if not t.startswith("【演练】")]
        assert len(drill) == 1 and "另有2条" in drill[0]
        assert len(actual) == 1 and actual[0] == provider.texts()[0].replace(
            "S0站", "S3站").replace("镇0", "镇3"), "a lone held message goes out as itself"
        assert await client.exists(state_key("exercise", "city"), state_key("actual", "city"))

    run(clean, body)


def test_an_alert_held_then_resolved_is_folded_as_such(clean: str) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        await s.send([alert("A", Y), alert("B", Y), alert("C", Y, place=QIANSHAN)])
        clock.advance(2)
        await s.send([alert("B", N, Y, "resolved", seq=2)])
        clock.advance(LIMITS.digest.wait_minutes)
        await s.tick()
        # A and C used the blue/yellow budget; B was held (same group as A), and its
        # resolution follows it into the summary
        assert provider.texts()[-1] == ("【珠海应急】近7分钟金湾区平沙镇另有2条台风大风预警："
                                        "黄1 解除1（其中1条已解除），详见应急一张图")

    run(clean, body)


def test_inhibited_alerts_are_counted_and_logged_with_their_reason(
        clean: str, caplog: pytest.LogCaptureFixture) -> None:
    provider, clock = RecordingProvider(), Clock()

    async def body(client: aioredis.Redis) -> None:
        s = sink(client, provider, clock)
        inhibited = dataclasses.replace(alert("A", OR), notify="inhibited",
                                        notify_reason="cap_warning:TY#3 红色台风预警")
        with caplog.at_level(logging.INFO, logger="onemap.sinks.sms.sink"):
            assert await s.send([inhibited]) == [Outcome.DELIVERED]
        assert provider.submitted == [] and s.counts["not_sent:inhibited"] == 1
        assert "inhibited (cap_warning:TY#3 红色台风预警)" in caplog.text

    run(clean, body)
