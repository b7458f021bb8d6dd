"""What happens after an SMS is sent: escalation, replies, receipts — one object to wire.

:class:`SmsFollowUp` is the thin edge around the pure decisions of
:mod:`~onemap.sinks.sms.escalation`, :mod:`~onemap.sinks.sms.replies` and
:mod:`~onemap.sinks.sms.receipts`; it holds the Redis client, the roster getter, the clock,
the provider to answer through and the metrics. The worker wires it in a few lines::

    follow_up = SmsFollowUp(client, roster=lambda: holder.current, now=ctx.now,
                            metrics=SmsFollowUpMetrics(ctx.registry))
    provider = provider_from_url(url, secret=secret, on_event=follow_up.on_event)
    follow_up.attach(provider)
    # the sink, after each alert's messages were delivered: await follow_up.note_sent(...)
    # a timer every ESCALATION_CHECK_S: await follow_up.tick() (escalations, deputies)

The provider and the follow-up need each other (receipts and replies come in through the
provider; answers and escalations go out through it), hence :meth:`attach`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from onemap.records import Alert
from onemap.sinks.base import Outcome
from onemap.sinks.sms.escalation import (
    AWAITING_KEY,
    EscalationResult,
    deputies_due,
    escalate_due,
    note_sent,
    queue_undeliverable,
)
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsEvent, SmsProvider
from onemap.sinks.sms.receipts import REPLY_KEY_PREFIX, dead_letter_record, record_receipt
from onemap.sinks.sms.reminders import RepeatInterval, Unrecorded, note_reminder, remind_due
from onemap.sinks.sms.replies import handle_reply
from onemap.sinks.sms.roster import DutyRoster, masked
from onemap.sinks.sms.storm_store import PENDING_STALE_S

log = logging.getLogger(__name__)

#: How often the worker should call :meth:`SmsFollowUp.tick` (s): deadlines are minutes, so
#: an escalation goes out at most this late.
ESCALATION_CHECK_S: Final = 15.0

DeadLetterHook = Callable[[dict[str, Any]], Awaitable[None]]


class SmsFollowUpMetrics:
    """Metrics of escalation, replies, receipts and the roster, on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reminders = Counter(
            "onemap_sms_reminders_total",
            "Reminders of alerts still open (repeat interval): sent, dropped, retry.",
            ["outcome"], registry=registry)
        self.escalations = Counter(
            "onemap_sms_escalations_total",
            "Due acknowledgement deadlines by what was done (escalated, retry, busy, "
            "acknowledged, resolved, exhausted, disabled, drill, superseded).", ["outcome"],
            registry=registry)
        self.awaiting = Gauge(
            "onemap_sms_awaiting_ack",
            "Alert transitions sent and awaiting acknowledgement (all workers).",
            registry=registry)
        self.replies = Counter(
            "onemap_sms_replies_total",
            "Mobile-originated replies by outcome (accepted, already, refused, unknown-text, "
            "unknown-phone, nothing-to-acknowledge, unknown-code).", ["outcome"],
            registry=registry)
        self.receipts = Counter(
            "onemap_sms_receipts_total",
            "Delivery receipts by the message's resulting state (delivered, pending, "
            "expired, failed) or unmatched.", ["state"], registry=registry)
        self.undeliverable = Counter(
            "onemap_sms_undeliverable_total",
            "Messages the network could not deliver (dead letters), by state.", ["state"],
            registry=registry)
        self.deputies = Counter(
            "onemap_sms_deputy_messages_total",
            "Messages sent to a deputy after the officer's message was undeliverable.",
            registry=registry)
        self.roster_reloads = Counter(
            "onemap_roster_reloads_total", "Duty roster reload attempts by outcome.",
            ["outcome"], registry=registry)
        self.errors = Counter(
            "onemap_sms_followup_errors_total",
            "Errors in escalation ticks and incoming SMS events, by operation (escalation, "
            "receipt, reply; *-defect for a bug rather than Redis).",
            ["operation"], registry=registry)


