"""Worker health: consumer lag, feed activity and live hazards, for Prometheus and the wall.

The computations are pure functions over plain values (tested in tests/test_health.py);
``HealthMonitor`` is the thin shell the faust app calls: it records what each ingest batch
saw and, on a timer, reads the consumer's offsets and the alert table, sets the gauges and
writes the feed-health hash ``onemap:feeds`` that the wall display reads (format in
docs/dashboard.md).

Several workers share one ``onemap:feeds`` hash, each seeing only its own partitions, so the
write is a merge done in Redis (one script call per tick): the newest ``last_record_at`` and
``last_observed_at`` win and ``records_total`` adds each worker's increment.
``records_per_min`` and ``silent_sources`` are those of the worker that wrote last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from faust.sensors import Sensor
from redis.exceptions import RedisError

from onemap.levels import WarningLevel
from onemap.metrics import PipelineMetrics
from onemap.records import Observation
from onemap.streams.context import WorkerContext

log = logging.getLogger(__name__)

FEEDS_KEY = "onemap:feeds"  # the same key as onemap.sinks.dashboard.state.FEEDS_KEY
HEALTH_INTERVAL_S = 5.0
#: How long a feed may send nothing before the wall shows it silent (静默); the same 15 minutes
#: as the OneMapFeedSilent alert rule.
DEFAULT_SILENT_AFTER_S = 900.0
RATE_WINDOW_S = 60.0

TopicPartition = tuple[str, int]

# KEYS[1] the hash; ARGV, five per feed: feed, last_record_at, last_observed_at ('' for none),
# records since the last write, the other fields as a JSON object. The JSON is put together
# as text, not by cjson.encode, which would turn an empty list into {}.
_MERGE_FEEDS = """
for i = 1, #ARGV, 5 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local ok, old = pcall(cjson.decode, raw or '{}')
  if not ok or type(old) ~= 'table' then old = {} end
  local out = '{'
  for n, field in ipairs({'last_record_at', 'last_observed_at'}) do
    local a, b = old[field], ARGV[i + n]
    if b == '' then b = cjson.null end
    if type(a) == 'string' and (type(b) ~= 'string' or a > b) then b = a end
    out = out .. cjson.encode(field) .. ':' .. cjson.encode(b) .. ','
  end
  local total = (tonumber(old['records_total']) or 0) + tonumber(ARGV[i + 3])
  out = out .. '"records_total":' .. string.format('%d', total)
  local rest = string.match(ARGV[i + 4], '^%s*{%s*(.-)%s*}%s*$')
  if rest ~= '' then out = out .. ',' .. rest end
  redis.call('HSET', KEYS[1], ARGV[i], out .. '}')
end
return #ARGV / 5
"""


# --- pure ----------------------------------------------------------------------------------

@dataclasses.dataclass
class FeedActivity:
    """What one worker has seen of one feed. Times are Unix seconds."""

    last_event_s: float | None = None
    last_received_s: float | None = None
    records_total: int = 0
    unsaved: int = 0  # records not yet added to the shared ``records_total`` in Redis
    recent: deque[tuple[float, int]] = dataclasses.field(default_factory=deque)

    def saw(self, count: int, event_times: Iterable[float], received_s: float) -> None:
        newest = max(event_times, default=None)
        if newest is not None and (self.last_event_s is None or newest > self.last_event_s):
            self.last_event_s = newest
        self.last_received_s = received_s
        self.records_total += count
        self.unsaved += count
        self.recent.append((received_s, count))
        self.forget_before(received_s - RATE_WINDOW_S)

    def forget_before(self, cutoff_s: float) -> None:
        while self.recent and self.recent[0][0] < cutoff_s:
            self.recent.popleft()

    def records_per_min(self, now_s: float) -> float:
        cutoff = now_s - RATE_WINDOW_S
        return float(sum(n for t, n in self.recent if t >= cutoff)) * 60.0 / RATE_WINDOW_S


def iso(ts: float | None) -> str | None:
    """Unix seconds as the ISO-8601 UTC text the dashboard parses (fixed width, so texts of
    the same field compare in time order)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def feed_health(activity: Mapping[str, FeedActivity], silent_sources: Iterable[str],
                now_s: float, silent_after_s: float = DEFAULT_SILENT_AFTER_S,
                ) -> dict[str, dict[str, Any]]:
    """Feed name -> the ``onemap:feeds`` JSON object of that feed.

    ``silent_sources`` are ``feed:source_id`` keys (as the rules stage tracks them); each feed
    lists its own source ids, sorted. A feed with silent sources but no records yet still
    gets an entry.

    >>> a = FeedActivity()
    >>> a.saw(3, [1_700_000_000.0], received_s=1_700_000_060.0)
    >>> h = feed_health({"water": a}, ["water:ZH-1"], now_s=1_700_000_070.0)["water"]
    >>> h["last_record_at"], h["records_total"], h["records_per_min"], h["silent_sources"]
    ('2023-11-14T22:14:20.000+00:00', 3, 3.0, ['ZH-1'])
    """
    silent: dict[str, list[str]] = {}
    for key in silent_sources:
        feed, _, source = key.partition(":")
        silent.setdefault(feed, []).append(source)
    out: dict[str, dict[str, Any]] = {}
    for feed in sorted({*activity, *silent}):
        act = activity.get(feed) or FeedActivity()
        out[feed] = {
            "last_record_at": iso(act.last_received_s),
            "last_observed_at": iso(act.last_event_s),
            "records_total": act.records_total,
            "silent_after_s": silent_after_s,
            "records_per_min": round(act.records_per_min(now_s), 2),
            "silent_sources": sorted(silent.get(feed, [])),
        }
    return out


