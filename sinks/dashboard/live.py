"""The dashboard's live view of Redis: an in-memory mirror of the open alerts ranked by the
live ranking, the closed loop of each, the silences, and the push hub.

Why a mirror: the wall shows every open hazard as a marker (10,000 in a storm), the top-K for
the city and any district, town or village, the area colours, counts and risk indices, and
every browser must get all of it at once when it connects. Reading 10,000 alerts from Redis
per browser and per change would not keep up, so one task per dashboard process follows the
channels ``onemap:events`` (alert transitions), ``onemap:response`` (closed-loop steps) and
``onemap:silences``, applies each change to :class:`LiveState` (transitions guarded by
``seq``, exactly like the worker's writer), re-reads the whole state from Redis after every
(re)connection and every ``resync_s`` as a safety net, and pushes to browsers:

- ``state``  the full snapshot (summary, markers, ticker), sent to a browser when it connects;
- ``update`` at most every ``flush_s``: marker changes, new ticker lines, changed loops and a
  fresh summary.

**One ranking.** Every applied alert feeds :class:`onemap.rules.ranking.Rankings` (one
ranking per status: drills apart; resolved alerts removed), and everything the wall shows
about order and areas comes from it: the top lists (city-wide and per area), each area's
level (the map colours), counts by level and risk index. Ties keep the ranking's order
(score, level, first seen, id). The ranking's "first seen" is the observed time of the first
transition this process saw for a hazard; after a restart, of the transition then current.

Redis publishes inside the same script that writes the state, so the order of messages is the
order of the writes; a snapshot taken after subscribing, with later messages applied on top by
``seq``, converges to Redis's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from onemap.levels import COLOURS, WarningLevel
from onemap.records import Hazard
from onemap.rules.ranking import ALL, AREA_KINDS, Rankings
from onemap.rules.response import STEP_LABELS, Loop, step_times
from onemap.rules.silences import Silence
from onemap.rules.urgency import RiskWeights
from onemap.sinks.dashboard.state import (
    EVENTS_CHANNEL,
    read_all_open_alerts,
    read_feed_health,
    read_ticker,
    read_updated_at,
)
from onemap.sinks.response import RESPONSE_CHANNEL, read_loops
from onemap.sinks.silences import SILENCES_CHANNEL, read_silences

log = logging.getLogger(__name__)

TOP_K: Final = 50
TICKER_KEEP: Final = 40
TICKER_PER_UPDATE: Final = 40
#: Feeds the wall always lists, with their Chinese names, even before any alert from them.
KNOWN_FEEDS: Final = {"weather": "气象监测", "water": "水文监测", "geohazard": "地灾监测",
                      "incident": "突发事件", "cap": "预警发布(CAP)"}
#: A feed whose health record does not say how long it may be silent.
DEFAULT_SILENT_AFTER_S: Final = 900.0
STATUSES: Final = ("actual", "exercise")
#: Alert fields the wall's rows carry besides the ranking's own.
_ALERT_FIELDS: Final = ("alert_id", "seq", "transition", "previous_level", "issued_at",
                        "notify", "notify_reason")

Alert = dict[str, Any]
Marker = list[Any]
Row = dict[str, Any]


def first_issued(alert: Alert) -> str:
    """When the alert was first issued: its earliest remembered transition (the ledger
    carries them, see onemap.records.Alert.earlier), else this transition's time."""
    earlier = alert.get("earlier") or []
    return str(earlier[0][1] if earlier else alert.get("issued_at") or "")


def marker(alert: Alert) -> Marker:
    """Compact map marker: [hazard_id, lon, lat, level (0-4), hazard_type, score]."""
    h = alert["hazard"]
    return [alert["hazard_id"], h["lon"], h["lat"], int(WarningLevel.parse(alert["level"])),
            h["hazard_type"], alert["score"]]


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


