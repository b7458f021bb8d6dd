"""Escalation: an alert nobody acknowledges climbs village → town → district → city.

When an alert transition that asks for acknowledgement (new, escalated) has been sent, its
deadline starts (the roster's ``escalation`` policy, per warning colour). If, when the
deadline passes, nobody has acknowledged it (by SMS reply or the wall's API:
:func:`onemap.rules.response.acknowledged` on the alert's loop), the on-duty officer of the
next administrative level above the highest one already told gets an escalation SMS
(:func:`escalation_text`: 【珠海应急】【升级】… 平沙镇10分钟未确认 请督促处置 …), and a new deadline
starts for that level. An acknowledgement at any point stops it; so do the alert's
resolution and the top of the ladder (the colour's ``up_to`` or the city).

Pure decisions (:func:`on_sent`, :func:`decide`) return their reason; the edge
(:func:`note_sent`, :func:`escalate_due`) reads and writes Redis and sends through a provider.

Never twice: each escalation step is recorded once per (alert, level) with HSETNX before
anything is sent, and each of its messages is claimed per recipient; a second worker, a
retry or a restart resumes the recorded step and skips what was already sent. An entry is
only advanced if nobody changed it meanwhile (WATCH/MULTI), so a newer transition of the same
hazard, noted concurrently, always wins.

Redis keys (docs/sms-escalation.md):

- ``onemap:sms:await:<hazard_id>`` string: the transition awaiting acknowledgement (JSON of
  :class:`Awaiting`); kept 7 days at most.
- ``onemap:sms:awaiting`` sorted set: hazard_id, score = deadline (Unix seconds).
- ``onemap:sms:escalation:<alert_id>`` hash: ``<level>`` -> JSON of the step taken (``at``,
  ``from``, ``to``, ``reason``, ``minutes``); ``<level>/<officer_id>`` -> ``pending``,
  ``delivered`` or ``failed`` for each message of it; ``deputy/<officer_id>`` for a deputy
  told after an undeliverable receipt. Kept 30 days.
- ``onemap:sms:undeliverable`` sorted set: ``<alert_id>/<recipient_id>`` of messages the
  network could not deliver, score = when; the next tick tells the deputy and removes it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from onemap.records import Alert
from onemap.rules.response import Loop, acknowledged
from onemap.sinks.base import Outcome
from onemap.sinks.response import read_loops
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsProvider
from onemap.sinks.sms.replies import ASKING, remember_sent, short_code
from onemap.sinks.sms.roster import (
    ADMIN_LEVEL_NAMES,
    ADMIN_LEVELS,
    AdminLevel,
    DutyRoster,
    Officer,
    masked,
)
from onemap.sinks.sms.templates import DRILL_TAG, HAZARD_NAMES, SENDER_TAG, render

log = logging.getLogger(__name__)
T = TypeVar("T")

AWAIT_PREFIX: Final = "onemap:sms:await:"
AWAITING_KEY: Final = "onemap:sms:awaiting"
ESCALATION_PREFIX: Final = "onemap:sms:escalation:"
UNDELIVERABLE_KEY: Final = "onemap:sms:undeliverable"
#: How long an undeliverable message waits for its send to be noted before it is dropped.
NOTE_GRACE: Final = timedelta(minutes=2)
#: A send claimed this long ago and never finished: its worker died (submit timeouts are
#: seconds), so the message is presumed sent and the escalation moves on.
PENDING_STALE: Final = timedelta(minutes=2)
AWAIT_TTL_S: Final = 7 * 24 * 3600
ESCALATION_TTL_S: Final = 30 * 24 * 3600
#: After a gateway's transient failure, the step is tried again this much later.
RETRY_AFTER: Final = timedelta(seconds=30)
#: Due entries handled per call of :func:`escalate_due` (the rest on the next tick).
BATCH: Final = 100
RESPONSIBLE_PREFIX: Final = "responsible:"
_ATTEMPTS: Final = 20

Action = Literal["escalate", "wait", "acknowledged", "resolved", "exhausted", "disabled",
                 "drill"]


def await_key(hazard_id: str) -> str:
    return AWAIT_PREFIX + hazard_id


def escalation_key(alert_id: str) -> str:
    return ESCALATION_PREFIX + alert_id


@dataclasses.dataclass(frozen=True, slots=True)
class Awaiting:
    """A hazard's transition awaiting acknowledgement, and how far up it has been told.

    ``alert_id``/``seq``: the transition to acknowledge (acknowledging a later one counts
    too). ``alert``: the latest snapshot of the alert (a de-escalation updates the text but
    not what must be acknowledged). ``reached``: index in :data:`ADMIN_LEVELS` of the highest
    level told, -1 if none. ``told``: every recipient id told, by the sink or by escalation.
    """

    alert_id: str
    seq: int
    alert: Alert
    noted_at: datetime
    due_at: datetime
    told: tuple[str, ...]
    reached: int
    steps: int = 0

    @property
    def hazard_id(self) -> str:
        return self.alert.hazard_id

    def to_json(self) -> bytes:
        return orjson.dumps({
            "alert_id": self.alert_id, "seq": self.seq, "alert": self.alert.to_dict(),
            "noted_at": self.noted_at.isoformat(), "due_at": self.due_at.isoformat(),
            "told": list(self.told), "reached": self.reached, "steps": self.steps})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Awaiting:
        d: dict[str, Any] = orjson.loads(raw)
        return cls(alert_id=d["alert_id"], seq=int(d["seq"]),
                   alert=Alert.from_json(orjson.dumps(d["alert"])),
                   noted_at=datetime.fromisoformat(d["noted_at"]),
                   due_at=datetime.fromisoformat(d["due_at"]), told=tuple(d["told"]),
                   reached=int(d["reached"]), steps=int(d.get("steps", 0)))


def recipient_level(recipient_id: str, roster: DutyRoster) -> int:
    """Index of a recipient's administrative level (-1 if unknown: e.g. left the roster).

    A hazard point's responsible person (``responsible:<point>``) is a village-level contact.
    """
    if recipient_id.startswith(RESPONSIBLE_PREFIX):
        return ADMIN_LEVELS.index("village")
    officer = roster.get(recipient_id)
    return -1 if officer is None else ADMIN_LEVELS.index(officer.admin_level)


def reached_level(told: Sequence[str], roster: DutyRoster) -> int:
    return max((recipient_level(r, roster) for r in told), default=-1)


def on_sent(entry: Awaiting | None, alert: Alert, told: Sequence[str], roster: DutyRoster,
            now: datetime) -> tuple[Awaiting | None, str]:
    """Pure: the awaiting entry after ``alert`` was sent to ``told``, and why.

    A transition asking for acknowledgement starts a deadline (unless the same transition is
    already awaited: then only who was told grows, the deadline stands, so a replayed or
    retried send never postpones an escalation). A resolution ends the wait; a de-escalation
    keeps waiting for the earlier transition, with the current level's text.
    """
    if entry is not None and entry.seq > alert.seq:
        return entry, "a later transition is already awaited"
    if alert.transition in ASKING:
        return _asking(entry, alert, told, roster, now)
    if entry is None:
        return None, f"{alert.transition}: nothing awaited"
    if alert.transition == "resolved":
        return None, "resolved"
    if alert.transition == "de-escalated":
        merged = tuple(dict.fromkeys((*entry.told, *told)))
        return dataclasses.replace(entry, alert=alert, told=merged), \
            "de-escalated: the earlier transition is still awaited"
    return entry, f"{alert.transition}: nothing to acknowledge"


def _asking(entry: Awaiting | None, alert: Alert, told: Sequence[str], roster: DutyRoster,
            now: datetime) -> tuple[Awaiting | None, str]:
    reached = reached_level(told, roster)
    if entry is not None and entry.seq == alert.seq:
        merged = tuple(dict.fromkeys((*entry.told, *told)))
        return dataclasses.replace(entry, told=merged, reached=max(entry.reached, reached)), \
            "already awaited"
    policy = roster.escalation
    step = None if policy is None else policy.step(alert.level)
    why = ("the roster has no escalation policy" if policy is None
           else "drills do not escalate" if alert.hazard.exercise and not policy.drills
           else "nothing to acknowledge" if step is None else None)
    if why is not None or step is None:
        return None, why or "nothing to acknowledge"
    return Awaiting(alert.alert_id, alert.seq, alert, now,
                    now + timedelta(minutes=step.ack_within_min), tuple(dict.fromkeys(told)),
                    reached), "awaiting acknowledgement"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a due entry, and why (the reason goes to the log and the record)."""

    action: Action
    reason: str
    level: AdminLevel | None = None
    targets: tuple[Officer, ...] = ()
    next_due: datetime | None = None