def consumer_lag(assigned: Iterable[TopicPartition], topics: Iterable[str],
                 highwater: Callable[[TopicPartition], int | None],
                 committed: Callable[[TopicPartition], int | None],
                 ) -> dict[TopicPartition, int]:
    """Records left to process per assigned partition of ``topics``: highwater - committed.

    A partition whose end is not known yet is left out; one with nothing committed counts
    from offset 0 (the group reads from the earliest). Never negative (a broker's end offset
    can read a little behind the consumer's position).
    """
    wanted = set(topics)
    out: dict[TopicPartition, int] = {}
    for tp in assigned:
        if tp[0] not in wanted:
            continue  # changelog and repartition topics: not this group's backlog
        end = highwater(tp)
        if end is None:
            continue
        out[tp] = max(0, end - (committed(tp) or 0))
    return out


def live_hazards(entries: Iterable[tuple[str, Any]], partitions: Iterable[int] | None,
                 ) -> dict[tuple[str, str], int]:
    """(level label, hazard type) -> open hazards, from the lifecycle's alert state.

    ``entries`` are (hazard_id, state) pairs; the hazard id starts with its type
    (``water_level:ZH-TIDE-005``). Only states of ``partitions`` count (the worker's active
    ones, so standby copies are not counted twice); ``None`` counts every state.

    >>> live_hazards([("water_level:A", {"open": True, "level": 4, "partition": 0}),
    ...               ("water_level:B", {"open": False, "level": 2, "partition": 0}),
    ...               ("rain:C", {"open": True, "level": 2, "partition": 1})], [0])
    {('red', 'water_level'): 1}
    """
    keep = None if partitions is None else set(partitions)
    tally: Tally[tuple[str, str]] = Tally()
    for hazard_id, st in entries:
        if not isinstance(st, dict) or not st.get("open"):
            continue
        if keep is not None and int(st.get("partition", 0)) not in keep:
            continue
        tally[(WarningLevel(int(st["level"])).label, hazard_id.partition(":")[0])] += 1
    return dict(tally)


class SettableGauge(Protocol):
    def labels(self, *values: str) -> Any: ...
    def remove(self, *values: str) -> None: ...


