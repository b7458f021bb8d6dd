"""The SMS sink: alerts -> messages (routing + templates) -> idempotent delivery.

Idempotency wraps the provider, so every provider gets it: a message's key is claimed in
Redis (``onemap:sms:sent:<key>``) before submit and released if the submit fails, so retries,
restarts and replays never send a message twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from onemap.records import Alert
from onemap.registries import Registries
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsProvider
from onemap.sinks.sms.roster import DutyRoster
from onemap.sinks.sms.routing import recipients, responsible_person
from onemap.sinks.sms.templates import render

SENT_KEY_PREFIX = "onemap:sms:sent:"
SENT_TTL_S = 30 * 24 * 3600


def messages_for(alert: Alert, roster: DutyRoster,
                 registries: Registries | None = None) -> list[SmsMessage]:
    """Pure: the messages one alert transition produces.

    An "updated" transition (news at the same level) goes to the wall display, not to
    phones: officers get one SMS per situation and level, not a storm of them.
    """
    if alert.transition == "updated":
        return []
    text = render(alert)
    people = recipients(alert, roster)
    responsible = responsible_person(alert, registries)
    if responsible is not None and all(p.phone != responsible.phone for p in people):
        people.append(responsible)
    return [
        SmsMessage(key=f"{alert.alert_id}/{officer.id}", alert_id=alert.alert_id,
                   recipient_id=officer.id, phone=officer.phone, text=text,
                   exercise=alert.hazard.exercise)
        for officer in people
    ]


class SmsSink:
    name = "sms"

    def __init__(
        self, client: aioredis.Redis, provider: SmsProvider, roster: Callable[[], DutyRoster],
        now: Callable[[], datetime], registries: Registries | None = None,
    ) -> None:
        self.registries = registries
        self.client = client
        self.provider = provider
        self.roster = roster
        self.now = now

    async def check(self) -> None:
        await self.client.ping()
        await self.provider.check()

    async def send(self, batch: Sequence[Alert]) -> list[Outcome]:
        """One outcome per alert: the worst of its messages' outcomes."""
        outcomes: list[Outcome] = []
        roster = self.roster()
        for alert in batch:
            results = [await self._deliver(m)
                       for m in messages_for(alert, roster, self.registries)]
            outcomes.append(_worst(results))
        return outcomes

    async def _deliver(self, message: SmsMessage) -> Outcome:
        key = SENT_KEY_PREFIX + message.key
        try:
            claimed = await self.client.set(key, "pending", nx=True, ex=SENT_TTL_S)
        except RedisError:
            return Outcome.RETRY
        if not claimed:
            return Outcome.DUPLICATE
        try:
            outcome = (await self.provider.submit([message], self.now()))[0]
        except OSError:
            outcome = Outcome.RETRY
        try:
            if outcome in (Outcome.DELIVERED, Outcome.FAILED):
                await self.client.set(key, outcome.value, xx=True, ex=SENT_TTL_S)
            else:
                await self.client.delete(key)
        except RedisError:
            pass  # the claim stands: at worst a retry is suppressed, never a double send
        return outcome

    async def close(self) -> None:
        await self.provider.close()


_ORDER = [Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.FAILED, Outcome.RETRY]


def _worst(results: list[Outcome]) -> Outcome:
    return max(results, key=_ORDER.index) if results else Outcome.DELIVERED
