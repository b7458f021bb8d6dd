"""The dashboard's live view of Redis: an in-memory mirror of the open alerts, and the push hub.

Why a mirror: the wall shows every open hazard as a marker (10,000 in a storm), the top-K, the
area colours and the counts, and every browser must get all of it at once when it connects.
Reading 10,000 alerts from Redis per browser and per change would not keep up, so one task per
dashboard process follows the ``onemap:events`` channel and applies each transition to
:class:`LiveState` (guarded by ``seq``, exactly like the worker's writer), re-reads the whole
state from Redis after every (re)connection and every ``resync_s`` as a safety net, and pushes
to browsers:

- ``state``  the full snapshot (summary, markers, ticker), sent to a browser when it connects;
- ``update`` at most every ``flush_s``: marker changes, new ticker lines and a fresh summary.

Redis publishes inside the same script that writes the state, so the order of messages is the
order of the writes; a snapshot taken after subscribing, with later messages applied on top by
``seq``, converges to Redis's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from onemap.levels import WarningLevel
from onemap.sinks.dashboard import areas
from onemap.sinks.dashboard.state import (
    EVENTS_CHANNEL,
    read_all_open_alerts,
    read_feed_health,
    read_ticker,
    read_updated_at,
)

log = logging.getLogger(__name__)

TOP_K: Final = 50
TICKER_KEEP: Final = 40
TICKER_PER_UPDATE: Final = 40
#: Feeds the wall always lists, with their Chinese names, even before any alert from them.
KNOWN_FEEDS: Final = {"weather": "气象监测", "water": "水文监测", "geohazard": "地灾监测",
                      "incident": "突发事件", "cap": "预警发布(CAP)"}
#: A feed whose health record does not say how long it may be silent.
DEFAULT_SILENT_AFTER_S: Final = 900.0

Alert = dict[str, Any]
Marker = list[Any]


def marker(alert: Alert) -> Marker:
    """Compact map marker: [hazard_id, lon, lat, level (0-4), hazard_type, score]."""
    h = alert["hazard"]
    return [alert["hazard_id"], h["lon"], h["lat"], int(WarningLevel.parse(alert["level"])),
            h["hazard_type"], alert["score"]]


def _rank_key(alert: Alert) -> tuple[float, str]:
    return (float(alert["score"]), alert["hazard_id"])


def _later(a: str | None, b: str | None) -> str | None:
    if not a:
        return b
    if not b:
        return a
    return a if _parse_time(a) >= _parse_time(b) else b


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


class LiveState:
    """Open alerts by status, the latest actual transitions and what each feed last sent."""

    def __init__(self, districts: Iterable[tuple[str, str]] = ()) -> None:
        self.districts = list(districts)
        self.open: dict[str, dict[str, Alert]] = {"actual": {}, "exercise": {}}
        self.seq: dict[str, int] = {}
        self.ticker: deque[Alert] = deque(maxlen=TICKER_KEEP)
        self.feeds_seen: dict[str, dict[str, str | None]] = {}
        self.feed_health: dict[str, dict[str, Any]] = {}
        self.updated_at: str | None = None
        self.live = False

    # -- changes -------------------------------------------------------------------------

    def replace(self, actual: list[Alert], exercise: list[Alert], ticker: list[Alert],
                history: Iterable[Alert], updated_at: str | None) -> dict[str, Marker | None]:
        """Take a fresh snapshot from Redis; returns the marker changes against the old one."""
        before = {k: marker(a) for k, a in self.open["actual"].items()}
        self.open = {"actual": {a["hazard_id"]: a for a in actual},
                     "exercise": {a["hazard_id"]: a for a in exercise}}
        self.seq = {a["hazard_id"]: int(a["seq"]) for a in (*actual, *exercise)}
        self.ticker = deque(ticker[:TICKER_KEEP], maxlen=TICKER_KEEP)
        self.feeds_seen = {}
        for a in (*actual, *exercise, *history):
            self._saw(a)
        self.updated_at = updated_at
        after = {k: marker(a) for k, a in self.open["actual"].items()}
        changes: dict[str, Marker | None] = {k: m for k, m in after.items() if before.get(k) != m}
        changes.update({k: None for k in before if k not in after})
        return changes

    def apply(self, alert: Alert) -> bool:
        """Apply one transition unless an equal or newer ``seq`` was applied already."""
        hazard_id = alert["hazard_id"]
        seq = int(alert["seq"])
        if self.seq.get(hazard_id, 0) >= seq:
            return False
        self.seq[hazard_id] = seq
        status = "exercise" if alert.get("status") == "exercise" else "actual"
        if alert["transition"] == "resolved":
            self.open[status].pop(hazard_id, None)
        else:
            self.open[status][hazard_id] = alert
        if status == "actual":
            self.ticker.appendleft(alert)
        self._saw(alert)
        self.updated_at = _later(self.updated_at, alert.get("issued_at"))
        return True

    def _saw(self, alert: Alert) -> None:
        h = alert["hazard"]
        seen = self.feeds_seen.setdefault(h["feed"], {"last_alert_at": None,
                                                      "last_observed_at": None})
        seen["last_alert_at"] = _later(seen["last_alert_at"], alert.get("issued_at"))
        seen["last_observed_at"] = _later(seen["last_observed_at"], h.get("observed_at"))

    # -- views ---------------------------------------------------------------------------

    def markers(self) -> list[Marker]:
        return [marker(a) for a in self.open["actual"].values()]

    def area_levels(self) -> dict[str, str]:
        return {code: level.label
                for code, level in areas.area_levels(self.open["actual"].values()).items()}

    def top(self, status: str = "actual", k: int = TOP_K) -> list[Alert]:
        return heapq.nlargest(k, self.open[status].values(), key=_rank_key)

    def feeds(self, now: datetime) -> list[dict[str, Any]]:
        names = {**KNOWN_FEEDS, **{f: f for f in (*self.feeds_seen, *self.feed_health)
                                   if f not in KNOWN_FEEDS}}
        open_by_feed: dict[str, int] = {}
        for a in self.open["actual"].values():
            open_by_feed[a["hazard"]["feed"]] = open_by_feed.get(a["hazard"]["feed"], 0) + 1
        out = []
        for feed, name in names.items():
            seen = self.feeds_seen.get(feed, {})
            health = self.feed_health.get(feed)
            silent: bool | None = None
            if health and health.get("last_record_at"):
                limit = float(health.get("silent_after_s") or DEFAULT_SILENT_AFTER_S)
                age = (now - _parse_time(str(health["last_record_at"]))).total_seconds()
                silent = age > limit
            out.append({"feed": feed, "name": name, "open": open_by_feed.get(feed, 0),
                        "last_alert_at": seen.get("last_alert_at"),
                        "last_observed_at": seen.get("last_observed_at"),
                        "health": health, "silent": silent})
        return out

    def summary(self, now: datetime) -> dict[str, Any]:
        actual = self.open["actual"].values()
        by_district = areas.district_counts(actual)
        zero = {c: 0 for c in ("blue", "yellow", "orange", "red")}
        districts = [{"code": code, "name": name, "counts": by_district.get(code, zero)}
                     for code, name in self.districts]
        if "" in by_district:
            districts.append({"code": "", "name": "辖区外", "counts": by_district[""]})
        return {
            "updated_at": self.updated_at,
            "served_at": now.isoformat(),
            "live": self.live,
            "open_total": len(self.open["actual"]),
            "top": self.top("actual"),
            "drill_total": len(self.open["exercise"]),
            "drills": self.top("exercise"),
            "levels": areas.level_counts(actual),
            "districts": districts,
            "areas": self.area_levels(),
            "feeds": self.feeds(now),
        }

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Everything a browser needs on connect."""
        return {**self.summary(now), "markers": self.markers(), "ticker": list(self.ticker)}


