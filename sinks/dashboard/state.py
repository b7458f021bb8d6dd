"""Live dashboard state in Redis, written idempotently from the alert ledger.

Key layout (all under ``onemap:``; documented in docs/redis-keys.md):

- ``onemap:alert:<hazard_id>``   hash ``seq``, ``alert`` (latest transition JSON); a resolved
  alert expires after ``RESOLVED_TTL_S``.
- ``onemap:alerts:open:<status>`` sorted set of open hazard ids by urgency score
  (``status`` is ``actual`` or ``exercise``: drills never mix with real alerts).
- ``onemap:ticker:<status>``     list of the latest transitions, newest first, capped.
- ``onemap:updated_at``          ISO time of the last state change.
- channel ``onemap:events``      every applied transition is published for live push.
- ``onemap:feeds``               hash: feed name → JSON health of that feed
  (``last_record_at``, ``last_observed_at``, ``records_total``, ``silent_after_s``,
  ``records_per_min``, ``silent_sources``), written by every worker (streams/health.py).

A transition is applied only if its ``seq`` is newer than the stored one, so replays and
retries are harmless and out-of-order delivery cannot roll the state back.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from onemap.errors import ComponentError
from onemap.records import Alert
from onemap.sinks.base import Outcome

PREFIX = "onemap:"
EVENTS_CHANNEL = "onemap:events"
TICKER_LENGTH = 500
RESOLVED_TTL_S = 24 * 3600

_APPLY = """
local cur = redis.call('HGET', KEYS[1], 'seq')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'alert', ARGV[2])
if ARGV[3] == 'resolved' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
else
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
redis.call('SET', KEYS[4], ARGV[8])
redis.call('PUBLISH', KEYS[5], ARGV[2])
return 1
"""


def alert_key(hazard_id: str) -> str:
    return f"{PREFIX}alert:{hazard_id}"


def open_key(status: str) -> str:
    return f"{PREFIX}alerts:open:{status}"


def ticker_key(status: str) -> str:
    return f"{PREFIX}ticker:{status}"


UPDATED_AT_KEY = f"{PREFIX}updated_at"
FEEDS_KEY = f"{PREFIX}feeds"


class RedisStateSink:
    """Writes each alert transition into the dashboard's Redis state."""

    name = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._apply = client.register_script(_APPLY)

    async def check(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise ComponentError(f"Redis is not reachable ({exc}); start it or set --redis") \
                from exc

    async def send(self, batch: Sequence[Alert]) -> list[Outcome]:
        """Apply a batch in one pipeline; RETRY for all on a Redis error."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for alert in batch:
                    payload = alert.to_json()
                    await self._apply(
                        keys=[alert_key(alert.hazard_id), open_key(alert.status),
                              ticker_key(alert.status), UPDATED_AT_KEY, EVENTS_CHANNEL],
                        args=[alert.seq, payload, alert.transition, alert.hazard_id,
                              alert.score, TICKER_LENGTH, RESOLVED_TTL_S,
                              alert.issued_at.isoformat()],
                        client=pipe)
                applied = await pipe.execute()
        except RedisError:
            return [Outcome.RETRY] * len(batch)
        return [Outcome.DELIVERED if ok else Outcome.DUPLICATE for ok in applied]

    async def close(self) -> None:
        await self.client.aclose()


async def read_open_alerts(client: aioredis.Redis, status: str, limit: int = 200) -> list[bytes]:
    """Open alerts, most urgent first (ties: hazard id), as stored JSON."""
    ids = await client.zrevrange(open_key(status), 0, limit - 1)
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for hazard_id in ids:
            pipe.hget(alert_key(_text(hazard_id)), "alert")
        rows = await pipe.execute()
    return [row for row in rows if row is not None]


async def read_all_open_alerts(client: aioredis.Redis, status: str,
                               chunk: int = 2000) -> list[bytes]:
    """Every open alert of ``status``, most urgent first, read in pipelined chunks."""
    ids = await client.zrevrange(open_key(status), 0, -1)
    rows: list[bytes] = []
    for start in range(0, len(ids), chunk):
        async with client.pipeline(transaction=False) as pipe:
            for hazard_id in ids[start:start + chunk]:
                pipe.hget(alert_key(_text(hazard_id)), "alert")
            rows.extend(row for row in await pipe.execute() if row is not None)
    return rows


async def read_alert(client: aioredis.Redis, hazard_id: str) -> bytes | None:
    """The latest transition of one hazard (open, or resolved within the last day)."""
    row = await client.hget(alert_key(hazard_id), "alert")
    return None if row is None else _bytes(row)


async def read_ticker(client: aioredis.Redis, status: str, count: int = 30) -> list[bytes]:
    """The latest ``count`` transitions of ``status``, newest first."""
    return [_bytes(r) for r in await client.lrange(ticker_key(status), 0, count - 1)]


async def read_updated_at(client: aioredis.Redis) -> str | None:
    value = await client.get(UPDATED_AT_KEY)
    return None if value is None else _text(value)


async def read_feed_health(client: aioredis.Redis) -> dict[str, bytes]:
    """Feed name → health JSON from ``onemap:feeds`` (empty until the worker writes it)."""
    raw = await client.hgetall(FEEDS_KEY)
    return {_text(k): _bytes(v) for k, v in raw.items()}


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
