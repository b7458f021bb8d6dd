"""Reminders for alerts still open: Alertmanager's ``repeat_interval`` for SMS.

Why: an orange or red situation still open hours later must not fade from the officers'
minds, and a night shift that took over needs to hear of it. Each level's interval is data
(``repeat`` in rules/default/lifecycle.yaml; levels not listed are never repeated). After an
alert transition was sent to people, a reminder is due one interval later; at the tick it goes
to the same people, unless by then

* the alert moved to another level (that transition was itself sent and started its own
  reminders; news at the same level only refreshes the figures the reminder quotes),
* it was resolved (or is no longer known), or
* the command room reported it handled or closed (the closed loop, rules/response.py).

A reminder repeats every interval while those hold. Each is claimed once per (reminded
transition, reminder number, recipient) with the sink's idempotency claim and the sink's
policy (``storm_store.submit_once``, the helper its summaries use), so two workers ticking at
once or a retry never send it twice, and none is lost:

* a claim that says ``delivered`` or ``failed`` is never sent again;
* a ``pending`` claim is a submit in flight elsewhere: the reminder stays due and is looked
  at again at the next tick. Once the claim is older than the pending-stale age
  (``pending_stale_s``, by default the sink's 120 s) its submit is taken as dead with its
  worker and the reminder sent (perhaps twice: for an emergency better twice than never);
* an outcome Redis could not take (Redis went away while the reminder was at the gateway) is
  kept by the worker and written before any reminder is sent again: a refused reminder is
  then released and sent at once, a delivered one recorded and not sent again.

Keys (docs/redis-keys.md): ``onemap:sms:remind:<hazard_id>`` (JSON: the transition, its
recipients, the next reminder's number) and ``onemap:sms:remind:due`` (sorted set: hazard id
→ when the next reminder is due).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from onemap.levels import WarningLevel
from onemap.records import Alert
from onemap.rules.response import Loop
from onemap.sinks.base import Outcome
from onemap.sinks.dashboard.state import read_alert
from onemap.sinks.response import read_loop
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsProvider
from onemap.sinks.sms.storm_store import PENDING_STALE_S, OutcomeNotRecorded, submit_once
from onemap.sinks.sms.templates import DRILL_TAG, SENDER_TAG, render

log = logging.getLogger(__name__)

REMIND_PREFIX: Final = "onemap:sms:remind:"
REMIND_DUE_KEY: Final = "onemap:sms:remind:due"
REMIND_TTL_S: Final = 7 * 24 * 3600
#: loop steps after which the command room no longer needs reminding
DONE_STEPS: Final = frozenset({"handled", "closed"})
#: transitions whose SMS ask people to act (reminders follow them)
REMINDED: Final = frozenset({"new", "escalated"})

#: a level's repeat interval in seconds, or None (never repeated)
RepeatInterval = Callable[[WarningLevel], float | None]

#: idempotency key -> writes the outcome of its submit to its claim: the outcomes Redis was
#: not there to take. Owned by the caller (one per worker, kept across ticks, as the sink
#: keeps its own); :func:`remind_due` writes them before it sends anything. A worker that
#: dies with some leaves their claims ``pending``, sent again once stale.
Unrecorded = dict[str, Callable[[], Awaitable[None]]]


@dataclasses.dataclass(frozen=True, slots=True)
class Reminder:
    """A transition that was sent, to whom, and the number of the next reminder."""

    alert: dict[str, Any]  # the ledger JSON of the transition
    recipients: tuple[tuple[str, str], ...]  # (recipient id, phone)
    number: int = 1

    @property
    def hazard_id(self) -> str:
        return str(self.alert["hazard_id"])

    @property
    def seq(self) -> int:
        return int(self.alert["seq"])

    @property
    def alert_id(self) -> str:
        """The reminded transition's id: its reminders' claims are keyed by it, whatever
        news at the same level the text quotes."""
        return str(self.alert["alert_id"])

    def to_json(self) -> bytes:
        return orjson.dumps({"alert": self.alert, "recipients": self.recipients,
                             "number": self.number})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Reminder:
        d = orjson.loads(raw)
        return cls(alert=d["alert"], recipients=tuple((str(i), str(p)) for i, p in
                                                      d["recipients"]),
                   number=int(d["number"]))


def reminder_decision(reminder: Reminder, current: dict[str, Any] | None, loop: Loop,
                      interval_s: float | None) -> tuple[str, str]:
    """("send" | "drop", why) for a due reminder, from the alert as the wall has it now.

    >>> a = {"hazard_id": "h", "seq": 2, "transition": "new", "level": "red"}
    >>> r = Reminder(a, (("duty-city", "13800000000"),))
    >>> reminder_decision(r, a, Loop(), 7200.0)
    ('send', 'still open after 2 h')
    >>> reminder_decision(r, {**a, "seq": 3, "level": "orange"}, Loop(), 7200.0)
    ('drop', 'superseded by #3')
    >>> reminder_decision(r, {**a, "seq": 3, "transition": "updated"}, Loop(), 7200.0)[0]
    'send'
    >>> reminder_decision(r, {**a, "seq": 3, "transition": "resolved"}, Loop(), 7200.0)
    ('drop', 'resolved')
    """
    if interval_s is None:
        return "drop", "no repeat interval for this level"
    if current is None:
        return "drop", "the alert is no longer known"
    if current.get("transition") == "resolved":
        return "drop", "resolved"
    if int(current["seq"]) != reminder.seq and current.get("level") != reminder.alert["level"]:
        # an escalation or de-escalation was sent itself and started its own reminders;
        # news at the same level ("updated", not sent by SMS) does not stop them
        return "drop", f"superseded by #{current['seq']}"
    if loop.current in DONE_STEPS:
        return "drop", f"reported {loop.current}"
    hours = interval_s * reminder.number / 3600
    return "send", f"still open after {hours:g} h"


def render_reminder(alert: Alert, hours: float) -> str:
    """The original text with 【持续N小时】 after the sender tag.

    >>> from onemap.rules.urgency import example_hazard
    >>> a = Alert("geohazard:GH1#1", "geohazard:GH1", 1, "new", WarningLevel.ORANGE,
    ...           WarningLevel.NONE, example_hazard(), 70.0, {}, example_hazard().observed_at)
    >>> render_reminder(a, 4).startswith("【珠海应急】【持续4小时】橙色")
    True
    """
    tag = DRILL_TAG + SENDER_TAG if alert.hazard.exercise else SENDER_TAG
    return f"{tag}【持续{hours:g}小时】" + render(alert).removeprefix(tag)


def _key(hazard_id: str) -> str:
    return REMIND_PREFIX + hazard_id


async def note_reminder(client: aioredis.Redis, alert: Alert, messages: Sequence[SmsMessage],
                        interval_s: float | None, now: datetime) -> str:
    """After ``messages`` for ``alert`` went out: schedule (or cancel) its reminders."""
    if alert.transition not in REMINDED or interval_s is None or not messages:
        if alert.transition in ("resolved", "de-escalated"):
            await client.zrem(REMIND_DUE_KEY, alert.hazard_id)
            await client.delete(_key(alert.hazard_id))
            return "cancelled"
        return "not reminded"
    raw = await client.get(_key(alert.hazard_id))
    if raw is not None and Reminder.from_json(raw).seq >= alert.seq:
        return "already scheduled"  # a retry or a replay: the clock is not restarted
    reminder = Reminder(alert.to_dict(), tuple((m.recipient_id, m.phone) for m in messages))
    due = now + timedelta(seconds=interval_s)
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(_key(alert.hazard_id), reminder.to_json(), ex=REMIND_TTL_S)
        pipe.zadd(REMIND_DUE_KEY, {alert.hazard_id: due.timestamp()})
        await pipe.execute()
    return "scheduled"


async def record_outcomes(unrecorded: Unrecorded) -> None:
    """Write every reminder outcome Redis was not there to take; raises RedisError (and keeps
    the rest) while it still cannot."""
    while unrecorded:
        key, record = next(iter(unrecorded.items()))
        await record()
        del unrecorded[key]
        log.info("reminder %s: its outcome is recorded now that Redis is back", key)


async def remind_due(client: aioredis.Redis, provider: SmsProvider, interval: RepeatInterval,
                     now: datetime, *, pending_stale_s: float = PENDING_STALE_S,
                     unrecorded: Unrecorded | None = None) -> list[tuple[str, str]]:
    """Send the reminders due now; (hazard id, what happened) for each one looked at.

    Outcomes of earlier submits that Redis could not take (kept in ``unrecorded``, which
    the caller keeps across calls) are written first; raises RedisError while Redis is
    away (nothing is sent; the next tick tries again)."""
    unrecorded = {} if unrecorded is None else unrecorded
    await record_outcomes(unrecorded)
    done: list[tuple[str, str]] = []
    for raw_id in await client.zrangebyscore(REMIND_DUE_KEY, "-inf", now.timestamp()):
        hazard_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        raw = await client.get(_key(hazard_id))
        if raw is None:
            await client.zrem(REMIND_DUE_KEY, hazard_id)
            continue
        reminder = Reminder.from_json(raw)
        stored = await read_alert(client, hazard_id)
        current = None if stored is None else orjson.loads(stored)
        # remind with the latest figures the wall has (news at the same level updates them)
        latest = stored if stored is not None and current is not None \
            and current.get("transition") != "resolved" else orjson.dumps(reminder.alert)
        alert = Alert.from_json(latest)
        step_s = interval(alert.level)
        action, why = reminder_decision(reminder, current, await read_loop(client, hazard_id),
                                        step_s)
        if action == "drop" or step_s is None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zrem(REMIND_DUE_KEY, hazard_id)
                pipe.delete(_key(hazard_id))
                await pipe.execute()
            done.append((hazard_id, f"dropped: {why}"))
            continue
        sent = await _send(client, provider, reminder, alert=alert, step_s=step_s, now=now,
                           pending_stale_s=pending_stale_s, unrecorded=unrecorded)
        if sent:
            following = dataclasses.replace(reminder, number=reminder.number + 1)
            due = now + timedelta(seconds=step_s)
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(_key(hazard_id), following.to_json(), ex=REMIND_TTL_S)
                pipe.zadd(REMIND_DUE_KEY, {hazard_id: due.timestamp()})
                await pipe.execute()
        done.append((hazard_id, f"sent #{reminder.number}: {why}" if sent else "retry"))
    return done


async def _send(client: aioredis.Redis, provider: SmsProvider, reminder: Reminder, *,
                alert: Alert, step_s: float, now: datetime, pending_stale_s: float,
                unrecorded: Unrecorded) -> bool:
    """Send reminder ``number`` to everyone not yet sent it; True when nobody is left.

    ``alert`` is the latest news of the reminded transition (its text); the claims stay the
    transition's, so a retry after news at the same level does not send it again to those
    who had it."""
    text = render_reminder(alert, step_s * reminder.number / 3600)
    complete = True
    for recipient_id, phone in reminder.recipients:
        message = SmsMessage(
            key=f"remind/{reminder.alert_id}/{reminder.number}/{recipient_id}",
            alert_id=alert.alert_id, recipient_id=recipient_id, phone=phone, text=text,
            exercise=alert.hazard.exercise)
        try:
            outcome = await submit_once(client, provider, message, now,
                                        pending_stale_s=pending_stale_s)
        except OutcomeNotRecorded as exc:  # written first thing at the next tick
            unrecorded[exc.key] = exc.record
            log.warning("reminder %s: %s, but Redis did not take it; written when Redis is "
                        "back", exc.key, exc.outcome.value)
            raise
        if isinstance(outcome, str):  # claimed before
            if outcome == "pending":  # in flight elsewhere (taken over once stale)
                complete = False
            continue  # delivered or failed: never again
        if outcome in (Outcome.RETRY, Outcome.DUPLICATE):
            complete = False
        elif outcome == Outcome.FAILED:
            log.error("reminder %s failed for good", message.key)
    return complete
