"""Reminders' idempotency claims follow the sink's policy, on a real redis-server (some through
a cuttable link, as in test_sms_redis_outage.py).

A reminder is claimed per (reminded transition, reminder number, recipient) under
``onemap:sms:sent:remind/<alert_id>/<n>/<recipient_id>``. A claim still ``pending`` was taken
by a submit in flight elsewhere, or by one that died with its worker, or its release after a
refused submit never reached Redis: it is not a sent reminder. It is looked at again at the
next tick, and taken over and sent once older than the pending-stale age. An outcome Redis
could not take is kept by the worker and written before anything else is sent. A claim that
says ``delivered`` is never sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from onemap.levels import WarningLevel
from onemap.records import Alert
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.sinks.base import Outcome
from onemap.sinks.dashboard.state import RedisStateSink
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsProvider
from onemap.sinks.sms.reminders import REMIND_DUE_KEY, Unrecorded, note_reminder, remind_due
from onemap.sinks.sms.storm_store import PENDING_STALE_S, SENT_KEY_PREFIX, SENT_TTL_S
from tests.sms.storm_kit import T0, RecordingProvider, alert
from tests.sms.test_sms_redis_outage import CutDuringSubmit, RedisLink, through_link

pytestmark = pytest.mark.integration
REPEAT = load_rulebook(default_rules_dir()).lifecycle.repeat_interval
RED_S = REPEAT(WarningLevel.RED)
PEOPLE = [("city", "13800000001"), ("district", "13800000002")]
RED = alert("A", WarningLevel.RED)
DUE = T0 + timedelta(hours=2)
CITY_CLAIM = SENT_KEY_PREFIX + "remind/wind:A#1/1/city"
DISTRICT_CLAIM = SENT_KEY_PREFIX + "remind/wind:A#1/1/district"


@pytest.fixture()
def db(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/7"  # apart from the other tests' databases
    redis.Redis.from_url(url).flushdb()
    yield url


def sent_to(a: Alert) -> list[SmsMessage]:
    return [SmsMessage(key=f"{a.alert_id}/{rid}", alert_id=a.alert_id, recipient_id=rid,
                       phone=phone, text="t") for rid, phone in PEOPLE]


def reminding(client: aioredis.Redis, provider: SmsProvider,
              ) -> Callable[[datetime], Awaitable[list[tuple[str, str]]]]:
    """``remind_due`` as one worker's ticks call it: the outcomes Redis did not take are
    kept from one call to the next (``SmsFollowUp.unrecorded_reminders``)."""
    kept: Unrecorded = {}

    def remind(now: datetime) -> Awaitable[list[tuple[str, str]]]:
        return remind_due(client, provider, REPEAT, now, unrecorded=kept)
    return remind


async def schedule(client: aioredis.Redis) -> None:
    """RED went out to both at T0 and is still open: reminder #1 is due at DUE."""
    await RedisStateSink(client).send([RED])
    assert await note_reminder(client, RED, sent_to(RED), RED_S, T0) == "scheduled"


def taken_ago(r: redis.Redis, claim: str, value: str, seconds: float) -> None:
    """Leave ``claim`` as if it had been written ``seconds`` ago (its age is read from its
    expiry, like the sink's)."""
    r.set(claim, value, ex=SENT_TTL_S - int(seconds))