class SmsFollowUp:
    """Escalation, acknowledgement replies and receipts for one worker."""

    def __init__(
        self, client: aioredis.Redis, roster: Callable[[], DutyRoster],
        now: Callable[[], datetime], *, metrics: SmsFollowUpMetrics | None = None,
        dead_letter: DeadLetterHook | None = None, deputies: bool = True,
        repeat: RepeatInterval | None = None, pending_stale_s: float = PENDING_STALE_S,
    ) -> None:
        self.client = client
        self.roster = roster
        self.now = now
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.deputies = deputies
        self.repeat = repeat
        #: a reminder claim pending longer than this is taken as dead and sent again
        self.pending_stale_s = pending_stale_s
        #: reminder outcomes Redis was not there to take, written at the next tick
        self.unrecorded_reminders: Unrecorded = {}
        self.provider: SmsProvider | None = None

    def attach(self, provider: SmsProvider) -> None:
        self.provider = provider

    def _provider(self) -> SmsProvider:
        if self.provider is None:
            raise RuntimeError("SmsFollowUp.attach(provider) was not called")
        return self.provider

    async def note_sent(self, alert: Alert, messages: Sequence[SmsMessage]) -> str:
        """Call after the sink's messages for ``alert`` were DELIVERED (or DUPLICATE)."""
        now = self.now()
        if self.repeat is not None:
            await note_reminder(self.client, alert, messages, self.repeat(alert.level), now)
        return await note_sent(self.client, alert, messages, self.roster(), now)

    async def tick(self) -> list[EscalationResult]:
        """Escalate what is due and tell the deputies of undeliverable messages; for a
        timer. Never raises for Redis trouble (counted and logged; the next tick retries)."""
        roster, provider, now = self.roster(), self._provider(), self.now()
        try:
            results = await escalate_due(self.client, roster, provider, now)
            deputies = await deputies_due(self.client, roster, provider, now) \
                if self.deputies else []
            reminded = await remind_due(
                self.client, provider, self.repeat, now, pending_stale_s=self.pending_stale_s,
                unrecorded=self.unrecorded_reminders) if self.repeat is not None else []
            awaiting = await self.client.zcard(AWAITING_KEY)
        except RedisError as exc:
            log.warning("escalation check skipped: Redis: %s", exc)
            if self.metrics is not None:
                self.metrics.errors.labels("escalation").inc()
            return []
        if self.metrics is not None:
            for r in results:
                self.metrics.escalations.labels(r.outcome).inc()
            self.metrics.deputies.inc(sum(1 for _, outcome, _ in deputies if outcome == "told"))
            self.metrics.awaiting.set(awaiting)
            for _, what in reminded:
                self.metrics.reminders.labels(what.split(" ", 1)[0].rstrip(":")).inc()
        return results

    async def on_event(self, event: SmsEvent) -> None:
        """The provider's ``on_event``: a receipt or a reply. Raises only on Redis trouble,
        so the SMPP provider answers the SMSC "try again" and the event is not lost."""
        try:
            if event.kind == "receipt":
                await self._on_receipt(event)
            else:
                await self._on_reply(event)
        except RedisError:
            if self.metrics is not None:
                self.metrics.errors.labels(event.kind).inc()
            raise
        except Exception:  # a defect: redelivery would only repeat it, forever
            log.exception("SMS %s event could not be handled: %r", event.kind, event)
            if self.metrics is not None:
                self.metrics.errors.labels(f"{event.kind}-defect").inc()

    async def _on_receipt(self, event: SmsEvent) -> None:
        result = await record_receipt(self.client, event)
        if self.metrics is not None:
            self.metrics.receipts.labels(
                "unmatched" if result.outcome == "unmatched" else result.state).inc()
        if not result.newly_undeliverable:
            return
        now = self.now()
        record = dead_letter_record(event, result, now)
        log.error("SMS %s to %s (%s) undeliverable: %s %s", result.alert_id,
                  result.recipient_id, masked(event.phone), event.status, event.error)
        if self.metrics is not None:
            self.metrics.undeliverable.labels(result.state).inc()
        if self.dead_letter is not None:
            try:
                await self.dead_letter(record)
            except Exception:  # the hook is the lead's Kafka producer: log, never lose the rest
                log.exception("dead-letter hook failed for %s", result.alert_id)
        if self.deputies:
            await queue_undeliverable(self.client, result.alert_id, result.recipient_id, now)

    async def _on_reply(self, event: SmsEvent) -> None:
        now = self.now()
        result = await handle_reply(self.client, self.roster(), event, now)
        if self.metrics is not None:
            self.metrics.replies.labels(result.outcome).inc()
        if result.reply is None or self.provider is None:
            return
        actor = result.actor or "unknown"
        message = SmsMessage(
            key=f"{REPLY_KEY_PREFIX}{result.hazard_id or '-'}:{int(now.timestamp() * 1000)}"
                f"/{actor}", alert_id="", recipient_id=actor, phone=event.phone,
            text=result.reply)
        try:
            outcome = (await self.provider.submit([message], now))[0]
        except OSError:
            outcome = Outcome.RETRY
        if outcome != Outcome.DELIVERED:  # the step is recorded; only the courtesy is lost
            log.warning("reply to %s not sent: %s", masked(event.phone), outcome.value)
