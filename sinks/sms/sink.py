"""The SMS sink: alerts -> messages (routing + templates) -> storm protection -> idempotent
delivery through any provider.

Both cross-cutting behaviours wrap the provider, so every provider (SMPP, HTTP, file) gets
them without a line of its own:

- Idempotency: a message's key is claimed in Redis (``onemap:sms:sent:<alert_id>/<recipient>``)
  before submit and released if the submit fails, so retries, restarts and replays never send
  a message twice. An outcome that could not be written to its claim (Redis went away while
  the message was at the gateway) is kept by the sink and written before that message is
  tried again, and at every :meth:`SmsSink.tick`, so that the claim does not stay
  ``pending`` (which would hold up every retry of the alert, then send it again).
- Storm protection (``storm.py``, state in ``storm_store.py``): each message is sent now or
  held for one grouped summary, by per-recipient limits; red is never held. The claim and the
  decision are one Redis transaction. Held messages go out when :meth:`SmsSink.tick` (called
  periodically) finds their summary due.

Only alerts whose ``notify`` is ``"send"`` reach phones; inhibited and silenced ones are
counted and logged with their reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from onemap.metrics import SinkMetrics
from onemap.records import Alert
from onemap.registries import Registries
from onemap.sinks.base import Outcome
from onemap.sinks.sms.followup import SmsFollowUp
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsProvider
from onemap.sinks.sms.roster import DutyRoster, masked
from onemap.sinks.sms.routing import recipients, responsible_person
from onemap.sinks.sms.storm import Action, Outgoing, StormItem, StormLimits, Stream, load_limits
from onemap.sinks.sms.storm_store import (
    PENDING_STALE_S,
    SENT_KEY_PREFIX,
    SENT_TTL_S,
    STALE_FLUSH,
    ClaimInFlight,
    OutcomeNotRecorded,
    StormStore,
    TransactionConflict,
    submit_once,
)
from onemap.sinks.sms.templates import render

__all__ = ["SENT_KEY_PREFIX", "SENT_TTL_S", "SmsSink", "messages_for"]

log = logging.getLogger(__name__)


def messages_for(alert: Alert, roster: DutyRoster,
                 registries: Registries | None = None) -> list[SmsMessage]:
    """Pure: the messages one alert transition produces.

    An "updated" transition (news at the same level) goes to the wall display, not to
    phones: officers get one SMS per situation and level, not a storm of them. A transition
    whose ``notify`` is not "send" (inhibited by a higher alert, silenced by an operator) makes
    no message: the sink counts and logs why.
    """
    if alert.transition == "updated" or alert.notify != "send":
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


def stream_of(message: SmsMessage) -> Stream:
    """Drills and actual alerts are limited and summarised apart: they never mix."""
    return "exercise" if message.exercise else "actual"


class SmsSink:
    """Delivers alert transitions by SMS; call :meth:`tick` periodically to flush summaries.

    ``counts`` tallies what happened to messages (``send:within_limit``, ``hold:over_limit``,
    ``not_sent:inhibited``, ``flush:digest``...), for metrics and tests.
    """

    name = "sms"

    def __init__(
        self, client: aioredis.Redis, provider: SmsProvider, *,
        roster: Callable[[], DutyRoster], now: Callable[[], datetime],
        registries: Registries | None = None,
        limits: Callable[[], StormLimits] | None = None,
        follow_up: SmsFollowUp | None = None,
        metrics: SinkMetrics | None = None,
        pending_stale_s: float = PENDING_STALE_S,
    ) -> None:
        self.registries = registries
        self.client = client
        self.provider = provider
        self.roster = roster
        self.now = now
        self.limits = limits if limits is not None else _constant(load_limits())
        self.store = StormStore(client, self.limits, pending_stale_s=pending_stale_s)
        self.counts: Counter[str] = Counter()
        self.follow_up = follow_up
        self.metrics = metrics
        #: idempotency key -> writes the outcome of its submit to its claim, for the
        #: outcomes Redis was not there to take (written before anything else is done with
        #: that key, and at every tick)
        self._unrecorded: dict[str, Callable[[], Awaitable[None]]] = {}

    async def check(self) -> None:
        await self.client.ping()
        await self.provider.check()

    async def send(self, batch: Sequence[Alert]) -> list[Outcome]:
        """One outcome per alert: the worst of its messages' outcomes. A message held for a
        summary counts as delivered: it is stored in Redis and will go out with the summary."""
        outcomes: list[Outcome] = []
        roster = self.roster()
        for alert in batch:
            if alert.notify != "send" and alert.transition != "updated":
                self.counts[f"not_sent:{alert.notify}"] += 1
                if self.metrics is not None:
                    self.metrics.sms_not_sent.labels(alert.notify).inc()
                log.info("SMS for %s not sent: %s (%s)", alert.alert_id, alert.notify,
                         alert.notify_reason or "no reason given")
            messages = messages_for(alert, roster, self.registries)
            results = [await self._deliver(m, alert) for m in messages]
            # who was asked to confirm: the escalation waits for them (messages held for a
            # summary do not ask; red is never held)
            asked = [m for m, (outcome, submitted) in zip(messages, results, strict=True)
                     if submitted and outcome in (Outcome.DELIVERED, Outcome.DUPLICATE)]
            worst = _worst([outcome for outcome, _ in results])
            if self.follow_up is not None and asked:
                try:
                    await self.follow_up.note_sent(alert, asked)
                except RedisError:  # retried: the messages come back DUPLICATE, the note
                    worst = Outcome.RETRY  # is idempotent
            outcomes.append(worst)
        return outcomes

    async def _deliver(self, message: SmsMessage, alert: Alert) -> tuple[Outcome, bool]:
        """The outcome of one message and whether it went out as itself rather than held
        for a summary (a replay of a claimed message counts as sent: the escalation's note
        is idempotent and never restarts a deadline)."""
        now = self.now()
        stream = stream_of(message)
        item = StormItem.of(message, alert, self.limits(), now)
        if not await self._record(message.key):
            return Outcome.RETRY, False
        try:
            decision = await self.store.admit(item, message.phone, stream,
                                              message.recipient_id, now)
        except (RedisError, TransactionConflict, ClaimInFlight):
            return Outcome.RETRY, False
        if decision is None:
            return Outcome.DUPLICATE, True
        if decision.action == Action.DUPLICATE:
            return Outcome.DUPLICATE, False
        self.counts[f"{decision.action.value}:{decision.why.value}"] += 1
        if self.metrics is not None:
            self.metrics.sms_decisions.labels(decision.action.value, decision.why.value).inc()
        log.info("SMS %s to %s (%s): %s", message.key, message.recipient_id,
                 masked(message.phone), decision)
        if decision.action != Action.SEND:
            return Outcome.DELIVERED, False
        try:
            outcome = (await self.provider.submit([message], now))[0]
        except OSError:
            outcome = Outcome.RETRY

        async def settle() -> None:
            await self.store.settle(item, stream, message.recipient_id, outcome)

        try:
            await settle()
        except (RedisError, TransactionConflict) as exc:
            # the claim stays pending (in flight to any other worker) until it is written:
            # before this message is tried again, or at the next tick
            self._unrecorded[message.key] = settle
            log.warning("SMS %s: %s, but Redis did not take it (%r); written when Redis is "
                        "back", message.key, outcome.value, exc)
        return outcome, True

    async def _record(self, key: str) -> bool:
        """Write the outcome this worker holds for ``key``, if any; False when it still
        cannot be written (the message must wait)."""
        record = self._unrecorded.pop(key, None)
        if record is None:
            return True
        try:
            await record()
        except (RedisError, TransactionConflict):
            self._unrecorded.setdefault(key, record)
            return False
        log.info("SMS %s: its outcome is recorded now that Redis is back", key)
        return True

    async def record_outcomes(self) -> bool:
        """Write every outcome Redis was not there to take; True when none is left."""
        for key in list(self._unrecorded):
            if not await self._record(key):
                return False
        return True

    async def tick(self) -> None:
        """Flush every summary that is due (called periodically; two workers may both call
        it: each flush is claimed once). Failures are left for the next tick."""
        now = self.now()
        if not await self.record_outcomes():
            log.warning("SMS tick: Redis unavailable, outcomes of earlier submits and "
                        "summaries wait for the next tick")
            return
        try:
            due = await self.store.due(now)
        except RedisError:
            log.warning("SMS tick: Redis unavailable, summaries wait for the next tick")
            return
        for stream, recipient_id in due:
            try:
                await self._flush(stream, recipient_id, now)
            except (RedisError, TransactionConflict) as exc:
                log.warning("SMS summary for %s (%s) not flushed yet: %s", recipient_id,
                            stream, exc)

    async def _flush(self, stream: Stream, recipient_id: str, now: datetime) -> None:
        planned = await self.store.begin_flush(stream, recipient_id, now)
        if planned is None:
            return
        outgoing, phone = planned
        message = SmsMessage(key=outgoing.key, alert_id=outgoing.key, recipient_id=recipient_id,
                             phone=phone, text=outgoing.text, exercise=stream == "exercise")
        try:
            outcome = await submit_once(self.client, self.provider, message, now)
        except OutcomeNotRecorded as exc:  # written at the next tick, then finished
            self._unrecorded[exc.key] = exc.record
            raise
        if isinstance(outcome, str):  # claimed before
            if outcome in (Outcome.DELIVERED.value, Outcome.FAILED.value):
                await self._finish(stream, recipient_id, outgoing, outcome, now)
            elif outcome == "pending" and now - outgoing.started_at >= STALE_FLUSH:
                log.error("SMS summary %s was interrupted mid-submit; closed as unconfirmed "
                          "(never sent twice)", outgoing.key)
                await self._finish(stream, recipient_id, outgoing, "unconfirmed", now)
            return  # another worker is submitting it right now
        if outcome in (Outcome.RETRY, Outcome.DUPLICATE):
            self.counts["flush:retry"] += 1  # same text, same key at the next tick
            return
        if outcome == Outcome.FAILED:
            log.error("SMS summary %s to %s failed for good (%d held messages)", outgoing.key,
                      masked(phone), len(outgoing.keys))
        await self._finish(stream, recipient_id, outgoing, outcome.value, now)

    async def _finish(self, stream: Stream, recipient_id: str, outgoing: Outgoing,
                      outcome: str, now: datetime) -> None:
        await self.store.finish_flush(stream, recipient_id, outgoing, outcome, now)
        self.counts[f"flush:{outgoing.kind}"] += 1
        log.info("SMS %s %s to %s: %d held messages, %s", outgoing.kind, outgoing.key,
                 recipient_id, len(outgoing.keys), outcome)

    async def close(self) -> None:
        await self.provider.close()


def _constant(limits: StormLimits) -> Callable[[], StormLimits]:
    return lambda: limits


_ORDER = [Outcome.DELIVERED, Outcome.DUPLICATE, Outcome.FAILED, Outcome.RETRY]


def _worst(results: list[Outcome]) -> Outcome:
    return max(results, key=_ORDER.index) if results else Outcome.DELIVERED