def run(url: str, body: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(url)
        try:
            await body(client)
        finally:
            await client.aclose()
    asyncio.run(main())


def run_through_link(url: str,
                     body: Callable[[RedisLink, aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        async with through_link(url) as (link, client):
            await body(link, client)
    asyncio.run(main())


def recipients(provider: RecordingProvider) -> list[str]:
    return [s.message.recipient_id for s in provider.submitted]


def test_a_young_pending_claim_is_in_flight_not_sent(db: str) -> None:
    """Another worker is submitting city's reminder: this tick sends district's and waits
    (the schedule is not advanced); once the other worker has written ``delivered``, the
    next tick completes the reminder without sending city's again."""
    r = redis.Redis.from_url(db)
    provider = RecordingProvider()

    async def body(client: aioredis.Redis) -> None:
        remind = reminding(client, provider)
        await schedule(client)
        taken_ago(r, CITY_CLAIM, "pending", 5)
        assert await remind(DUE) == [("wind:A", "retry")]
        assert await client.zscore(REMIND_DUE_KEY, "wind:A") == DUE.timestamp()
        r.set(CITY_CLAIM, "delivered", xx=True, ex=SENT_TTL_S)  # the other worker is done
        later = DUE + timedelta(seconds=15)
        [(_, what)] = await remind(later)
        assert what.startswith("sent #1")
        assert await client.zscore(REMIND_DUE_KEY, "wind:A") == (
            later + timedelta(seconds=RED_S)).timestamp()

    run(db, body)
    assert recipients(provider) == ["district"]


def test_a_stale_pending_claim_is_taken_as_dead_and_the_reminder_sent_once(db: str) -> None:
    """A worker died while submitting city's reminder: its claim stays ``pending``. Until the
    pending-stale age it is in flight; then the reminder is sent (better twice than never),
    and never again."""
    r = redis.Redis.from_url(db)
    provider = RecordingProvider()

    async def body(client: aioredis.Redis) -> None:
        remind = reminding(client, provider)
        await schedule(client)
        taken_ago(r, CITY_CLAIM, "pending", PENDING_STALE_S - 30)
        assert await remind(DUE) == [("wind:A", "retry")]
        assert recipients(provider) == ["district"]
        taken_ago(r, CITY_CLAIM, "pending", PENDING_STALE_S + 30)
        [(_, what)] = await remind(DUE + timedelta(minutes=2))
        assert what.startswith("sent #1")
        assert recipients(provider) == ["district", "city"]
        assert r.get(CITY_CLAIM) == b"delivered"
        assert await remind(DUE + timedelta(minutes=3)) == []

    run(db, body)
    assert recipients(provider) == ["district", "city"]


def test_a_delivered_or_failed_claim_is_never_sent_again_however_old(db: str) -> None:
    r = redis.Redis.from_url(db)
    provider = RecordingProvider()

    async def body(client: aioredis.Redis) -> None:
        remind = reminding(client, provider)
        await schedule(client)
        taken_ago(r, CITY_CLAIM, "delivered", 10 * PENDING_STALE_S)
        taken_ago(r, DISTRICT_CLAIM, "failed", 10 * PENDING_STALE_S)
        [(_, what)] = await remind(DUE)
        assert what.startswith("sent #1")

    run(db, body)
    assert provider.submitted == []


def test_a_refused_reminder_whose_claim_was_not_released_is_sent_once_redis_is_back(
        db: str) -> None:
    """The gateway refused city's reminder (retry) and Redis went away before its claim was
    given back: the first tick once Redis is back sends it, at once, not after the
    pending-stale age (and before that, never as if it had been sent)."""
    r = redis.Redis.from_url(db)

    async def body(link: RedisLink, client: aioredis.Redis) -> None:
        provider = CutDuringSubmit(link)
        remind = reminding(client, provider)
        await schedule(client)
        provider.cut_at_next = True
        provider.outcomes = [Outcome.RETRY]
        with pytest.raises(RedisError):  # SmsFollowUp.tick logs it; the next tick retries
            await remind(DUE)
        assert r.get(CITY_CLAIM) == b"pending"
        with pytest.raises(RedisError):  # still away
            await remind(DUE + timedelta(seconds=15))
        await link.restore()
        [(_, what)] = await remind(DUE + timedelta(seconds=30))
        assert what.startswith("sent #1")
        assert recipients(provider) == ["city", "district"]
        assert r.get(CITY_CLAIM) == b"delivered"

    run_through_link(db, body)


def test_a_delivered_reminder_whose_outcome_was_not_written_is_not_sent_again(
        db: str) -> None:
    """City's reminder reached the gateway as Redis went away: the worker writes
    ``delivered`` to its claim once Redis is back, sends district's, and city has it once."""
    r = redis.Redis.from_url(db)

    async def body(link: RedisLink, client: aioredis.Redis) -> None:
        provider = CutDuringSubmit(link)
        remind = reminding(client, provider)
        await schedule(client)
        provider.cut_at_next = True
        with pytest.raises(RedisError):
            await remind(DUE)
        await link.restore()
        [(_, what)] = await remind(DUE + timedelta(seconds=15))
        assert what.startswith("sent #1")
        assert recipients(provider) == ["city", "district"]
        assert r.get(CITY_CLAIM) == b"delivered"
        assert r.get(DISTRICT_CLAIM) == b"delivered"

    run_through_link(db, body)


def test_news_between_two_tries_does_not_send_the_reminder_again(db: str) -> None:
    """District's reminder is refused (retry), city's delivered; news at the same level then
    reaches the wall. The retry quotes the latest figures but keeps the reminded transition's
    claims: district gets it, city not a second time."""
    news = alert("A", WarningLevel.RED, WarningLevel.RED, "updated", seq=2,
                 at=T0 + timedelta(hours=1))
    provider = RecordingProvider()

    async def body(client: aioredis.Redis) -> None:
        remind = reminding(client, provider)
        await schedule(client)
        provider.outcomes = [Outcome.DELIVERED, Outcome.RETRY]
        assert await remind(DUE) == [("wind:A", "retry")]
        await RedisStateSink(client).send([news])
        [(_, what)] = await remind(DUE + timedelta(seconds=15))
        assert what.startswith("sent #1")

    run(db, body)
    assert recipients(provider) == ["city", "district"]
    assert [s.message.alert_id for s in provider.submitted] == ["wind:A#1", "wind:A#2"]


def test_two_workers_finding_a_stale_claim_at_once_send_the_reminder_once(db: str) -> None:
    """Both workers see city's claim stale; only one takes it over (WATCH on the claim)."""
    r = redis.Redis.from_url(db)
    provider = RecordingProvider()

    async def body(client: aioredis.Redis) -> None:
        remind = reminding(client, provider)
        await schedule(client)
        taken_ago(r, CITY_CLAIM, "pending", PENDING_STALE_S + 30)
        other = aioredis.Redis.from_url(db)
        try:
            await asyncio.gather(remind(DUE),
                                 remind_due(other, provider, REPEAT, DUE, unrecorded={}))
        finally:
            await other.aclose()

    run(db, body)
    assert sorted(recipients(provider)) == ["city", "district"]