def _hazard(alert: Alert) -> Hazard | None:
    try:
        return Hazard.from_dict(alert["hazard"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring alert %r with an unreadable hazard: %s",
                    alert.get("alert_id"), exc)
        return None


def loop_view(loop: Loop, issued_at: str | None) -> dict[str, Any]:
    """A loop for the wall: current step (and its Chinese label), steps, seconds from the
    alert's issue to each step."""
    issued = _parse_time(issued_at) if issued_at else None
    return {
        "current": loop.current,
        "label": STEP_LABELS.get(loop.current or "", "待确认"),
        "steps": [s.to_dict() for s in loop.steps],
        "times": step_times(loop, issued) if issued is not None and issued.tzinfo else {},
        "issued_at": issued_at,
    }


class LiveState:
    """Open alerts by status ranked live, their loops, the latest actual transitions, what
    each feed last sent and the silences.

    ``districts`` (code, name) are the rows of the district table; ``names`` (code → name)
    name areas the ranking has not seen yet; ``risk`` weighs the risk index.
    """

    def __init__(self, districts: Iterable[tuple[str, str]] = (), *,
                 names: Mapping[str, str] | None = None,
                 risk: RiskWeights | None = None) -> None:
        self.districts = list(districts)
        self.names = dict(names or {})
        self.open: dict[str, dict[str, Alert]] = {"actual": {}, "exercise": {}}
        self.rankings = Rankings(risk, ranked=AREA_KINDS)
        self.seq: dict[str, int] = {}
        #: hazard id → issue time of the earliest transition seen (the loop's clock starts)
        self.first_issued: dict[str, str] = {}
        self.loops: dict[str, Loop] = {}
        self.silences: list[Silence] = []
        self.ticker: deque[Alert] = deque(maxlen=TICKER_KEEP)
        self.feeds_seen: dict[str, dict[str, str | None]] = {}
        self.feed_health: dict[str, dict[str, Any]] = {}
        self.updated_at: str | None = None
        self.live = False

    # -- changes -------------------------------------------------------------------------

    def replace(self, actual: list[Alert], exercise: list[Alert], ticker: list[Alert],
                history: Iterable[Alert], updated_at: str | None, *,
                loops: Mapping[str, Loop] | None = None) -> dict[str, Marker | None]:
        """Take a fresh snapshot from Redis; returns the marker changes against the old one.

        The rankings are brought to the snapshot hazard by hazard (not rebuilt), so a hazard
        still open keeps the time it was first seen and with it its place among equals.
        """
        before = {k: marker(a) for k, a in self.open["actual"].items()}
        fresh: dict[str, dict[str, Alert]] = {"actual": {}, "exercise": {}}
        for alert in (*actual, *exercise):
            hazard = _hazard(alert)
            if hazard is None:
                continue
            status = "exercise" if hazard.exercise else "actual"
            ranking = self.rankings[status]
            if ranking.update(hazard, float(alert["score"]),
                              alert.get("score_breakdown") or {}) not in ("removed", "ignored"):
                fresh[status][alert["hazard_id"]] = alert
        for status in STATUSES:
            ranking = self.rankings[status]
            for hazard_id in [h.hazard_id for h, _, _ in ranking.live()]:
                if hazard_id not in fresh[status]:
                    ranking.remove(hazard_id)
        self.open = fresh
        self.seq = {a["hazard_id"]: int(a["seq"]) for a in (*actual, *exercise)}
        self.first_issued = {
            hid: self.first_issued.get(hid) or first_issued(a)
            for status in STATUSES for hid, a in fresh[status].items()}
        if loops is not None:
            self.loops = dict(loops)
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
        hazard = _hazard(alert)
        if hazard is None:
            return False
        self.seq[hazard_id] = seq
        status = "exercise" if hazard.exercise else "actual"
        ranking = self.rankings[status]
        if alert["transition"] == "resolved":
            ranking.remove(hazard_id)
            outcome = "removed"
        else:
            outcome = ranking.update(hazard, float(alert["score"]),
                                     alert.get("score_breakdown") or {})
        if outcome in ("removed", "ignored"):
            self.open[status].pop(hazard_id, None)
            self.first_issued.pop(hazard_id, None)
            self.loops.pop(hazard_id, None)
        else:
            self.open[status][hazard_id] = alert
            known = self.first_issued.get(hazard_id)
            if seq == 1 or not known:
                self.first_issued[hazard_id] = first_issued(alert)
        if status == "actual":
            self.ticker.appendleft(alert)
        self._saw(alert)
        self.updated_at = _later(self.updated_at, alert.get("issued_at"))
        return True

    def set_loop(self, hazard_id: str, loop: Loop) -> bool:
        """A step was recorded (channel ``onemap:response``); False if the alert is not open
        here (its loop is still in Redis for the API)."""
        if not any(hazard_id in self.open[s] for s in STATUSES):
            return False
        self.loops[hazard_id] = loop
        return True

    def _saw(self, alert: Alert) -> None:
        h = alert["hazard"]
        seen = self.feeds_seen.setdefault(h["feed"], {"last_alert_at": None,
                                                      "last_observed_at": None})
        seen["last_alert_at"] = _later(seen["last_alert_at"], alert.get("issued_at"))
        seen["last_observed_at"] = _later(seen["last_observed_at"], h.get("observed_at"))

    # -- views ---------------------------------------------------------------------------

    def open_ids(self) -> list[str]:
        return [hid for s in STATUSES for hid in self.open[s]]

    def markers(self) -> list[Marker]:
        return [marker(a) for a in self.open["actual"].values()]

    def loop(self, hazard_id: str) -> dict[str, Any] | None:
        loop = self.loops.get(hazard_id)
        if loop is None:
            return None
        return loop_view(loop, self.first_issued.get(hazard_id))

    def row(self, status: str, ranked: Row) -> Row:
        """A ranking row with what the wall adds from the alert: its transition, times,
        notify decision, rule and closed-loop state."""
        alert = self.open[status].get(ranked["hazard_id"], {})
        hazard = alert.get("hazard", {})
        return {**ranked, **{f: alert.get(f) for f in _ALERT_FIELDS},
                "feed": hazard.get("feed"), "source_id": hazard.get("source_id"),
                "rule_id": hazard.get("rule_id"), "rule_version": hazard.get("rule_version"),
                "first_issued_at": self.first_issued.get(ranked["hazard_id"]),
                "loop": self.loop(ranked["hazard_id"])}

    def top(self, status: str = "actual", k: int = TOP_K, area: str = ALL) -> list[Row]:
        """The ``k`` most urgent open alerts of ``status`` in an area (ALL: the whole map)."""
        return [self.row(status, r) for r in self.rankings[status].top(area, k)]

    def get(self, hazard_id: str) -> Row | None:
        """One open alert's row (rank 0), or None."""
        for status in STATUSES:
            found = self.rankings[status].get(hazard_id)
            if found is not None:
                return self.row(status, found)
        return None

    def area(self, code: str, status: str = "actual") -> dict[str, Any]:
        """An area's state (level, counts, live, risk index, most urgent) with its name."""
        out = self.rankings[status].area_state(code)
        if not out["name"]:
            out["name"] = "全市" if code == ALL else self.names.get(code, "")
        return out

    def area_levels(self) -> dict[str, str]:
        """Code → level label of every area with an open actual alert (the map colours)."""
        return {code: level.label for code, level in self.rankings["actual"].levels().items()}

    def area_stats(self, states: Mapping[str, dict[str, Any]] | None = None
                   ) -> dict[str, list[float]]:
        """Code → [risk index, blue, yellow, orange, red] for every area with an open actual
        alert: the map's tooltips and the area panel."""
        if states is None:
            states = self.rankings["actual"].areas()
        return {code: [st["risk_index"], *(st["counts"][c.label] for c in COLOURS)]
                for code, st in states.items() if code != ALL}

    def active_silences(self, now: datetime) -> list[dict[str, Any]]:
        """Silences in force or still to come, soonest end first, with area names."""
        out = []
        for s in sorted(self.silences, key=lambda s: (s.ends_at, s.id)):
            state = s.state(now)
            if state == "expired":
                continue
            out.append({**s.to_dict(), "state": state,
                        "area_name": self.names.get(s.matchers.area_code, "")})
        return out

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

    def _district_rows(self, states: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The district table: every district, then (when there are any) hazards placed on
        the city but no district (全市范围) and hazards outside the map (辖区外)."""
        rows = []
        for code, name in self.districts:
            st = states.get(code) or self.rankings["actual"].area_state(code)
            rows.append({"code": code, "name": name, "counts": st["counts"],
                         "level": st["level"], "risk_index": st["risk_index"],
                         "live": st["live"]})

        def total(rows: Iterable[Mapping[str, int]]) -> dict[str, int]:
            out = {c.label: 0 for c in COLOURS}
            for r in rows:
                for c in out:
                    out[c] += r[c]
            return out

        known = {code for code, _ in self.districts}
        cities = total(st["counts"] for st in states.values() if st["kind"] == "city")
        districts = total(st["counts"] for code, st in states.items()
                          if st["kind"] == "district" and code in known)
        everything = total([states[ALL]["counts"]] if ALL in states else [])
        city_wide = {c: cities[c] - districts[c] for c in cities}
        outside = {c: everything[c] - cities[c] for c in cities}
        for code, name, counts in (("city", "全市范围", city_wide), ("", "辖区外", outside)):
            if any(counts.values()):
                rows.append({"code": code, "name": name, "counts": counts, "level": "",
                             "risk_index": None, "live": sum(counts.values())})
        return rows

    def summary(self, now: datetime) -> dict[str, Any]:
        actual = self.rankings["actual"]
        states = actual.areas()
        return {
            "updated_at": self.updated_at,
            "served_at": now.isoformat(),
            "live": self.live,
            "open_total": len(actual),
            "top": self.top("actual"),
            "drill_total": len(self.rankings["exercise"]),
            "drills": self.top("exercise"),
            "levels": actual.counts(ALL),
            "city": self.area(ALL),
            "districts": self._district_rows(states),
            "areas": {code: st["level"] for code, st in states.items()
                      if code != ALL and st["level"] != "none"},
            "area_stats": self.area_stats(states),
            "silences": self.active_silences(now),
            "feeds": self.feeds(now),
        }

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Everything a browser needs on connect."""
        return {**self.summary(now), "markers": self.markers(), "ticker": list(self.ticker)}


Queue = asyncio.Queue[bytes | None]


class Hub:
    """Follows Redis, keeps :class:`LiveState` current and fans events out to browsers."""

    CHANNELS: Final = (EVENTS_CHANNEL, RESPONSE_CHANNEL, SILENCES_CHANNEL)

    def __init__(self, client: aioredis.Redis, state: LiveState, *,
                 flush_s: float = 0.15, tick_s: float = 5.0, resync_s: float = 30.0,
                 queue_size: int = 256, on_error: Callable[[], None] | None = None) -> None:
        self.client = client
        self.state = state
        self.flush_s = flush_s
        self._last_flush = -math.inf  # pushes are at most every flush_s, the first at once
        self.tick_s = tick_s
        self.resync_s = resync_s
        self.queue_size = queue_size
        self.on_error = on_error
        self.clients: set[Queue] = set()
        self.ready = asyncio.Event()
        self._markers: dict[str, Marker | None] = {}
        self._ticker: list[Alert] = []
        self._loops: set[str] = set()
        self._summary_due = False
        self._silences_due = False

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
        loops = await read_loops(self.client, [a["hazard_id"] for a in (*actual, *exercise)])
        changes = self.state.replace(actual, exercise, ticker, drill_ticker, updated,
                                     loops=loops)
        self._markers.update(changes)
        await self.refresh_feed_health()
        await self.refresh_silences()

    async def refresh_feed_health(self) -> None:
        health: dict[str, dict[str, Any]] = {}
        for feed, raw in (await read_feed_health(self.client)).items():
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(raw)
                if isinstance(value, dict):
                    health[feed] = value
        self.state.feed_health = health

    async def refresh_silences(self) -> None:
        self.state.silences = await read_silences(self.client)
        self._silences_due = False
        self._summary_due = True

    def on_message(self, data: bytes, channel: str = EVENTS_CHANNEL) -> None:
        """Apply one published message (an alert transition, a loop, a silence id)."""
        if channel == SILENCES_CHANNEL:
            self._silences_due = True  # re-read (a small hash) before the next push
            return
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignoring a message on %s that is not JSON", channel)
            return
        if not isinstance(message, dict) or "hazard_id" not in message:
            return
        if channel == RESPONSE_CHANNEL:
            self._on_loop(message)
            return
        alert = message
        if not self.state.apply(alert):
            return
        hazard_id = alert["hazard_id"]
        if alert.get("status") != "exercise":
            gone = hazard_id not in self.state.open["actual"]
            self._markers[hazard_id] = None if gone else marker(alert)
            self._ticker.append(alert)
        self._summary_due = True

    def _on_loop(self, message: dict[str, Any]) -> None:
        try:
            loop = Loop.from_dict(message["loop"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a loop on %s: %s", RESPONSE_CHANNEL, exc)
            return
        hazard_id = str(message["hazard_id"])
        if self.state.set_loop(hazard_id, loop):
            self._loops.add(hazard_id)

    def flush(self) -> None:
        """Push one ``update`` with everything applied since the last one."""
        self._last_flush = time.monotonic()
        upsert = [m for m in self._markers.values() if m is not None]
        remove = [k for k, m in self._markers.items() if m is None]
        ticker = self._ticker[::-1][:TICKER_PER_UPDATE]
        loops = {hid: self.state.loop(hid) for hid in self._loops}
        self._markers, self._ticker, self._loops = {}, [], set()
        self._summary_due = False
        payload = {"summary": self.state.summary(datetime.now(UTC)),
                   "markers": {"upsert": upsert, "remove": remove}, "ticker": ticker,
                   "loops": loops}
        self._broadcast(_event("update", payload))

    @property
    def _pending(self) -> bool:
        return bool(self._markers or self._ticker or self._loops or self._summary_due
                    or self._silences_due)

    async def run(self) -> None:
        """Follow Redis until cancelled; reconnect (with a full resync) after any error."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(*self.CHANNELS)
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
                    await cast(Any, pubsub).aclose()  # typed from redis 8 on, untyped before

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
                channel = msg.get("channel")
                self.on_message(bytes(msg["data"]), _text(channel) if channel else
                                EVENTS_CHANNEL)
                if self._pending and flush_at is None:
                    # leading edge: a change after a quiet spell goes out at once (a lone red
                    # alert must not wait the window); a burst after it waits the window
                    flush_at = max(time.monotonic(), self._last_flush + self.flush_s)
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
                if self._silences_due:
                    await self.refresh_silences()
                self.flush()
                flush_at = None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