def officers_at(roster: DutyRoster, alert: Alert, level: AdminLevel,
                now: datetime) -> list[Officer]:
    """The on-duty officers (or their deputies) for the alert's area at ``level``.

    Officers who cover the hazard's type come first; if none does, any officer of that area
    (a district's general duty officer must hear of a water-level alert nobody answered).
    ``min_level`` is not applied: it filters routine notices, an unanswered alert is not one.
    """
    place = alert.hazard.place
    code = {"village": place.village_code, "town": place.town_code,
            "district": place.district_code, "city": place.city_code}[level]
    if not code:
        return []
    local = [o for o in roster.officers if o.area_code == code]
    covering = [o for o in local if o.covers(alert.hazard.hazard_type)] or local
    chosen: dict[str, Officer] = {}
    for officer in covering:
        on_duty = roster.on_duty_for(officer, now)
        if on_duty is not None:
            chosen.setdefault(on_duty.id, on_duty)
    return list(chosen.values())


def _stopped(entry: Awaiting, loop: Loop, roster: DutyRoster) -> Decision | None:
    """Why the wait for this entry is over regardless of time (None: it is not)."""
    if acknowledged(loop, entry.seq):
        by = next(s for s in reversed(loop.steps) if s.seq >= entry.seq)
        return Decision("acknowledged", f"{by.step} by {by.actor} via {by.via}")
    policy = roster.escalation
    if policy is None:
        return Decision("disabled", "the roster has no escalation policy")
    if entry.alert.hazard.exercise and not policy.drills:
        return Decision("drill", "drills do not escalate")
    if policy.step(entry.alert.level) is None:
        return Decision("resolved", "the alert has no level left to acknowledge")
    return None


