"""Storm-protection state in Redis, shared by every worker and surviving restarts.

Why Redis and WATCH: two workers may hold messages for the same officer at the same moment
(alerts are partitioned by area, officers are not), and a restart must not forget what is
held. Each recipient's state is one JSON value updated with optimistic transactions
(WATCH / MULTI / EXEC, retried on conflict): the decision itself stays the pure Python of
``onemap.sinks.sms.storm`` instead of being written a second time in Lua.

Keys (docs/sms.md lists them with the rest of the SMS keys):

``onemap:sms:sent:<alert_id>/<recipient_id>``
    the idempotency claim of one message: ``pending`` while being submitted, ``held`` while
    waiting for a summary, then ``delivered`` / ``failed``, or ``<outcome> in <flush key>``
    once delivered inside a summary. 30 days.
``onemap:sms:sent:digest/<stream>/<recipient_id>/<seq>``
    the idempotency claim of one flush (summary or lone held message), same values.
``onemap:sms:storm:<stream>:<recipient_id>``
    the recipient's state (``RecipientState`` as JSON): recent sends per budget, held
    messages, the flush being delivered. No expiry while anything is held; otherwise it
    expires after twice the longest window (only the rate history is left).
``onemap:sms:storm:due``
    sorted set of ``<stream>:<recipient_id>``, scored by the Unix time their next flush is due,
    so ``tick`` finds its work without scanning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsProvider
from onemap.sinks.sms.storm import (
    Action,
    Decision,
    Outgoing,
    RecipientState,
    StormItem,
    StormLimits,
    Stream,
    apply,
    complete_flush,
    decide,
    next_due,
    plan_flush,
    release,
)

log = logging.getLogger(__name__)

SENT_KEY_PREFIX = "onemap:sms:sent:"
SENT_TTL_S = 30 * 24 * 3600
STATE_PREFIX = "onemap:sms:storm:"
DUE_KEY = "onemap:sms:storm:due"
#: A flush whose claim is still ``pending`` this long after it started was interrupted
#: mid-submit (its worker died): it is closed as ``unconfirmed``, never sent again.
STALE_FLUSH = timedelta(minutes=5)
#: attempts of one optimistic transaction before giving up (the caller retries later)
MAX_ATTEMPTS = 50
#: a claim still ``pending`` this long after it was taken belongs to a submit that died with
#: its worker (longer than any submit takes: the provider timeout times the parts)
PENDING_STALE_S = 120.0

T = TypeVar("T")


class ClaimInFlight(RuntimeError):
    """The message's claim is ``pending``: a submit is in flight elsewhere (retry later)."""


def state_key(stream: str, recipient_id: str) -> str:
    return f"{STATE_PREFIX}{stream}:{recipient_id}"


def due_member(stream: str, recipient_id: str) -> str:
    return f"{stream}:{recipient_id}"


def parse_member(member: bytes | str) -> tuple[Stream, str]:
    text = member.decode() if isinstance(member, bytes) else member
    stream, recipient_id = text.split(":", 1)
    return ("exercise" if stream == "exercise" else "actual"), recipient_id


class TransactionConflict(RuntimeError):
    """A state key kept changing under us for MAX_ATTEMPTS tries (treated as a transient
    failure: the message is retried)."""