def sync_gauge(gauge: SettableGauge, values: Mapping[tuple[str, ...], float],
               previous: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Set each labelled value, drop label sets that are gone; returns the label sets now
    shown. Values are set before stale ones are removed, so a scrape never sees a gap."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for labels in previous - set(values):
        gauge.remove(*labels)
    return set(values)


# --- the shell the faust app calls ------------------------------------------------------------

class BrokerErrorSensor(Sensor):
    """Counts failed sends to Kafka (faust reports them to its sensors)."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        super().__init__()
        self.m = metrics

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.m.broker_errors.labels("send").inc()


class BrokerProbe:
    """Does the Kafka broker answer? One metadata request, on a client of its own.

    faust's clients run in their own threads and retry on their own while the broker is
    gone (test_broker_restart.py: nothing counts an error), so the worker asks for itself.
    The client is kept between probes and reconnects by itself; one that never connected
    is closed and made again next time.
    """

    def __init__(self, bootstrap_servers: Sequence[str], timeout_s: float = 3.0) -> None:
        self.bootstrap_servers = list(bootstrap_servers)
        self.timeout_s = timeout_s
        self._client: AIOKafkaClient | None = None

    async def answers(self) -> bool:
        try:
            if self._client is None:
                client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers,
                                        request_timeout_ms=int(self.timeout_s * 1000))
                try:
                    await asyncio.wait_for(client.bootstrap(), self.timeout_s)
                except BaseException:
                    await client.close()
                    raise
                self._client = client
            await asyncio.wait_for(self._client.fetch_all_metadata(), self.timeout_s)
            return True
        except (KafkaError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class HealthMonitor:
    """Feeds the health gauges and ``onemap:feeds`` from one worker's faust app."""

    def __init__(self, app: Any, ctx: WorkerContext, topics: Sequence[str], alert_state: Any,
                 *, hazards_topic: str, redis_client: aioredis.Redis | None = None) -> None:
        self.app = app
        self.ctx = ctx
        self.m = ctx.metrics
        self.topics = list(topics)
        self.alert_state = alert_state
        self.hazards_topic = hazards_topic
        self.activity: dict[str, FeedActivity] = {}
        self._lag_labels: set[tuple[str, ...]] = set()
        self._hazard_labels: set[tuple[str, ...]] = set()
        self._redis = redis_client
        self.broker = BrokerProbe(ctx.settings.bootstrap_servers)
        #: the lag of partitions consumed outside faust (the ingest loop's), if any
        self.extra_lag: Callable[[], Awaitable[dict[TopicPartition, int]]] | None = None
        app.sensors.add(BrokerErrorSensor(self.m))

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:  # made on first use, inside the worker's event loop
            self._redis = aioredis.Redis.from_url(self.ctx.settings.redis_url,
                                                  socket_timeout=5)
        return self._redis

    def saw(self, feed: str, count: int, observations: Sequence[Observation]) -> None:
        """Called by the ingest shell for every batch it consumed."""
        received = self.ctx.now().timestamp()
        act = self.activity.setdefault(feed, FeedActivity())
        act.saw(count, (o.event_seconds() for o in observations), received)
        self.m.feed_last_received.labels(feed).set(received)
        if act.last_event_s is not None:
            self.m.feed_last_event.labels(feed).set(act.last_event_s)

    async def tick(self) -> None:
        """The timer: every step guarded, so one failing part never stops the others."""
        self.m.broker_up.set(1 if await self.broker.answers() else 0)
        try:
            await self.update_lag()
        except Exception:  # the broker unreachable, a rebalance in flight ...
            self.m.broker_errors.labels("offsets").inc()
            log.warning("consumer lag not updated", exc_info=True)
        try:
            self.update_live_hazards()
        except Exception:
            log.warning("live hazards not updated", exc_info=True)
        await self.write_feed_health()

    async def update_lag(self) -> None:
        consumer = self.app.consumer
        assigned = [(tp.topic, tp.partition) for tp in consumer.assignment()]
        by_key = {(tp.topic, tp.partition): tp for tp in consumer.assignment()}
        committed: dict[TopicPartition, int | None] = {}
        for key, tp in by_key.items():
            offset = consumer._committed_offset.get(tp)
            if offset is None and key[0] in self.topics:
                offset = await consumer.position(tp)  # nothing committed yet this session
            committed[key] = offset
        lag = consumer_lag(assigned, self.topics, lambda k: consumer.highwater(by_key[k]),
                           committed.get)
        if self.extra_lag is not None:
            lag.update(await self.extra_lag())
        self._lag_labels = sync_gauge(
            self.m.consumer_lag, {(t, str(p)): float(n) for (t, p), n in lag.items()},
            self._lag_labels)

    def update_live_hazards(self) -> None:
        actives = self.app.assignor.assigned_actives()
        partitions = [tp.partition for tp in actives if tp.topic == self.hazards_topic]
        counts = live_hazards(list(self.alert_state.items()), partitions)
        self._hazard_labels = sync_gauge(
            self.m.hazards_live, {k: float(v) for k, v in counts.items()}, self._hazard_labels)

    async def write_feed_health(self) -> None:
        now_s = self.ctx.now().timestamp()
        health = feed_health(self.activity, self.ctx.rules.silenced, now_s)
        if not health:
            return
        sent = {feed: act.unsaved for feed, act in self.activity.items()}
        args: list[str | int] = []
        for feed, value in health.items():
            merged = ("last_record_at", "last_observed_at", "records_total")
            rest = {k: v for k, v in value.items() if k not in merged}
            args += [feed, value["last_record_at"] or "", value["last_observed_at"] or "",
                     sent.get(feed, 0), json.dumps(rest, ensure_ascii=False)]
        try:
            await self.redis.eval(_MERGE_FEEDS, 1, FEEDS_KEY, *args)
        except RedisError:
            self.m.redis_errors.labels("feed-health").inc()
            log.warning("feed health not written to Redis", exc_info=True)
            return
        for feed, count in sent.items():  # records seen during the write stay unsaved
            self.activity[feed].unsaved -= count
