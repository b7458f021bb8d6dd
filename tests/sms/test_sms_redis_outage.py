"""Redis going away while an SMS is at the gateway, on a real Redis: the claim taken before
the submit must not stay ``pending`` once Redis is back.

The submit's outcome is known to the worker but could not be written to the claim. Left
``pending``, the claim made every retry of the alert wait as if another worker were
submitting it (``ClaimInFlight``), holding up the SMS sink's whole stream, and after
``pending_stale_s`` sent the message a second time; an alert not retried kept its claim
``pending`` for good (what the Redis-down fault test saw under load).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from onemap.levels import WarningLevel
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.sink import SmsSink
from onemap.sinks.sms.storm import load_limits
from onemap.sinks.sms.storm_store import SENT_KEY_PREFIX
from tests.proxy_kit import forward
from tests.sms.storm_kit import HONGQI, ROSTER, Clock, RecordingProvider, alert

pytestmark = pytest.mark.integration
R, OR = WarningLevel.RED, WarningLevel.ORANGE
LIMITS = load_limits()
RED_KEY = "wind:R1#1/city"


class RedisLink:
    """A TCP forwarder to Redis in the test's event loop: ``cut()`` drops every connection
    and refuses new ones (Redis gone), ``restore()`` accepts again (Redis back, with its
    data, as a Redis with an append-only file comes back)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await forward(reader, writer, self.target, self._writers)

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)


class CutDuringSubmit(RecordingProvider):
    """Records each submit; while ``cut_at_next`` is set, cuts Redis off during the submit
    (the gateway answers, Redis is gone by the time the outcome is to be written)."""

    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link
        self.cut_at_next = False

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        if self.cut_at_next:
            self.cut_at_next = False
            await self.link.cut()
        return await super().submit(messages, now)


@pytest.fixture()
def clean(redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    redis_client.flushdb()
    yield redis_url


@contextlib.asynccontextmanager
async def through_link(redis_url: str) -> AsyncIterator[tuple[RedisLink, aioredis.Redis]]:
    """A link to the test Redis and a client that talks through it."""
    url = urlsplit(redis_url)
    link = RedisLink(url.hostname or "127.0.0.1", url.port or 6379)
    await link.restore()
    # no retries of its own: Redis being away shows at once (the worker's client retries
    # for a few seconds first, then fails the same way)
    client = aioredis.Redis(host="127.0.0.1", port=link.port, db=int(url.path[1:] or 0),
                            socket_connect_timeout=2, socket_timeout=2,
                            retry=Retry(NoBackoff(), 0))
    try:
        yield link, client
    finally:
        await client.aclose()
        await link.cut()


def run(redis_url: str,
        body: Callable[[RedisLink, aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        async with through_link(redis_url) as (link, client):
            await body(link, client)
    asyncio.run(main())


def sink(client: aioredis.Redis, provider: RecordingProvider, clock: Clock) -> SmsSink:
    return SmsSink(client, provider, roster=lambda: ROSTER, now=clock, limits=lambda: LIMITS)


def test_a_delivered_message_whose_claim_was_not_written_is_a_duplicate_when_retried(
        clean: str, redis_client: redis.Redis) -> None:
    """The alert is retried once Redis is back (in the worker: another part of it failed,
    e.g. the escalation's note): the message went out, so it is a duplicate, its claim
    says delivered, and the gateway has it once."""
    clock = Clock()

    async def body(link: RedisLink, client: aioredis.Redis) -> None:
        provider = CutDuringSubmit(link)
        s = sink(client, provider, clock)
        provider.cut_at_next = True
        await s.send([alert("R1", R)])
        assert len(provider.submitted) == 1
        await link.restore()
        clock.advance(1)
        assert await s.send([alert("R1", R)]) == [Outcome.DUPLICATE]
        assert len(provider.submitted) == 1, "sent once"
        assert redis_client.get(SENT_KEY_PREFIX + RED_KEY) == b"delivered"

    run(clean, body)


def test_a_claim_not_written_is_written_by_the_next_tick(
        clean: str, redis_client: redis.Redis) -> None:
    """The alert is not retried (it counted as delivered): the sink's periodic tick writes
    the claim once Redis is back."""
    clock = Clock()

    async def body(link: RedisLink, client: aioredis.Redis) -> None:
        provider = CutDuringSubmit(link)
        s = sink(client, provider, clock)
        provider.cut_at_next = True
        assert await s.send([alert("R1", R)]) == [Outcome.DELIVERED]
        await s.tick()  # Redis still away: nothing to do but wait
        await link.restore()
        await s.tick()
        assert redis_client.get(SENT_KEY_PREFIX + RED_KEY) == b"delivered"
        assert len(provider.submitted) == 1

    run(clean, body)


def test_a_refused_submit_whose_claim_was_not_given_back_is_sent_at_the_retry(
        clean: str, redis_client: redis.Redis) -> None:
    """The gateway refused (retry) and the claim could not be given back: the retry once
    Redis is back sends it, at once, not ``pending_stale_s`` later."""
    clock = Clock()

    async def body(link: RedisLink, client: aioredis.Redis) -> None:
        provider = CutDuringSubmit(link)
        s = sink(client, provider, clock)
        provider.cut_at_next = True
        provider.outcomes = [Outcome.RETRY]
        assert await s.send([alert("R1", R)]) == [Outcome.RETRY]
        await link.restore()
        assert await s.send([alert("R1", R)]) == [Outcome.DELIVERED]
        assert [m.message.key for m in provider.submitted] == [RED_KEY]
        assert redis_client.get(SENT_KEY_PREFIX + RED_KEY) == b"delivered"

    run(clean, body)


def test_a_summary_whose_claim_was_not_written_is_finished_not_sent_again(
        clean: str, redis_client: redis.Redis) -> None:
    """A summary (flush) delivered while Redis went away: the next tick once Redis is back
    finishes it (its claim and its held messages' claims say delivered) without sending
    it again."""
    clock = Clock()
    towns = [dataclasses.replace(HONGQI, town_code=f"44040410{i}", town_name=f"镇{i}")
             for i in range(5)]

    async def body(link: RedisLink, client: aioredis.Redis) -> None:
        provider = CutDuringSubmit(link)
        s = sink(client, provider, clock)
        await s.send([alert(f"S{i}", OR, place=towns[i]) for i in range(5)])
        assert len(provider.submitted) == 3, "two held for a summary"
        clock.advance(LIMITS.digest.wait_minutes + 1)
        provider.cut_at_next = True
        await s.tick()
        assert provider.submitted[-1].message.key == "digest/actual/city/1"
        await link.restore()
        clock.advance(1)
        await s.tick()
        assert len(provider.submitted) == 4, "the summary went out once"
        assert redis_client.get(SENT_KEY_PREFIX + "digest/actual/city/1") == b"delivered"
        for i in (3, 4):
            assert redis_client.get(f"{SENT_KEY_PREFIX}wind:S{i}#1/city") == (
                b"delivered in digest/actual/city/1")

    run(clean, body)
