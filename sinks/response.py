"""The closed loop's store in Redis: every step taken on an alert, shared by the wall's API,
the SMS reply handler and the escalation of unacknowledged alerts.

Keys (docs/redis-keys.md):

- ``onemap:response:<hazard_id>``  string: the loop JSON (``{"current", "steps": [...]}``);
  kept 30 days after the last step.
- channel ``onemap:response``        every accepted step, ``{"hazard_id", "loop"}`` JSON, for
  the wall's live push.

A step is checked by the pure :func:`onemap.rules.response.apply_step` and written with an
optimistic transaction (WATCH / MULTI), so two operators acting at once cannot lose a step.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from onemap.rules.response import Loop, Step, apply_step

RESPONSE_PREFIX = "onemap:response:"
RESPONSE_CHANNEL = "onemap:response"
RESPONSE_TTL_S = 30 * 24 * 3600
_ATTEMPTS = 20


def response_key(hazard_id: str) -> str:
    return f"{RESPONSE_PREFIX}{hazard_id}"


async def read_loop(client: aioredis.Redis, hazard_id: str) -> Loop:
    """The loop of one alert (empty if nobody acted on it yet)."""
    raw = await client.get(response_key(hazard_id))
    return Loop() if raw is None else Loop.from_dict(orjson.loads(raw))


async def read_loops(client: aioredis.Redis, hazard_ids: list[str]) -> dict[str, Loop]:
    """The loops of many alerts in one round trip; alerts nobody acted on are left out."""
    if not hazard_ids:
        return {}
    rows = await client.mget([response_key(h) for h in hazard_ids])
    return {h: Loop.from_dict(orjson.loads(r)) for h, r in zip(hazard_ids, rows, strict=True)
            if r is not None}


async def record_step(client: aioredis.Redis, hazard_id: str, step: Step) -> tuple[Loop, str]:
    """Apply ``step`` to the stored loop; returns the loop and the reason ('accepted',
    'already' or why it was refused). Raises ``redis.exceptions.RedisError`` if Redis is down
    (the caller says so to the user: nothing was recorded)."""
    key = response_key(hazard_id)
    for _ in range(_ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                loop = Loop() if raw is None else Loop.from_dict(orjson.loads(raw))
                new, why = apply_step(loop, step)
                if why != "accepted":
                    return loop, why
                payload = orjson.dumps(new.to_dict())
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, payload, ex=RESPONSE_TTL_S)
                pipe.publish(RESPONSE_CHANNEL, orjson.dumps(
                    {"hazard_id": hazard_id, "loop": new.to_dict()}))
                await pipe.execute()
                return new, why
            except WatchError:
                continue
    raise RuntimeError(f"could not record a step on {hazard_id}: too many concurrent writers")