def decide(entry: Awaiting, loop: Loop, roster: DutyRoster, now: datetime) -> Decision:
    """Pure: escalate a due entry, keep waiting, or stop — with the reason."""
    stopped = _stopped(entry, loop, roster)
    if stopped is not None:
        return stopped
    assert roster.escalation is not None
    step = roster.escalation.step(entry.alert.level)
    assert step is not None
    if now < entry.due_at:
        return Decision("wait", "deadline not reached", next_due=entry.due_at)
    top = ADMIN_LEVELS.index(step.up_to)
    minutes = int((now - entry.noted_at).total_seconds() // 60)
    for index in range(entry.reached + 1, top + 1):
        level = ADMIN_LEVELS[index]
        targets = [o for o in officers_at(roster, entry.alert, level, now)
                   if o.id not in entry.told]
        if targets:
            return Decision(
                "escalate", f"not acknowledged {minutes} min after it was sent; telling the "
                f"{level} duty officer", level, tuple(targets),
                now + timedelta(minutes=step.ack_within_min))
    reached = ADMIN_LEVELS[entry.reached] if entry.reached >= 0 else "nobody"
    return Decision("exhausted", f"not acknowledged; no on-duty officer above {reached} "
                    f"up to {step.up_to}")


def _figure(alert: Alert) -> str:
    f = alert.hazard.key_figure
    value = f"{f.value:.2f}" if alert.hazard.hazard_type == "water_level" else f"{f.value:g}"
    return f"{f.name}{value}{f.unit}"


def escalation_text(alert: Alert, reached: int, minutes: int) -> str:
    """Pure: the escalation SMS. Two UCS-2 parts for a typical alert (≤134 characters).

    ``reached``: the highest level told so far, named as who did not acknowledge.
    """
    h = alert.hazard
    place = h.place
    names = {"village": place.village_name, "town": place.town_name,
             "district": place.district_name, "city": place.city_name}
    if reached >= 0:
        level = ADMIN_LEVELS[reached]
        who = names[level] or ADMIN_LEVEL_NAMES[level]
    else:
        who = "下级"
    kind = HAZARD_NAMES.get(h.hazard_type, "")
    prefix = DRILL_TAG + SENDER_TAG if h.exercise else SENDER_TAG
    return (f"{prefix}【升级】{alert.level.chinese}{kind}预警 {place.label}{h.source_name} "
            f"{_figure(alert)} {who}{minutes}分钟未确认 请督促处置 "
            f"回复1 {short_code(h.hazard_id)}确认")


@dataclasses.dataclass(frozen=True, slots=True)
class EscalationResult:
    """What :func:`escalate_due` did with one due entry (``outcome`` is a metric label:
    escalated, retry, busy, acknowledged, resolved, exhausted, disabled, drill, superseded)."""

    hazard_id: str
    alert_id: str
    outcome: str
    reason: str
    level: AdminLevel | None = None
    recipients: tuple[str, ...] = ()


# -- the Redis edge ------------------------------------------------------------------------------


async def read_awaiting(client: aioredis.Redis, hazard_id: str) -> Awaiting | None:
    raw = await client.get(await_key(hazard_id))
    return None if raw is None else Awaiting.from_json(raw)


async def note_sent(client: aioredis.Redis, alert: Alert, messages: Sequence[SmsMessage],
                    roster: DutyRoster, now: datetime) -> str:
    """After the sink delivered ``messages`` for ``alert``: start (or end) the wait for
    acknowledgement and remember, per phone, what it was sent. Returns the reason.

    Idempotent: call it for messages that were DELIVERED and for DUPLICATEs too (a worker may
    have died between the send and this note; the deadline is not reset by a second note).
    """
    if alert.transition in ASKING and alert.notify == "send":
        await remember_sent(client, alert, messages, now)
    told = [m.recipient_id for m in messages]

    def change(entry: Awaiting | None) -> tuple[bool, Awaiting | None, str]:
        new, reason = on_sent(entry, alert, told, roster, now)
        return new != entry, new, reason

    done, reason = await _update_awaiting(client, alert.hazard_id, change)
    if not done or reason is None:
        raise RuntimeError(f"could not note the send of {alert.alert_id}: too many writers")
    return reason


async def _replace_if_unchanged(client: aioredis.Redis, before: Awaiting,
                                after: Awaiting | None) -> bool:
    """Write ``after`` (None: remove) only if the stored entry is still ``before``."""

    def change(current: Awaiting | None) -> tuple[bool, Awaiting | None, bool]:
        return current == before, after, current == before

    done, replaced = await _update_awaiting(client, before.hazard_id, change)
    return done and bool(replaced)


async def _update_awaiting(
    client: aioredis.Redis, hazard_id: str,
    change: Callable[[Awaiting | None], tuple[bool, Awaiting | None, T]],
) -> tuple[bool, T | None]:
    """Compare-and-set of one hazard's awaiting entry (WATCH / MULTI): ``change`` gets the
    stored entry and says whether to write, what (None: remove) and what to answer.
    (False, None) when other writers kept changing it."""
    key = await_key(hazard_id)
    for _ in range(_ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                write, new, answer = change(None if raw is None else Awaiting.from_json(raw))
                if not write:
                    return True, answer
                pipe.multi()  # type: ignore[no-untyped-call]
                if new is None:
                    pipe.delete(key)
                    pipe.zrem(AWAITING_KEY, hazard_id)
                else:
                    pipe.set(key, new.to_json(), ex=AWAIT_TTL_S)
                    pipe.zadd(AWAITING_KEY, {hazard_id: new.due_at.timestamp()})
                await pipe.execute()
                return True, answer
            except WatchError:
                continue
    return False, None


async def escalate_due(client: aioredis.Redis, roster: DutyRoster, provider: SmsProvider,
                       now: datetime, limit: int = BATCH) -> list[EscalationResult]:
    """Handle every entry whose deadline has passed: escalate it, or drop it with the reason.

    Safe to run on every worker at once (see the module docstring). Raises ``RedisError`` if
    Redis is down (the next tick tries again; nothing is sent without its claim).
    """
    due = [m.decode() if isinstance(m, bytes) else str(m) for m in await client.zrangebyscore(
        AWAITING_KEY, "-inf", now.timestamp(), start=0, num=limit)]
    if not due:
        return []
    raws = await client.mget([await_key(h) for h in due])
    loops = await read_loops(client, due)
    results: list[EscalationResult] = []
    for hazard_id, raw in zip(due, raws, strict=True):
        if raw is None:  # expired or removed meanwhile
            await client.zrem(AWAITING_KEY, hazard_id)
            continue
        entry = Awaiting.from_json(raw)
        decision = decide(entry, loops.get(hazard_id, Loop()), roster, now)
        if decision.action == "wait":
            assert decision.next_due is not None
            await client.zadd(AWAITING_KEY, {hazard_id: decision.next_due.timestamp()})
            continue
        if decision.action != "escalate":
            await _replace_if_unchanged(client, entry, None)
            log.info("escalation of %s ends: %s", entry.alert_id, decision.reason)
            results.append(EscalationResult(hazard_id, entry.alert_id, decision.action,
                                            decision.reason))
            continue
        results.append(await _escalate(client, provider, roster, entry=entry,
                                       decision=decision, now=now))
    return results


async def _escalate(client: aioredis.Redis, provider: SmsProvider, roster: DutyRoster, *,
                    entry: Awaiting, decision: Decision, now: datetime) -> EscalationResult:
    assert decision.level is not None
    level = decision.level
    key = escalation_key(entry.alert_id)
    minutes = int((now - entry.noted_at).total_seconds() // 60)
    record = {"at": now.isoformat(), "from": ADMIN_LEVELS[entry.reached]
              if entry.reached >= 0 else None, "to": [o.id for o in decision.targets],
              "reason": decision.reason, "minutes": minutes}
    created = await client.hsetnx(key, level, orjson.dumps(record))
    await client.expire(key, ESCALATION_TTL_S)
    targets = list(decision.targets)
    if not created:  # recorded earlier (another worker, or before a retry): resume that step
        stored = orjson.loads(await client.hget(key, level) or b"{}")
        minutes = int(stored.get("minutes", minutes))
        known = [roster.get(i) for i in stored.get("to", [])]
        targets = [o for o in known if o is not None] or targets
    text = escalation_text(entry.alert, entry.reached, minutes)
    outcomes: dict[str, Outcome] = {}
    sent: list[SmsMessage] = []
    for officer in targets:
        message = SmsMessage(key=f"{entry.alert_id}/{officer.id}", alert_id=entry.alert_id,
                             recipient_id=officer.id, phone=officer.phone, text=text,
                             exercise=entry.alert.hazard.exercise)
        outcome = await _claim_and_send(client, provider, key, field=f"{level}/{officer.id}",
                                        message=message, now=now)
        if outcome == "busy":  # another worker is sending it right now: let it finish
            return EscalationResult(entry.hazard_id, entry.alert_id, "busy",
                                    "another worker is sending this step", level)
        outcomes[officer.id] = outcome
        if outcome == Outcome.DELIVERED:
            sent.append(message)
        log.warning("escalated %s to %s %s (%s): %s", entry.alert_id, level, officer.id,
                    masked(officer.phone), outcome.value)
    await remember_sent(client, entry.alert, sent, now)
    ids = tuple(o.id for o in targets)
    if any(o == Outcome.RETRY for o in outcomes.values()):
        await _replace_if_unchanged(client, entry, dataclasses.replace(
            entry, due_at=now + RETRY_AFTER))
        return EscalationResult(entry.hazard_id, entry.alert_id, "retry",
                                "the gateway refused for now; retrying", level, ids)
    anyone = any(o in (Outcome.DELIVERED, Outcome.DUPLICATE) for o in outcomes.values())
    advanced = dataclasses.replace(
        entry, told=tuple(dict.fromkeys((*entry.told, *ids))),
        reached=ADMIN_LEVELS.index(level), steps=entry.steps + 1,
        # nobody at this level could be reached: go on up at the next tick
        due_at=(decision.next_due or now) if anyone else now)
    if not await _replace_if_unchanged(client, entry, advanced):
        return EscalationResult(
            entry.hazard_id, entry.alert_id, "superseded",
            "the entry changed meanwhile (another worker, a newer transition)", level, ids)
    return EscalationResult(entry.hazard_id, entry.alert_id, "escalated", decision.reason,
                            level, ids)


async def _claim_and_send(client: aioredis.Redis, provider: SmsProvider, key: str, *,
                          field: str, message: SmsMessage,
                          now: datetime) -> Outcome | Literal["busy"]:
    """Send ``message`` unless its claim ``field`` in hash ``key`` is taken: never twice.

    A claim held as ``pending`` by someone else is "busy" for :data:`PENDING_STALE`; after
    that its sender is presumed dead and the message presumed sent (at most once beats twice).
    """
    if not await client.hsetnx(key, field, f"pending {now.timestamp():.0f}"):
        raw = await client.hget(key, field)
        held = (raw.decode() if isinstance(raw, bytes) else str(raw or "")).split()
        if held and held[0] == "pending":
            since = float(held[1]) if len(held) > 1 else 0.0
            if now.timestamp() - since < PENDING_STALE.total_seconds():
                return "busy"
        return Outcome.FAILED if held == ["failed"] else Outcome.DUPLICATE
    await client.expire(key, ESCALATION_TTL_S)
    try:
        outcome = (await provider.submit([message], now))[0]
    except OSError:
        outcome = Outcome.RETRY
    if outcome in (Outcome.DELIVERED, Outcome.FAILED):
        await client.hset(key, field, outcome.value)
    else:
        await client.hdel(key, field)  # not sent: the next attempt may claim it again
    return outcome


def deputy_for(entry: Awaiting | None, loop: Loop, roster: DutyRoster, *, alert_id: str,
               recipient_id: str, now: datetime) -> tuple[Officer | None, str]:
    """Pure: who takes an undeliverable message's place — the recipient's on-duty deputy,
    while the alert still awaits acknowledgement and the deputy was not told yet."""
    if entry is None or entry.alert_id != alert_id:
        return None, "not awaiting acknowledgement"
    officer = roster.get(recipient_id)
    deputy = None if officer is None or officer.deputy is None else roster.get(officer.deputy)
    why = ("acknowledged" if acknowledged(loop, entry.seq)
           else "not a roster officer" if officer is None
           else "no deputy" if deputy is None
           else "the deputy was told already" if deputy.id in entry.told
           else "the deputy is off duty" if not deputy.on_duty(now.astimezone(roster.tz))
           else None)
    if why is not None or deputy is None:
        return None, why or "no deputy"
    return deputy, f"undeliverable to {recipient_id}; telling the deputy {deputy.id}"


async def queue_undeliverable(client: aioredis.Redis, alert_id: str, recipient_id: str,
                              now: datetime) -> None:
    """Remember an undeliverable message; :func:`deputies_due` tells the deputy at the next
    tick (not in the receipt handler: the receipt may beat the sink's :func:`note_sent`, and
    the SMSC should not wait on a submit for its deliver_sm_resp)."""
    await client.zadd(UNDELIVERABLE_KEY, {f"{alert_id}/{recipient_id}": now.timestamp()},
                      nx=True)


async def deputies_due(client: aioredis.Redis, roster: DutyRoster, provider: SmsProvider,
                       now: datetime, *, text: Callable[[Alert], str] = render,
                       limit: int = BATCH) -> list[tuple[str, str, str]]:
    """Tell the deputies of undeliverable messages; (message key, outcome, reason) each, with
    outcome told, retry, waiting (the send is not noted yet) or skipped."""
    queued = cast(list[tuple[bytes, float]], await client.zrange(
        UNDELIVERABLE_KEY, 0, limit - 1, withscores=True))
    results: list[tuple[str, str, str]] = []
    for member, score in queued:
        item = member.decode() if isinstance(member, bytes) else str(member)
        alert_id, _, recipient_id = item.rpartition("/")
        hazard_id = alert_id.rpartition("#")[0] or alert_id
        entry = await read_awaiting(client, hazard_id)
        loop = (await read_loops(client, [hazard_id])).get(hazard_id, Loop())
        deputy, why = deputy_for(entry, loop, roster, alert_id=alert_id,
                                 recipient_id=recipient_id, now=now)
        if entry is None and now.timestamp() - float(score) < NOTE_GRACE.total_seconds():
            results.append((item, "waiting", "the send is not noted yet"))
            continue
        outcome = "skipped"
        if deputy is not None and entry is not None:
            outcome = await _tell_deputy(client, provider, entry, deputy=deputy,
                                         text=text(entry.alert), now=now)
        if outcome != "retry":
            await client.zrem(UNDELIVERABLE_KEY, item)
        if outcome == "told":
            log.warning("message %s to %s undeliverable; deputy %s told", alert_id,
                        recipient_id, deputy.id if deputy else "?")
        results.append((item, outcome, why))
    return results


async def _tell_deputy(client: aioredis.Redis, provider: SmsProvider, entry: Awaiting, *,
                       deputy: Officer, text: str, now: datetime) -> str:
    message = SmsMessage(key=f"{entry.alert_id}/{deputy.id}", alert_id=entry.alert_id,
                         recipient_id=deputy.id, phone=deputy.phone, text=text,
                         exercise=entry.alert.hazard.exercise)
    outcome = await _claim_and_send(client, provider, escalation_key(entry.alert_id),
                                    field=f"deputy/{deputy.id}", message=message, now=now)
    if outcome in ("busy", Outcome.RETRY):
        return "retry"
    if outcome != Outcome.DELIVERED:
        return "skipped"
    await remember_sent(client, entry.alert, [message], now)
    for _ in range(3):  # add the deputy to who was told (a lost race only costs a re-read)
        current = await read_awaiting(client, entry.hazard_id)
        if current is None or current.alert_id != entry.alert_id or \
                await _replace_if_unchanged(client, current, dataclasses.replace(
                    current, told=(*current.told, deputy.id))):
            break
    return "told"