class StormStore:
    """Decisions and flushes applied atomically to the recipients' state in Redis."""

    def __init__(self, client: aioredis.Redis, limits: Callable[[], StormLimits], *,
                 pending_stale_s: float = PENDING_STALE_S) -> None:
        self.client = client
        self.limits = limits
        self.pending_stale_s = pending_stale_s

    async def _transaction(self, keys: list[str],
                           body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``body`` with ``keys`` watched; ``body`` reads, then calls ``pipe.multi()`` and
        queues its writes (or returns without them). Retried when a watched key changed."""
        async with self.client.pipeline(transaction=True) as pipe:
            for _ in range(MAX_ATTEMPTS):
                try:
                    await pipe.watch(*keys)
                    result = await body(pipe)
                    if pipe.explicit_transaction:
                        await pipe.execute()
                    else:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                    return result
                except WatchError:
                    await pipe.reset()  # type: ignore[no-untyped-call]
                    continue
        raise TransactionConflict(f"state {keys[0]} changed {MAX_ATTEMPTS} times in a row")

    def _write_state(self, pipe: Pipeline, stream: str, recipient_id: str,
                     state: RecipientState, limits: StormLimits) -> None:
        key = state_key(stream, recipient_id)
        raw = state.to_json()
        if state.held or state.outgoing is not None:
            pipe.set(key, raw)
        else:
            pipe.set(key, raw, ex=max(3600, int(2 * limits.horizon.total_seconds())))
        due = next_due(state, limits)
        member = due_member(stream, recipient_id)
        if due is None:
            pipe.zrem(DUE_KEY, member)
        else:
            pipe.zadd(DUE_KEY, {member: due.timestamp()})

    async def admit(self, item: StormItem, phone: str, stream: Stream, recipient_id: str,
                    now: datetime) -> Decision | None:
        """Claim the message's idempotency key and decide, in one transaction.

        None: the key was claimed before (a retry or replay of something already sent or
        held). A ``send`` decision leaves the claim ``pending`` and a budget slot reserved:
        call :meth:`settle` with the submit's outcome. A held message's claim is ``held``.

        A claim ``pending`` for longer than ``pending_stale_s`` was left by a worker killed
        mid-submit: its slot is given back and the message decided afresh (so sent, perhaps
        a second time if the killed submit had reached the gateway: for an emergency alert
        better twice than never). A younger ``pending`` claim raises :class:`ClaimInFlight`:
        another worker is submitting it now; retry later.
        """
        limits = self.limits()
        skey = state_key(stream, recipient_id)
        claim = SENT_KEY_PREFIX + item.key

        async def body(pipe: Pipeline) -> Decision | None:
            held = await pipe.get(claim)
            state = RecipientState.from_json(await pipe.get(skey))
            if held is not None:
                if text_of(held) != "pending":
                    return None  # sent, failed or held: never again
                if SENT_TTL_S - await pipe.ttl(claim) < self.pending_stale_s:
                    raise ClaimInFlight(item.key)
                state = release(state, item.key)  # its submit died with its worker
            decision = decide(state, item, now, limits)
            if decision.action == Action.DUPLICATE:
                return decision
            new = apply(state, item, decision, now, limits, phone=phone)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(claim, "pending" if decision.action == Action.SEND else "held",
                     ex=SENT_TTL_S)
            self._write_state(pipe, stream, recipient_id, new, limits)
            return decision

        return await self._transaction([skey, claim], body)

    async def settle(self, item: StormItem, stream: Stream, recipient_id: str,
                     outcome: Outcome) -> None:
        """Record a submit's outcome; a transient failure gives the claim and the budget
        slot back so that the retry is decided afresh."""
        claim = SENT_KEY_PREFIX + item.key
        if outcome in (Outcome.DELIVERED, Outcome.FAILED):
            await self.client.set(claim, outcome.value, xx=True, ex=SENT_TTL_S)
            return
        limits = self.limits()
        skey = state_key(stream, recipient_id)

        async def body(pipe: Pipeline) -> None:
            state = RecipientState.from_json(await pipe.get(skey))
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.delete(claim)
            self._write_state(pipe, stream, recipient_id, release(state, item.key), limits)

        await self._transaction([skey], body)

    async def due(self, now: datetime) -> list[tuple[Stream, str]]:
        members = await self.client.zrangebyscore(DUE_KEY, "-inf", now.timestamp())
        return [parse_member(m) for m in members if isinstance(m, bytes | str)]

    async def begin_flush(self, stream: Stream, recipient_id: str,
                          now: datetime) -> tuple[Outgoing, str] | None:
        """Fix the flush due now (or the one already being delivered) in the state, so that
        every attempt sends the same text under the same key. Returns it with the phone."""
        limits = self.limits()
        skey = state_key(stream, recipient_id)

        async def body(pipe: Pipeline) -> tuple[Outgoing, str] | None:
            state = RecipientState.from_json(await pipe.get(skey))
            if state.outgoing is not None:
                return state.outgoing, state.phone
            outgoing = plan_flush(state, recipient_id, stream, now, limits)
            pipe.multi()  # type: ignore[no-untyped-call]
            if outgoing is None:  # not due after all (e.g. another worker just flushed)
                self._write_state(pipe, stream, recipient_id, state, limits)
                return None
            new = RecipientState(phone=state.phone, sent=state.sent, held=state.held,
                                 last_flush_at=state.last_flush_at, seq=state.seq,
                                 outgoing=outgoing)
            self._write_state(pipe, stream, recipient_id, new, limits)
            return outgoing, state.phone

        return await self._transaction([skey], body)

    async def finish_flush(self, stream: Stream, recipient_id: str, outgoing: Outgoing,
                           outcome: str, now: datetime) -> None:
        """The flush was delivered (or failed for good): its messages leave the state and
        each one's claim says in which flush it went."""
        limits = self.limits()
        skey = state_key(stream, recipient_id)

        async def body(pipe: Pipeline) -> None:
            state = RecipientState.from_json(await pipe.get(skey))
            if state.outgoing is None or state.outgoing.key != outgoing.key:
                return  # finished by another worker already
            pipe.multi()  # type: ignore[no-untyped-call]
            self._write_state(pipe, stream, recipient_id,
                              complete_flush(state, outgoing, now), limits)
            for key in outgoing.keys:
                pipe.set(SENT_KEY_PREFIX + key, f"{outcome} in {outgoing.key}", ex=SENT_TTL_S)

        await self._transaction([skey], body)

    async def state(self, stream: Stream, recipient_id: str) -> RecipientState:
        return RecipientState.from_json(await self.client.get(state_key(stream, recipient_id)))


class OutcomeNotRecorded(RedisError):
    """A submit's outcome could not be written to its claim (Redis went away while the
    message was at the gateway): the claim is still ``pending``. ``record()`` tries again;
    until it succeeds, the key looks in flight to everyone (never sent twice meanwhile)."""

    def __init__(self, key: str, outcome: Outcome,
                 record: Callable[[], Awaitable[None]]) -> None:
        super().__init__(f"the outcome of SMS {key} ({outcome.value}) is not recorded yet")
        self.key = key
        self.outcome = outcome
        self.record = record


async def record_outcome(client: aioredis.Redis, key: str, outcome: Outcome) -> None:
    """Write a submit's outcome to the claim of ``key`` taken by :func:`submit_once`: a
    transient one (retry, duplicate) releases it, so the next attempt may claim it again
    with the same key."""
    claim = SENT_KEY_PREFIX + key
    if outcome in (Outcome.RETRY, Outcome.DUPLICATE):
        await client.delete(claim)
    else:
        await client.set(claim, outcome.value, xx=True, ex=SENT_TTL_S)


async def take_claim(client: aioredis.Redis, key: str,
                     pending_stale_s: float | None = None) -> str | None:
    """Claim ``key`` (``onemap:sms:sent:<key>`` set to ``pending``): None when this call
    took it, else the value of the claim taken before (``pending``, ``delivered``...).

    With ``pending_stale_s``, a claim still ``pending`` that long after it was taken (its age
    read from its expiry, as :meth:`StormStore.admit` does) belongs to a submit that died
    with its worker: it is taken over (WATCH on the claim, so one worker only). Without it, a
    ``pending`` claim is returned like any other (summaries close theirs as ``unconfirmed``
    instead)."""
    claim = SENT_KEY_PREFIX + key
    if await client.set(claim, "pending", nx=True, ex=SENT_TTL_S):
        return None
    if pending_stale_s is None:
        return text_of(await client.get(claim))
    async with client.pipeline(transaction=True) as pipe:
        for _ in range(MAX_ATTEMPTS):
            try:
                await pipe.watch(claim)
                held = await pipe.get(claim)
                if held is not None:
                    value = text_of(held)
                    age = SENT_TTL_S - await pipe.ttl(claim)
                    if value != "pending" or age < pending_stale_s:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return value
                    log.warning("SMS %s: claim pending for %d s, its submit presumed dead "
                                "with its worker; sent again", key, age)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(claim, "pending", ex=SENT_TTL_S)
                await pipe.execute()
                return None
            except WatchError:  # taken, settled or released meanwhile: look again
                await pipe.reset()  # type: ignore[no-untyped-call]
    return "pending"  # kept changing under us: in flight, as far as we can tell


async def submit_once(client: aioredis.Redis, provider: SmsProvider, message: SmsMessage,
                      now: datetime, *, pending_stale_s: float | None = None) -> Outcome | str:
    """Submit ``message`` under its idempotency claim ``onemap:sms:sent:<key>``.

    Returns the submit's outcome, or the claim's value (a ``str``: ``pending``,
    ``delivered``...) when the key was claimed before, and then sends nothing; with
    ``pending_stale_s``, a claim ``pending`` for longer than that is taken over and the
    message submitted (:func:`take_claim`). A delivered or failed submit is recorded on the
    claim; a transient one (retry, duplicate) releases it (:func:`record_outcome`). Raises
    :class:`OutcomeNotRecorded` (a RedisError) when the outcome could not be recorded.
    """
    held = await take_claim(client, message.key, pending_stale_s)
    if held is not None:
        return held
    try:
        outcome = (await provider.submit([message], now))[0]
    except OSError:
        outcome = Outcome.RETRY
    try:
        await record_outcome(client, message.key, outcome)
    except RedisError as exc:
        raise OutcomeNotRecorded(message.key, outcome, functools.partial(
            record_outcome, client, message.key, outcome)) from exc
    return outcome


def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
