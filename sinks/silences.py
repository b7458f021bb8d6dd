"""The silences' store in Redis, shared by the wall's API (which writes them) and the
lifecycle stage (which reads them on a timer and marks matching alerts ``notify="silenced"``).

Keys (docs/redis-keys.md):

- ``onemap:silences``          hash: silence id → the silence's JSON
  (``onemap.rules.silences.Silence.to_dict``). Expired silences stay, for the record, until
  :func:`prune_silences` removes those ended long ago.
- channel ``onemap:silences``  the id of every silence added or expired, so every wall
  re-reads the list at once.

Decisions (what a silence matches, whether one is valid) are in ``onemap.rules.silences``;
this module only stores.
"""

from __future__ import annotations

import logging
from datetime import datetime

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from onemap.rules.silences import VALID, Silence, validate_silence

log = logging.getLogger(__name__)

SILENCES_KEY = "onemap:silences"
SILENCES_CHANNEL = "onemap:silences"
_ATTEMPTS = 20


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(sid: str, raw: bytes | str) -> Silence | None:
    try:
        return Silence.from_dict(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        # one bad entry must not stop the lifecycle stage from reading the others
        log.warning("ignoring silence %r in %s: %s", sid, SILENCES_KEY, exc)
        return None


async def read_silences(client: aioredis.Redis) -> list[Silence]:
    """Every stored silence (pending, active and expired), oldest start first."""
    raw = await client.hgetall(SILENCES_KEY)
    out = [s for k, v in raw.items() if (s := _parse(_text(k), v)) is not None]
    return sorted(out, key=lambda s: (s.starts_at, s.id))


async def add_silence(client: aioredis.Redis, silence: Silence) -> None:
    """Store a new silence and tell every wall. ValueError if it is invalid or its id is
    taken (a silence is never overwritten: its record stays as it was set)."""
    why = validate_silence(silence)
    if why != VALID:
        raise ValueError(why)
    if not await client.hsetnx(SILENCES_KEY, silence.id, orjson.dumps(silence.to_dict())):
        raise ValueError(f"a silence with id {silence.id!r} exists already")
    await client.publish(SILENCES_CHANNEL, silence.id)


async def expire_silence(client: aioredis.Redis, id: str, at: datetime) -> Silence | None:
    """End silence ``id`` at ``at`` (kept for the record); None if there is no such silence.

    A silence that ended before ``at`` keeps its end; one that has not started yet ends
    when it starts (it never was in force). Optimistic (WATCH / MULTI), like the loop store.
    """
    for _ in range(_ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(SILENCES_KEY)
                raw = await pipe.hget(SILENCES_KEY, id)
                if raw is None:
                    return None
                silence = _parse(id, raw)
                if silence is None:
                    return None
                end = max(silence.starts_at, min(silence.ends_at, at))
                if end == silence.ends_at:
                    return silence
                ended = Silence(silence.id, silence.matchers, silence.starts_at, end,
                                silence.created_by, silence.comment)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(SILENCES_KEY, id, orjson.dumps(ended.to_dict()))
                pipe.publish(SILENCES_CHANNEL, id)
                await pipe.execute()
                return ended
            except WatchError:
                continue
    raise RuntimeError(f"could not expire silence {id}: too many concurrent writers")


async def prune_silences(client: aioredis.Redis, ended_before: datetime) -> int:
    """Remove silences that ended before ``ended_before``; how many were removed."""
    old = [s.id for s in await read_silences(client) if s.ends_at < ended_before]
    if not old:
        return 0
    return int(await client.hdel(SILENCES_KEY, *old))