Queue = asyncio.Queue[bytes | None]


class Hub:
    """Follows Redis, keeps :class:`LiveState` current and fans events out to browsers."""

    def __init__(self, client: aioredis.Redis, state: LiveState, *,
                 flush_s: float = 0.15, tick_s: float = 5.0, resync_s: float = 30.0,
                 queue_size: int = 256, on_error: Callable[[], None] | None = None) -> None:
        self.client = client
        self.state = state
        self.flush_s = flush_s
        self.tick_s = tick_s
        self.resync_s = resync_s
        self.queue_size = queue_size
        self.on_error = on_error
        self.clients: set[Queue] = set()
        self.ready = asyncio.Event()
        self._markers: dict[str, Marker | None] = {}
        self._ticker: list[Alert] = []

    # -- browsers --------------------------------------------------------------------------

    def subscribe(self) -> Queue:
        q: Queue = asyncio.Queue(self.queue_size)
        self.clients.add(q)
        return q

    def unsubscribe(self, q: Queue) -> None:
        self.clients.discard(q)

    def state_event(self) -> bytes:
        return _event("state", self.state.snapshot(datetime.now(UTC)))

    def _broadcast(self, data: bytes) -> None:
        for q in list(self.clients):
            try:
                q.put_nowait(data)
            except asyncio.QueueFull:
                # A browser that cannot keep up is dropped; it reconnects and gets a snapshot.
                self.clients.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)

    # -- Redis -----------------------------------------------------------------------------

    async def resync(self) -> None:
        """Re-read the whole state from Redis; queue the marker differences for the next push."""
        actual = [orjson.loads(a) for a in await read_all_open_alerts(self.client, "actual")]
        exercise = [orjson.loads(a) for a in await read_all_open_alerts(self.client, "exercise")]
        ticker = [orjson.loads(t) for t in await read_ticker(self.client, "actual", 500)]
        drill_ticker = [orjson.loads(t)
                        for t in await read_ticker(self.client, "exercise", 500)]
        updated = await read_updated_at(self.client)
        changes = self.state.replace(actual, exercise, ticker, drill_ticker, updated)
        self._markers.update(changes)
        await self.refresh_feed_health()

    async def refresh_feed_health(self) -> None:
        health: dict[str, dict[str, Any]] = {}
        for feed, raw in (await read_feed_health(self.client)).items():
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(raw)
                if isinstance(value, dict):
                    health[feed] = value
        self.state.feed_health = health

    def on_message(self, data: bytes) -> None:
        try:
            alert = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignoring a message on %s that is not JSON", EVENTS_CHANNEL)
            return
        if not isinstance(alert, dict) or "hazard_id" not in alert:
            return
        if not self.state.apply(alert):
            return
        if alert.get("status") != "exercise":
            gone = alert["transition"] == "resolved"
            self._markers[alert["hazard_id"]] = None if gone else marker(alert)
            self._ticker.append(alert)

    def flush(self) -> None:
        """Push one ``update`` with everything applied since the last one."""
        upsert = [m for m in self._markers.values() if m is not None]
        remove = [k for k, m in self._markers.items() if m is None]
        ticker = self._ticker[::-1][:TICKER_PER_UPDATE]
        self._markers, self._ticker = {}, []
        payload = {"summary": self.state.summary(datetime.now(UTC)),
                   "markers": {"upsert": upsert, "remove": remove}, "ticker": ticker}
        self._broadcast(_event("update", payload))

    @property
    def _pending(self) -> bool:
        return bool(self._markers or self._ticker)

    async def run(self) -> None:
        """Follow Redis until cancelled; reconnect (with a full resync) after any error."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                await self.resync()
                self.state.live = True
                self.ready.set()
                self.flush()
                await self._follow(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("dashboard lost Redis (%s); reconnecting", exc)
                if self.on_error is not None:
                    self.on_error()
                if self.state.live:
                    self.state.live = False
                    self.flush()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _follow(self, pubsub: Any) -> None:
        now = time.monotonic()
        next_tick, next_resync = now + self.tick_s, now + self.resync_s
        flush_at: float | None = None
        while True:
            now = time.monotonic()
            wake = min(next_tick, next_resync, flush_at if flush_at is not None else next_tick)
            msg = await pubsub.get_message(ignore_subscribe_messages=True,
                                           timeout=max(0.0, wake - now))
            if msg is not None and msg.get("type") == "message":
                self.on_message(bytes(msg["data"]))
                if self._pending and flush_at is None:
                    flush_at = time.monotonic() + self.flush_s
            now = time.monotonic()
            if now >= next_resync:
                await self.resync()
                next_resync = now + self.resync_s
                flush_at = flush_at or now
            if now >= next_tick:
                await self.refresh_feed_health()
                next_tick = now + self.tick_s
                flush_at = flush_at or now  # a summary at least every tick: clocks and health
            if flush_at is not None and time.monotonic() >= flush_at:
                self.flush()
                flush_at = None


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
