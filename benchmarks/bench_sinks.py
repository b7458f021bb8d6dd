"""Sink speed: alert record → SMPP submit and → the wall's DOM (p50/p99), and the wall's frame
time with 10,000 markers.

Why: issue 6 asks for "end-to-end time from alert record to SMPP submit and to the browser's
DOM update (p50/p99), page frame time with 10,000 markers" (SMS decisions per second are in
``bench_sms``). Everything here runs for real, started the way the tests and ``onemap up``
start it: Tansu and redis-server on free ports (``onemap.embedded``), the loopback SMSC as a
child process (``onemap.up.LoopbackSmsc``, the same argv and password hand-over as ``onemap up
--scenario typhoon``), one ``onemap worker`` whose SMS provider is that SMSC
(``ONEMAP_SMS_OUTBOX=smpp://...``), ``onemap dashboard``, and Debian's Chromium, headless,
driven by Playwright with ``executable_path`` (as ``tests/browser`` does).

What is measured:

1. **alert record → SMSC.** Red alert records (``onemap.records.Alert`` JSON, as the lifecycle
   stage writes them; red is never held by storm protection, ``sinks/sms/storm.py``) are
   produced to ``onemap.alerts`` at a fixed rate (open loop). Each has a unique tag in its
   station name, so every message the SMSC stores (its outbox line carries ``received_at``,
   stamped when the submit_sm arrived; the villages are chosen so that every message fits one
   UCS-2 part) is matched to its record and recipient. Latency = SMSC ``received_at`` minus
   the moment the record was handed to the producer, on the same host clock: per message
   (each alert goes to 2-3 officers, one after another), and per alert to its first and its
   last message.
2. **alert record → DOM.** The same records, on the wall page of ``onemap dashboard`` open in
   Chromium: a MutationObserver in the page stamps ``performance.timeOrigin +
   performance.now()`` when the alert's ticker row (``#ticker li[data-alert=...]``) and its
   hazard's top-list row (``#top-list li[data-hazard=...]``; scores rise, so each new alert
   enters the top of the list) are added, and when the next animation frame after that runs
   (the frame that shows it). The page clock is calibrated against this process's clock by
   round trips (the offset and round trip are reported). A subscriber in this process stamps
   each alert's publish on ``onemap:events`` (the dashboard state's channel), which splits the
   way into "record → Redis" (Kafka and the worker) and "Redis → DOM" (dashboard and page).
3. **baselines, same process, same rate, same kind of records:** the dashboard's Redis writer
   (``RedisStateSink``, the worker's own) called here - Redis publish → DOM, without Kafka and
   the worker; and the SMS sink (``SmsSink`` with the SMPP provider, the same Redis, roster,
   limits and escalation notes) called here → SMSC. The pipeline's figures are given as ratios
   to these: the difference is what Kafka, faust's batching and the worker add.
4. **frame time.** A fresh Redis and dashboard; the wall page is opened with N open alerts
   (``requestAnimationFrame`` deltas, as ``tests/browser/test_wall_10k_markers.py``) while
   idle, while zooming and panning (the test's moves), and during a burst of marker updates
   (escalations / de-escalations of open alerts written at a fixed rate): 10,000 markers
   against a 100-marker baseline in the same run, p50/p95/p99/max frame time.

The machine is shared (2 cores; other sessions may run tests): /proc/loadavg and the share of
all CPUs busy (/proc/stat) are recorded for each phase, with the worker's and the dashboard's
CPU seconds.

Usage::

    python -m benchmarks.bench_sinks            # full run, writes benchmarks/results/sinks.*
    python -m benchmarks.bench_sinks --quick    # ~30 s, tiny (the smoke test)
    python -m benchmarks.bench_sinks --out DIR  # write DIR/sinks.json and DIR/sinks.md instead
    python -m benchmarks.bench_sinks --no-frames --worker-env ONEMAP_BATCH_WAIT=0.005 \
        --name sinks-batch-wait-5ms              # an A/B of a worker setting
    python -m benchmarks.bench_sinks --keep     # keep the components' logs and the SMSC outbox
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import shapely

from benchmarks.bench_pipeline import cpu_model, cpu_seconds, loadavg, percentile
from benchmarks.report import write_results
from onemap.embedded import (
    free_port,
    onemap_command,
    spawn,
    start_broker,
    start_redis,
    stop,
    tcp_ready,
    wait_until,
)
from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.levels import COLOURS, WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.registries import Registries, default_registries_dir
from onemap.rules.lifecycle import rank_area
from onemap.sinks.base import Outcome
from onemap.sinks.dashboard.state import EVENTS_CHANNEL, RedisStateSink
from onemap.sinks.sms.followup import SmsFollowUp
from onemap.sinks.sms.outbox import provider_from_url
from onemap.sinks.sms.roster import DutyRoster, load_roster
from onemap.sinks.sms.sink import SmsSink, messages_for
from onemap.sinks.sms.storm import load_limits
from onemap.sinks.sms.templates import segments
from onemap.up import LoopbackSmsc, UpOptions

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = os.environ.get("ONEMAP_TEST_CHROMIUM", "/usr/bin/chromium")
#: The wall tests' Chromium flags (tests/browser/conftest.py).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
TOKEN = "bench-sinks-wall-token-3c71"
#: Station names carry the tag that matches an SMS to its record: 测站 + phase letter + number.
TAG = re.compile(r"测站([A-Z]+\d{5})")
SETTLE_TIMEOUT_S = 90.0

#: Installed in the wall page: stamps each ticker row (by alert id) and top-list row (by
#: hazard id) when it is first added, and the animation frame that follows.
PROBE = """() => {
  if (window.__sinkProbe) return true;
  const p = {ticker: {}, top: {}, tickerFrame: {}, topFrame: {}};
  const now = () => performance.timeOrigin + performance.now();
  let waiting = [];
  function framed() {
    const t = now();
    for (const [kind, id] of waiting) if (!(id in p[kind + "Frame"])) p[kind + "Frame"][id] = t;
    waiting = [];
  }
  const observer = new MutationObserver(function (mutations) {
    const t = now();
    for (const m of mutations) for (const n of m.addedNodes) {
      if (n.nodeType !== 1 || !n.dataset) continue;
      const kind = m.target.id === "ticker" ? "ticker" : "top";
      const id = kind === "ticker" ? n.dataset.alert : n.dataset.hazard;
      if (!id || id in p[kind]) continue;
      p[kind][id] = t;
      if (!waiting.length) requestAnimationFrame(framed);
      waiting.push([kind, id]);
    }
  });
  observer.observe(document.getElementById("ticker"), {childList: true});
  observer.observe(document.getElementById("top-list"), {childList: true});
  window.__sinkProbe = p;
  return true;
}"""

#: Frame recorder: requestAnimationFrame deltas between start() and stop().
FRAMES = """() => {
  // each start() begins a new chain of callbacks; a chain left from an earlier start() stops
  const r = {deltas: [], generation: 0, last: 0, started: 0};
  function chain(generation) {
    return function frame(t) {
      if (generation !== r.generation) return;
      r.deltas.push(t - r.last); r.last = t; requestAnimationFrame(frame);
    };
  }
  window.__frames = {
    start() { r.deltas = []; r.generation++; r.started = performance.now();
              r.last = r.started; requestAnimationFrame(chain(r.generation)); },
    stop() { r.generation++;
             return {deltas: r.deltas.slice(1), seconds: (performance.now() - r.started) / 1000}; },
  };
  return true;
}"""

#: The zoom and pan moves of tests/browser/test_wall_10k_markers.py, WAIT ms apart.
MOVES = """async (wait_ms) => {
  const w = window.onemapWall, map = w.map;
  const wait = ms => new Promise(r => setTimeout(r, ms));
  const home = map.getCenter(), z = w.homeZoom;
  const moves = [
    () => map.setZoom(z + 1), () => map.panBy([300, 120]), () => map.setZoom(z + 2),
    () => map.panBy([-400, -200]), () => map.setZoom(z + 3), () => map.panBy([250, 250]),
    () => map.setZoom(z + 1), () => map.setView(home, z)];
  for (const move of moves) { move(); await wait(wait_ms); }
  await wait(300);
  return moves.length;
}"""


# --- plan -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
    #: (name, alerts per second, alerts) of each latency run; each runs through the pipeline
    #: and then through the in-process baseline
    rates: tuple[tuple[str, float, int], ...]
    warmup: int
    #: marker counts of the frame-time runs: the baseline first
    frame_sizes: tuple[int, int]
    move_wait_ms: int
    idle_s: float
    burst_rate: float  # marker updates per second
    burst_s: float


FULL = Plan(rates=(("low", 2.0, 200), ("moderate", 20.0, 400)), warmup=6,
            frame_sizes=(100, 10_000), move_wait_ms=450, idle_s=3.0, burst_rate=500.0,
            burst_s=4.0)
QUICK = Plan(rates=(("low", 10.0, 12),), warmup=2, frame_sizes=(100, 1_000),
             move_wait_ms=150, idle_s=0.5, burst_rate=200.0, burst_s=1.0)


# --- machine load ---------------------------------------------------------------------------

def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot (/proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Load:
    """The machine's load over one phase: how busy all CPUs were, and our children's share."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.ticks = cpu_ticks()
        self.cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.started = time.monotonic()

    def done(self) -> dict[str, Any]:
        busy0, total0 = self.ticks
        busy1, total1 = cpu_ticks()
        out: dict[str, Any] = {
            "seconds": round(time.monotonic() - self.started, 1),
            "loadavg": loadavg(),
            "cpus_busy": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2)
            if total1 > total0 else None,
        }
        for name, pid in self.pids.items():
            out[f"{name}_cpu_s"] = round(cpu_seconds(pid) - self.cpu[name], 2)
        return out


def machine() -> dict[str, Any]:
    from importlib.metadata import version
    chromium = ""
    with contextlib.suppress(OSError):
        import subprocess
        chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True,
                                  timeout=20, check=False).stdout.strip()
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
            "python": platform.python_version(), "platform": platform.platform(),
            "chromium": chromium,
            "playwright": version("playwright")}


# --- alert records --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Village:
    place: Place
    lon: float
    lat: float
    bbox: tuple[float, float, float, float]


def load_villages() -> list[Village]:
    """Every village of the Zhuhai map with its four-level place and a point inside it."""
    admin = AdminMap.load_default()
    table = admin[AdminLevel.VILLAGE]
    points = shapely.point_on_surface(table.geometry)
    boxes = shapely.bounds(table.geometry)
    out = []
    for i in range(len(table.codes)):
        chain = table.chain[i]
        names = [admin[lv].names[int(chain[lv])] for lv in AdminLevel]
        codes = [admin[lv].codes[int(chain[lv])] for lv in AdminLevel]
        place = Place(codes[0], names[0], codes[1], names[1], codes[2], names[2], codes[3],
                      names[3])
        minx, miny, maxx, maxy = (float(b) for b in boxes[i])
        out.append(Village(place, float(points[i].x), float(points[i].y),
                           (minx, miny, maxx, maxy)))
    return out


def make_alert(village: Village, *, hazard_id: str, source_id: str, source_name: str,
               level: WarningLevel, score: float, seq: int = 1, transition: str = "new",
               previous: WarningLevel = WarningLevel.NONE, hazard_type: str = "water_level",
               at: tuple[float, float] | None = None, now: datetime | None = None) -> Alert:
    """One alert transition shaped like the lifecycle stage's (a water level over 警戒水位)."""
    issued = now or datetime.now(UTC)
    lon, lat = at or (village.lon, village.lat)
    hazard = Hazard(
        hazard_id=hazard_id, hazard_type=hazard_type, feed="water", source_id=source_id,
        source_name=source_name, level=level, previous_level=previous, place=village.place,
        lon=lon, lat=lat, observed_at=issued - timedelta(minutes=2),
        key_figure=KeyFigure("水位", 3.2, "米", "警戒水位", 2.88),
        reason="水位3.2米，超警戒水位", rule_id=hazard_type, rule_version="1",
        trend={"direction": "rising", "rate_per_h": 0.12, "hours_to_next": 1.5})
    breakdown = {"level": 100.0 if level == WarningLevel.RED else 60.0,
                 "exposure": round(score - 100.0, 3)}
    return Alert(alert_id=f"{hazard_id}#{seq}", hazard_id=hazard_id, seq=seq,
                 transition=transition, level=level, previous_level=previous, hazard=hazard,
                 score=round(score, 3), score_breakdown=breakdown, issued_at=issued)


class RedAlerts:
    """New red alerts, each at a village whose every SMS fits one UCS-2 part, with a unique
    tag in its station name and a score above every earlier one."""

    def __init__(self, run_id: str, villages: Sequence[Village], roster: DutyRoster,
                 registries: Registries, seed: int) -> None:
        self.run_id = run_id
        self.roster = roster
        self.registries = registries
        self.count = 0
        probe = [v for v in villages
                 if all(len(segments(m.text)) == 1 for m in messages_for(
                     self._make(v, "Z99999", 100.0, datetime.now(UTC)), roster, registries))]
        random.Random(seed).shuffle(probe)
        self.villages = probe

    def _make(self, village: Village, tag: str, score: float, now: datetime) -> Alert:
        return make_alert(village, hazard_id=f"water_level:{self.run_id}-{tag}",
                          source_id=f"{self.run_id}-{tag}", source_name=f"测站{tag}",
                          level=WarningLevel.RED, score=score, now=now)

    def next(self, phase: str) -> tuple[str, Alert, set[str]]:
        """(tag, alert, phones its SMS go to)."""
        self.count += 1
        tag = f"{phase}{self.count:05d}"
        village = self.villages[self.count % len(self.villages)]
        alert = self._make(village, tag, 100.0 + self.count * 0.01, datetime.now(UTC))
        phones = {m.phone for m in messages_for(alert, self.roster, self.registries)}
        return tag, alert, phones


# --- components -----------------------------------------------------------------------------

@dataclasses.dataclass
class Dashboard:
    url: str
    proc: Any
    log: Path


def start_dashboard(redis_url: str, tmp: Path) -> Dashboard:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")},
           "ONEMAP_REDIS": redis_url, "ONEMAP_DASHBOARD_PORT": str(port),
           "ONEMAP_DASHBOARD_TOKEN": TOKEN, "ONEMAP_LOG_LEVEL": "WARNING"}
    log = tmp / "dashboard.log"
    proc = spawn(onemap_command("dashboard"), env=env, log_path=log)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        request = urllib.request.Request(url + "/api/areas",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    wait_until(ready, 60, f"dashboard (log: {log})", proc)
    return Dashboard(url, proc, log)


@dataclasses.dataclass
class Stack:
    """Broker, Redis, loopback SMSC, one worker and the dashboard, all child processes."""

    tmp: Path
    bootstrap: str
    redis_url: str
    prefix: str
    smsc: LoopbackSmsc
    procs: dict[str, Any]
    dashboard: Dashboard

    @property
    def smsc_url(self) -> str:
        return str(self.smsc.settings()["sms_outbox"])

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.tmp / f"{name}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


def start_stack(tmp: Path, worker_env: dict[str, str] | None = None) -> Stack:
    host = "127.0.0.1"
    procs: dict[str, Any] = {}
    try:
        kafka_port, redis_port = free_port(), free_port()
        procs["broker"] = start_broker(host, kafka_port, tmp / "broker.log")
        procs["redis"] = start_redis(host, redis_port, tmp / "redis", tmp / "redis.log")
        redis_url = f"redis://{host}:{redis_port}/0"
        # the loopback SMSC exactly as `onemap up --scenario typhoon` runs it
        from onemap.settings import Settings
        base = dataclasses.replace(Settings(), data_dir=tmp)
        smsc = LoopbackSmsc.plan(host, UpOptions(smpp=True), base)
        assert smsc is not None
        procs["smsc"] = spawn(smsc.argv(), env=smsc.env(), log_path=tmp / "smsc.log")
        wait_until(tcp_ready(host, smsc.port), 20.0, "loopback SMSC", procs["smsc"])
        prefix = f"bs{secrets.token_hex(3)}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")},
               "ONEMAP_KAFKA": f"kafka://{host}:{kafka_port}", "ONEMAP_REDIS": redis_url,
               "ONEMAP_APP_ID": f"{prefix}-app", "ONEMAP_TOPIC_PREFIX": prefix,
               "ONEMAP_METRICS_PORT": str(free_port()), "ONEMAP_DATA_DIR": str(tmp),
               "ONEMAP_SMS_OUTBOX": str(smsc.settings()["sms_outbox"]),
               "ONEMAP_SMS_SECRET": smsc.password,
               # the embedded default's group timeouts (onemap/up.py, tests/conftest.py)
               "ONEMAP_REBALANCE_TIMEOUT": "6", "ONEMAP_SESSION_TIMEOUT": "6",
               "ONEMAP_HEARTBEAT_INTERVAL": "1", "ONEMAP_LOG_LEVEL": "INFO",
               **(worker_env or {})}
        procs["worker"] = spawn(onemap_command("worker"), env=env, log_path=tmp / "worker.log")
        dashboard = start_dashboard(redis_url, tmp)
        procs["dashboard"] = dashboard.proc
        worker_log = tmp / "worker.log"

        def ready() -> bool:
            text = worker_log.read_text(errors="replace") if worker_log.exists() else ""
            return "Worker ready" in text

        try:
            wait_until(ready, SETTLE_TIMEOUT_S, "worker", procs["worker"])
        except Exception as exc:
            raise RuntimeError(f"{exc}:\n{worker_log.read_text(errors='replace')[-3000:]}") \
                from exc
        return Stack(tmp, f"{host}:{kafka_port}", redis_url, prefix, smsc, procs, dashboard)
    except BaseException:
        stop(list(procs.values())[::-1])
        raise


# --- the browser ----------------------------------------------------------------------------

@dataclasses.dataclass
class WallPage:
    page: Any
    errors: list[str]


async def open_wall(browser: Any, url: str, *, wait_markers: int | None = None) -> WallPage:
    """The wall page at 1920×1080, logged in, with its first state applied (and, if asked,
    ``wait_markers`` markers in the cluster layer); page errors are collected."""
    context = await browser.new_context(viewport={"width": 1920, "height": 1080},
                                        locale="zh-CN", timezone_id="Asia/Shanghai")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type == "error" else None)
    await page.goto(f"{url}/?token={TOKEN}")
    await page.wait_for_function("() => window.onemapWall && window.onemapWall.stateCount > 0",
                                 timeout=30_000)
    if wait_markers is not None:
        try:
            await page.wait_for_function(
                f"() => window.onemapWall.cluster.getLayers().length === {wait_markers}",
                timeout=120_000)
        except Exception as exc:
            shown = await page.evaluate(
                "() => [window.onemapWall.markers.size, window.onemapWall.cluster.getLayers()"
                ".length, window.onemapWall.stateCount, window.onemapWall.updateCount]")
            raise RuntimeError(f"the wall did not show {wait_markers} markers: [markers, in "
                               f"cluster, states, updates] = {shown}; {errors}") from exc
    return WallPage(page, errors)


async def calibrate(page: Any, rounds: int = 15) -> dict[str, float]:
    """Offset of the page's clock (timeOrigin + now) from ours, from the shortest round trip."""
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        t0 = time.time()
        page_ms = float(await page.evaluate("() => performance.timeOrigin + performance.now()"))
        t1 = time.time()
        rtt = t1 - t0
        if best is None or rtt < best[0]:
            best = (rtt, page_ms / 1000 - (t0 + t1) / 2)
    assert best is not None
    return {"offset_ms": round(best[1] * 1000, 3), "round_trip_ms": round(best[0] * 1000, 3)}


# --- latency runs ---------------------------------------------------------------------------

@dataclasses.dataclass
class Sent:
    tag: str
    alert: Alert
    phones: set[str]
    at: float  # time.time() when handed to the producer / the sink
    acked: float | None = None


class EventsTap:
    """Stamps, in this process, each alert transition the dashboard's Redis channel carries:
    where the record's way to the page splits into "to Redis" and "Redis to the DOM"."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> EventsTap:
        await self.pubsub.subscribe(EVENTS_CHANNEL)
        self._task = asyncio.create_task(self._read(self.pubsub))
        return self

    async def _read(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            at = time.time()
            alert_id = str(orjson.loads(message["data"])["alert_id"])
            self.seen.setdefault(alert_id, at)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()
        await self.client.aclose()


async def paced(rate: float, count: int, act: Callable[[int], Awaitable[None]]) -> float:
    """Call ``act(i)`` at ``rate`` per second, open loop; the offered duration."""
    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await act(i)
    return time.monotonic() - started


def read_smsc(outbox: Path) -> dict[tuple[str, str], tuple[float, int]]:
    """(tag, phone) → (received_at as a timestamp, parts) of every SMS the SMSC stored;
    the first one wins (escalations and reminders of the same alert would come later)."""
    out: dict[tuple[str, str], tuple[float, int]] = {}
    if not outbox.exists():
        return out
    for line in outbox.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        message = json.loads(line)
        found = TAG.search(message["text"])
        if found is None:
            continue
        key = (found.group(1), message["to"])
        if key not in out:
            out[key] = (datetime.fromisoformat(message["received_at"]).timestamp(),
                        int(message["parts"]))
    return out


async def wait_delivered(stack: Stack, page: Any, sent: Sequence[Sent], timeout_s: float,
                         ) -> tuple[dict[tuple[str, str], tuple[float, int]], dict[str, Any]]:
    """Wait until every expected SMS reached the SMSC and every alert is on the page."""
    expected = {(s.tag, phone) for s in sent for phone in s.phones}
    alert_ids = [s.alert.alert_id for s in sent]
    hazard_ids = [s.alert.hazard_id for s in sent]
    deadline = time.monotonic() + timeout_s
    while True:
        stack.alive()
        sms = read_smsc(stack.smsc.outbox)
        probe = await page.evaluate("() => window.__sinkProbe")
        done_sms = expected <= set(sms)
        done_dom = all(a in probe["ticker"] for a in alert_ids) and all(
            h in probe["top"] for h in hazard_ids)
        if (done_sms and done_dom) or time.monotonic() > deadline:
            return sms, probe
        await asyncio.sleep(0.25)


def stats_ms(values: Sequence[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(percentile(ms, 50) or 0.0, 1),
            "p90": round(percentile(ms, 90) or 0.0, 1),
            "p99": round(percentile(ms, 99) or 0.0, 1),
            "min": round(min(ms), 1), "max": round(max(ms), 1)}


def latencies(sent: Sequence[Sent], sms: dict[tuple[str, str], tuple[float, int]],
              probe: dict[str, Any], offset_s: float, published: dict[str, float],
              ) -> dict[str, Any]:
    per_message: list[float] = []
    first: list[float] = []
    last: list[float] = []
    parts: list[int] = []
    missing_sms = 0
    for s in sent:
        got = [sms[(s.tag, p)] for p in s.phones if (s.tag, p) in sms]
        missing_sms += len(s.phones) - len(got)
        times = [t - s.at for t, _ in got]
        per_message += times
        parts += [n for _, n in got]
        if len(got) == len(s.phones) and times:
            first.append(min(times))
            last.append(max(times))

    def dom(kind: str, key: Callable[[Sent], str]) -> tuple[list[float], int]:
        seen = probe[kind]
        out = [seen[key(s)] / 1000 - offset_s - s.at for s in sent if key(s) in seen]
        return out, len(sent) - len(out)

    ticker, missing_ticker = dom("ticker", lambda s: s.alert.alert_id)
    ticker_frame, _ = dom("tickerFrame", lambda s: s.alert.alert_id)
    top, missing_top = dom("top", lambda s: s.alert.hazard_id)
    acks = [s.acked - s.at for s in sent if s.acked is not None]
    to_redis = [published[s.alert.alert_id] - s.at for s in sent
                if s.alert.alert_id in published]
    redis_to_dom = [probe["ticker"][s.alert.alert_id] / 1000 - offset_s
                    - published[s.alert.alert_id] for s in sent
                    if s.alert.alert_id in published and s.alert.alert_id in probe["ticker"]]
    return {
        "alerts": len(sent), "sms_expected": sum(len(s.phones) for s in sent),
        "sms_missing": missing_sms, "sms_multipart": sum(1 for n in parts if n > 1),
        "dom_missing": {"ticker": missing_ticker, "top": missing_top},
        "sms_per_message_ms": stats_ms(per_message),
        "sms_first_of_alert_ms": stats_ms(first),
        "sms_last_of_alert_ms": stats_ms(last),
        "dom_ticker_row_ms": stats_ms(ticker),
        "dom_ticker_row_painted_ms": stats_ms(ticker_frame),
        "dom_top_row_ms": stats_ms(top),
        "producer_ack_ms": stats_ms(acks) if acks else None,
        "to_redis_publish_ms": stats_ms(to_redis),
        "redis_publish_to_dom_ms": stats_ms(redis_to_dom),
    }


async def via_pipeline(stack: Stack, producer: Any, alerts: RedAlerts, phase: str, *,
                       rate: float, count: int) -> list[Sent]:
    """Produce ``count`` alert records to onemap.alerts at ``rate``, as the lifecycle does."""
    topic = f"{stack.prefix}.alerts"
    sent: list[Sent] = []

    async def act(_: int) -> None:
        tag, alert, phones = alerts.next(phase)
        item = Sent(tag, alert, phones, time.time())
        sent.append(item)
        future = await producer.send(topic, key=rank_area(alert.hazard.place).encode(),
                                     value=alert.to_json())
        future.add_done_callback(lambda _f, it=item: setattr(it, "acked", time.time()))

    await paced(rate, count, act)
    return sent


async def direct(redis_url: str, smsc_url: str, secret: str, roster: DutyRoster,
                 registries: Registries) -> tuple[Callable[[Alert], Awaitable[None]],
                                                  Callable[[], Awaitable[None]]]:
    """The two sinks of the worker, called in this process: the dashboard's Redis writer and
    the SMS sink on the SMPP provider (with the escalation notes the worker writes)."""
    client = aioredis.Redis.from_url(redis_url)
    state = RedisStateSink(client)
    follow_up = SmsFollowUp(client, roster=lambda: roster, now=lambda: datetime.now(UTC))
    provider = provider_from_url(smsc_url, secret=secret, on_event=follow_up.on_event)
    follow_up.attach(provider)
    await provider.check()
    limits = load_limits()
    sms = SmsSink(client, provider, roster=lambda: roster, now=lambda: datetime.now(UTC),
                  registries=registries, limits=lambda: limits, follow_up=follow_up)
    queues: dict[str, asyncio.Queue[Alert]] = {"redis": asyncio.Queue(), "sms": asyncio.Queue()}

    async def consume(sink: Any, queue: asyncio.Queue[Alert]) -> None:
        """One consumer per sink, taking what has queued up as one batch: the worker runs one
        agent per sink, each handed batches (deliver_until_done retries what is not done)."""
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            taken = len(batch)
            for _ in range(50):
                outcomes = await sink.send(batch)
                batch = [a for a, o in zip(batch, outcomes, strict=True)
                         if o not in (Outcome.DELIVERED, Outcome.DUPLICATE)]
                if not batch:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{sink.name} did not take {[a.alert_id for a in batch]}")
            for _ in range(taken):
                queue.task_done()

    consumers = [asyncio.create_task(consume(state, queues["redis"])),
                 asyncio.create_task(consume(sms, queues["sms"]))]

    async def send(alert: Alert) -> None:
        for queue in queues.values():
            queue.put_nowait(alert)

    async def close() -> None:
        for task in consumers:
            if task.done():
                task.result()  # a consumer that failed says why
        await asyncio.wait_for(asyncio.gather(*(q.join() for q in queues.values())), 60)
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        await sms.close()
        await client.aclose()

    return send, close


async def latency_runs(stack: Stack, plan: Plan, wall: WallPage, alerts: RedAlerts, *,
                       roster: DutyRoster, registries: Registries) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks=1, linger_ms=0)
    await producer.start()
    send_direct, close_direct = await direct(stack.redis_url, stack.smsc_url,
                                             stack.smsc.password, roster, registries)
    pids = {"worker": stack.procs["worker"].pid, "dashboard": stack.procs["dashboard"].pid}
    runs: list[dict[str, Any]] = []
    page = wall.page
    tap = await EventsTap(stack.redis_url).start()
    try:
        clock = await calibrate(page)
        offset = clock["offset_ms"] / 1000
        # warm-up, both paths: connections, the worker's first batches, the page's code paths
        warm = await via_pipeline(stack, producer, alerts, "W", rate=2.0, count=plan.warmup)
        warm += await direct_run(send_direct, alerts, "V", rate=2.0, count=plan.warmup)
        _, probe = await wait_delivered(stack, page, warm, 60)
        assert all(s.alert.alert_id in probe["ticker"] for s in warm), "warm-up never arrived"
        for name, rate, count in plan.rates:
            for path in ("pipeline", "direct"):
                say(f"  {path} at {rate:g} alerts/s ({count} alerts) ...")
                load = Load(pids)
                phase = ("P" if path == "pipeline" else "D") + name[0].upper()
                if path == "pipeline":
                    sent = await via_pipeline(stack, producer, alerts, phase, rate=rate,
                                              count=count)
                else:
                    sent = await direct_run(send_direct, alerts, phase, rate=rate, count=count)
                sms, probe = await wait_delivered(stack, page, sent, 120)
                run = {"path": path, "rate": name, "alerts_per_s": rate,
                       **latencies(sent, sms, probe, offset, tap.seen), "load": load.done()}
                runs.append(run)
                say(f"    SMS per message p50/p99 {run['sms_per_message_ms'].get('p50')}/"
                    f"{run['sms_per_message_ms'].get('p99')} ms; DOM ticker row p50/p99 "
                    f"{run['dom_ticker_row_ms'].get('p50')}/{run['dom_ticker_row_ms'].get('p99')}"
                    f" ms (of which Redis → DOM "
                    f"{run['redis_publish_to_dom_ms'].get('p50')}/"
                    f"{run['redis_publish_to_dom_ms'].get('p99')}); load {run['load']['loadavg']}")
        clock_after = await calibrate(page)
    finally:
        await close_direct()
        await producer.stop()
        await tap.stop()
    return {"clock": {"before": clock, "after": clock_after}, "runs": runs,
            "page_errors": list(wall.errors)}


async def direct_run(send: Callable[[Alert], Awaitable[None]], alerts: RedAlerts, phase: str,
                     *, rate: float, count: int) -> list[Sent]:
    sent: list[Sent] = []

    async def act(_: int) -> None:
        tag, alert, phones = alerts.next(phase)
        sent.append(Sent(tag, alert, phones, time.time()))
        await send(alert)

    await paced(rate, count, act)
    return sent


# --- frame time -----------------------------------------------------------------------------

def frame_stats(deltas: Sequence[float], seconds: float) -> dict[str, Any]:
    if not deltas:
        return {"frames": 0}
    q = sorted(deltas)
    return {"frames": len(q), "seconds": round(seconds, 2), "fps": round(len(q) / seconds, 1),
            "p50_ms": round(percentile(q, 50) or 0.0, 2),
            "p95_ms": round(percentile(q, 95) or 0.0, 2),
            "p99_ms": round(percentile(q, 99) or 0.0, 2), "max_ms": round(q[-1], 2),
            "over_50ms": sum(1 for d in q if d > 50)}


class MarkerSet:
    """Open alerts spread over the map (random points in random villages, every colour and
    hazard type: tests/browser/test_wall_10k_markers.py's mix), and their updates."""

    TYPES = ("water_level", "rainstorm", "wind", "geohazard", "incident")

    def __init__(self, villages: Sequence[Village], seed: int) -> None:
        self.villages = villages
        self.rng = random.Random(seed)
        self.open: list[Alert] = []

    def grow(self, n: int) -> list[Alert]:
        out = []
        for _ in range(n):
            i = len(self.open)
            v = self.villages[self.rng.randrange(len(self.villages))]
            minx, miny, maxx, maxy = v.bbox
            level = self.rng.choice(COLOURS)
            alert = make_alert(
                v, hazard_id=f"m:{i:05d}", source_id=f"M{i:05d}", source_name=f"M{i:05d}站",
                level=level, score=100.0 + self.rng.uniform(0, 30),
                hazard_type=self.rng.choice(self.TYPES),
                at=(self.rng.uniform(minx, maxx), self.rng.uniform(miny, maxy)))
            self.open.append(alert)
            out.append(alert)
        return out

    def update(self, index: int) -> Alert:
        """The next transition of one open alert: red ↔ orange."""
        a = self.open[index]
        level = WarningLevel.ORANGE if a.level == WarningLevel.RED else WarningLevel.RED
        up = level > a.level
        h = dataclasses.replace(a.hazard, level=level, previous_level=a.level)
        b = dataclasses.replace(a, alert_id=f"{a.hazard_id}#{a.seq + 1}", seq=a.seq + 1,
                                transition="escalated" if up else "de-escalated", level=level,
                                previous_level=a.level, hazard=h,
                                issued_at=datetime.now(UTC))
        self.open[index] = b
        return b


async def write_all(sink: RedisStateSink, alerts: Sequence[Alert], batch: int = 1000) -> None:
    for start in range(0, len(alerts), batch):
        outcomes = await sink.send(alerts[start:start + batch])
        assert all(o in (Outcome.DELIVERED, Outcome.DUPLICATE) for o in outcomes), outcomes


def dashboard_markers(url: str) -> int:
    """How many markers the dashboard's mirror holds (its /api/state snapshot)."""
    request = urllib.request.Request(url + "/api/state",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return len(json.loads(response.read())["markers"])


async def wait_dashboard_markers(url: str, n: int, timeout_s: float = 120.0) -> float:
    """Wait until the dashboard's mirror has applied all ``n`` open alerts (so a page opened
    then gets them all in its first state); the seconds it took."""
    started = time.monotonic()
    held = 0
    while time.monotonic() - started < timeout_s:
        held = await asyncio.to_thread(dashboard_markers, url)
        if held == n:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the dashboard holds {held} markers, not {n}, after {timeout_s:.0f} s")


async def measure_frames(page: Any, markers: MarkerSet, sink: RedisStateSink,
                         plan: Plan) -> dict[str, Any]:
    await page.evaluate(FRAMES)
    out: dict[str, Any] = {}
    await page.evaluate("() => window.__frames.start()")
    await asyncio.sleep(plan.idle_s)
    r = await page.evaluate("() => window.__frames.stop()")
    out["idle"] = frame_stats(r["deltas"], r["seconds"])
    await page.evaluate("() => window.__frames.start()")
    await page.evaluate(MOVES, plan.move_wait_ms)
    r = await page.evaluate("() => window.__frames.stop()")
    out["zoom_and_pan"] = frame_stats(r["deltas"], r["seconds"])
    # a burst of updates: every 100 ms a batch of escalations / de-escalations
    n = max(1, int(plan.burst_rate * plan.burst_s))
    per_tick = max(1, int(plan.burst_rate / 10))
    order = list(range(len(markers.open)))
    markers.rng.shuffle(order)
    final: dict[str, int] = {}
    await page.evaluate("() => window.__frames.start()")
    written = 0
    started = time.monotonic()
    while written < n:
        batch = [markers.update(order[(written + k) % len(order)])
                 for k in range(min(per_tick, n - written))]
        await write_all(sink, batch)
        for a in batch:
            final[a.hazard_id] = int(a.level)
        written += len(batch)
        delay = started + written / plan.burst_rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    wrote_s = time.monotonic() - started
    await page.wait_for_function(
        """(want) => Object.entries(want).every(([id, lv]) => {
             const m = window.onemapWall.markers.get(id); return m && m.options.level === lv; })""",
        arg=final, timeout=60_000)
    applied_s = time.monotonic() - started
    r = await page.evaluate("() => window.__frames.stop()")
    out["update_burst"] = {**frame_stats(r["deltas"], r["seconds"]), "updates": n,
                           "written_in_s": round(wrote_s, 2),
                           "all_applied_after_s": round(applied_s, 2)}
    return out


async def frame_runs(tmp: Path, plan: Plan, browser: Any, villages: Sequence[Village],
                     seed: int) -> dict[str, Any]:
    """Fresh Redis and dashboard; for each marker count, a fresh page measured."""
    port = free_port()
    redis_proc = start_redis("127.0.0.1", port, tmp / "redis-frames", tmp / "redis-frames.log")
    redis_url = f"redis://127.0.0.1:{port}/0"
    dashboard: Dashboard | None = None
    client = aioredis.Redis.from_url(redis_url)
    sink = RedisStateSink(client)
    markers = MarkerSet(villages, seed)
    runs = []
    try:
        frames_tmp = tmp / "frames"
        frames_tmp.mkdir()
        dashboard = start_dashboard(redis_url, frames_tmp)
        for size in plan.frame_sizes:
            say(f"  frame time with {size:,} markers ...")
            started = time.monotonic()
            await write_all(sink, markers.grow(size - len(markers.open)))
            written = time.monotonic() - started
            mirrored = await wait_dashboard_markers(dashboard.url, size)
            load = Load({"dashboard": dashboard.proc.pid})
            opened = time.monotonic()
            wall = await open_wall(browser, dashboard.url, wait_markers=size)
            open_s = time.monotonic() - opened
            page = wall.page
            try:
                shown = await page.evaluate("""() => ({
                    clusters: document.querySelectorAll('.leaflet-marker-pane .cluster').length,
                    single: document.querySelectorAll('.leaflet-marker-pane .hz').length})""")
                measured = await measure_frames(page, markers, sink, plan)
                errors = list(wall.errors)
            finally:
                await page.context.close()
            run = {"markers": size, "redis_write_s": round(written, 2),
                   "dashboard_mirror_after_write_s": round(mirrored, 2),
                   "page_open_to_all_markers_s": round(open_s, 2),
                   "visible_clusters": shown["clusters"], "visible_single": shown["single"],
                   **measured, "page_errors": errors, "load": load.done()}
            runs.append(run)
            say(f"    idle p50 {measured['idle'].get('p50_ms')} ms; zoom/pan p50/p99 "
                f"{measured['zoom_and_pan'].get('p50_ms')}/{measured['zoom_and_pan'].get('p99_ms')}"
                f" ms; burst p50/p99 {measured['update_burst'].get('p50_ms')}/"
                f"{measured['update_burst'].get('p99_ms')} ms")
    finally:
        await client.aclose()
        stop([p for p in ((dashboard.proc if dashboard else None), redis_proc) if p])
    return {"runs": runs}


# --- report ---------------------------------------------------------------------------------

def ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
        and b else None


def compare(latency: dict[str, Any]) -> list[dict[str, Any]]:
    """Pipeline against the in-process baseline, per rate and measure (p50 and p99 ratios)."""
    by = {(r["path"], r["rate"]): r for r in latency["runs"]}
    rows = []
    for (path, rate), run in by.items():
        if path != "pipeline" or ("direct", rate) not in by:
            continue
        base = by[("direct", rate)]
        for key in ("sms_per_message_ms", "sms_first_of_alert_ms", "to_redis_publish_ms",
                    "redis_publish_to_dom_ms", "dom_ticker_row_ms"):
            p, d = run[key], base[key]
            rows.append({"rate": rate, "measure": key,
                         "pipeline_p50": p.get("p50"), "direct_p50": d.get("p50"),
                         "pipeline_minus_direct_p50": round(p["p50"] - d["p50"], 1)
                         if "p50" in p and "p50" in d else None,
                         "ratio_p50": ratio(p.get("p50"), d.get("p50")),
                         "ratio_p99": ratio(p.get("p99"), d.get("p99"))})
    return rows


def frame_ratios(frames: dict[str, Any]) -> list[dict[str, Any]]:
    base, big = frames["runs"][0], frames["runs"][-1]
    rows = []
    for phase in ("idle", "zoom_and_pan", "update_burst"):
        for q in ("p50_ms", "p99_ms", "max_ms"):
            rows.append({"phase": phase, "stat": q, "baseline": base[phase].get(q),
                         "big": big[phase].get(q),
                         "ratio": ratio(big[phase].get(q), base[phase].get(q))})
    return rows


def _s(st: dict[str, Any] | None) -> str:
    if not st or not st.get("n"):
        return "-"
    return f"{st['p50']:,.0f} / {st['p99']:,.0f}"


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lat = r["latency"]
    lines = [
        "Sinks benchmark" + (" (quick)" if r["quick"] else ""),
        "",
        f"{r['date']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"{m['chromium']}, Playwright {m['playwright']}. Machine shared with other sessions: "
        f"load average {r['loadavg_start']} at the start, {r['loadavg_end']} at the end "
        f"(`cpus busy` below is the whole machine, of {m['cpu_count']})."
        + (" Worker settings changed for this run: "
           + ", ".join(f"`{k}={v}`" for k, v in r["worker_env"].items())
           if r["worker_env"] else ""),
        "",
        "## Alert record → SMSC and → wall DOM (ms, p50 / p99)",
        "",
        "`pipeline`: red alert records produced to `onemap.alerts` (aiokafka, acks=1), one "
        "`onemap worker` (SMS over SMPP to the loopback SMSC; dashboard state to Redis), "
        "`onemap dashboard`, the wall page in headless Chromium. `direct`: the same two sinks "
        "called in this process (RedisStateSink; SmsSink on the SMPP provider) - no Kafka, no "
        "worker. Times from handing the record over to: the SMSC storing the submit_sm "
        "(each alert goes to 2-3 officers: every message, the alert's first, its last), the "
        "ticker row in the DOM (MutationObserver), the frame after it, the top-list row. "
        f"Page clock offset {lat['clock']['before']['offset_ms']} ms (round trip "
        f"{lat['clock']['before']['round_trip_ms']} ms), "
        f"{lat['clock']['after']['offset_ms']} ms at the end; corrected for.",
        "",
        "### To the SMSC", "",
        "| path | rate /s | alerts | SMS received | each SMS | alert's first | alert's last | "
        "producer ack | cpus busy | worker CPU s | dashboard CPU s | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in lat["runs"]:
        missing = run["sms_missing"]
        lines.append(
            f"| {run['path']} | {run['alerts_per_s']:g} | {run['alerts']} | "
            f"{run['sms_expected'] - missing}"
            f"{' (**' + str(missing) + ' missing**)' if missing else ''} | "
            f"{_s(run['sms_per_message_ms'])} | {_s(run['sms_first_of_alert_ms'])} | "
            f"{_s(run['sms_last_of_alert_ms'])} | {_s(run['producer_ack_ms'])} | "
            f"{run['load']['cpus_busy']} | {run['load']['worker_cpu_s']} | "
            f"{run['load']['dashboard_cpu_s']} | {run['load']['loadavg']} |")
    lines += ["", "### To the wall's DOM", "",
              "`to Redis`: record handed over → the alert's transition published on "
              "`onemap:events` (seen by a subscriber in this process); `Redis → DOM`: that "
              "publish → the ticker row added (dashboard mirror, its 150 ms push coalescing, "
              "SSE, the page's update); `next frame`: the animation frame after the row was "
              "added.", "",
              "| path | rate /s | to Redis | Redis → DOM | ticker row (total) | next frame | "
              "top-list row | rows missing |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in lat["runs"]:
        missing = run["dom_missing"]["ticker"] + run["dom_missing"]["top"]
        lines.append(
            f"| {run['path']} | {run['alerts_per_s']:g} | {_s(run['to_redis_publish_ms'])} | "
            f"{_s(run['redis_publish_to_dom_ms'])} | {_s(run['dom_ticker_row_ms'])} | "
            f"{_s(run['dom_ticker_row_painted_ms'])} | {_s(run['dom_top_row_ms'])} | "
            f"{missing} |")
    lines += ["", "Pipeline against the in-process baseline (same rate, same run):", "",
              "| rate | measure | pipeline p50 | direct p50 | pipeline − direct | × direct p50 | "
              "× direct p99 |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in r["comparison"]:
        lines.append(f"| {c['rate']} | {c['measure']} | {c['pipeline_p50']} | "
                     f"{c['direct_p50']} | {c['pipeline_minus_direct_p50']} | "
                     f"{c['ratio_p50']} | {c['ratio_p99']} |")
    if r["frames"] is None:
        return "\n".join(lines) + "\n"
    lines += ["", "## Wall frame time (requestAnimationFrame deltas, ms)", "",
              "A fresh Redis and dashboard; the page opened with N open alerts (markers "
              "clustered), then: idle, the zoom/pan moves of tests/browser/"
              "test_wall_10k_markers.py, and a burst of marker updates (red ↔ orange "
              "transitions of open alerts written to Redis at a fixed rate, until the page "
              "shows the last of them).", "",
              "| markers | phase | frames | fps | p50 | p95 | p99 | max | > 50 ms | note |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run in r["frames"]["runs"]:
        for phase in ("idle", "zoom_and_pan", "update_burst"):
            f = run[phase]
            note = ""
            if phase == "update_burst":
                note = (f"{f['updates']:,} updates written in {f['written_in_s']} s, all shown "
                        f"after {f['all_applied_after_s']} s")
            elif phase == "idle":
                note = (f"page open → all markers {run['page_open_to_all_markers_s']} s; "
                        f"{run['visible_clusters']} clusters + {run['visible_single']} single "
                        f"on screen; cpus busy {run['load']['cpus_busy']}")
            lines.append(f"| {run['markers']:,} | {phase} | {f.get('frames')} | {f.get('fps')} | "
                         f"{f.get('p50_ms')} | {f.get('p95_ms')} | {f.get('p99_ms')} | "
                         f"{f.get('max_ms')} | {f.get('over_50ms')} | {note} |")
    base, big = r["frames"]["runs"][0]["markers"], r["frames"]["runs"][-1]["markers"]
    lines += ["", f"{big:,} markers against {base:,} (× baseline):", "",
              "| phase | stat | baseline | big | × baseline |",
              "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {x['phase']} | {x['stat']} | {x['baseline']} | {x['big']} | {x['ratio']} |"
              for x in r["frame_ratios"]]
    return "\n".join(lines) + "\n"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright
    plan = QUICK if args.quick else FULL
    if not (os.path.exists(CHROMIUM)):
        raise SystemExit(f"Chromium not found at {CHROMIUM} (ONEMAP_TEST_CHROMIUM=path)")
    result: dict[str, Any] = {"date": datetime.now(UTC).replace(microsecond=0).isoformat(),
                              "quick": args.quick, "machine": machine(),
                              "plan": dataclasses.asdict(plan), "loadavg_start": loadavg(),
                              "worker_env": args.worker_env}
    roster = load_roster(default_registries_dir() / "duty_roster.yaml")
    registries = Registries.load(default_registries_dir())
    villages = load_villages()
    tmp = Path(tempfile.mkdtemp(prefix="onemap-bench-sinks-"))
    try:
        say("starting broker, Redis, loopback SMSC, worker, dashboard ...")
        started = time.monotonic()
        stack = start_stack(tmp, args.worker_env)
        everything = [stack.procs[n] for n in ("dashboard", "worker", "smsc", "redis", "broker")]
        try:
            result["startup_s"] = round(time.monotonic() - started, 1)
            alerts = RedAlerts(stack.prefix, villages, roster, registries, args.seed)
            result["villages_used"] = len(alerts.villages)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS, headless=True)
                try:
                    wall = await open_wall(browser, stack.dashboard.url)
                    await wall.page.evaluate(PROBE)
                    say("latency runs ...")
                    result["latency"] = await latency_runs(stack, plan, wall, alerts,
                                                           roster=roster, registries=registries)
                    await wall.page.context.close()
                    stop(everything)  # the frame-time runs need none of them: less load
                    result["frames"] = None
                    if args.frames:
                        say("frame-time runs ...")
                        result["frames"] = await frame_runs(tmp, plan, browser, villages,
                                                            args.seed)
                finally:
                    await browser.close()
        finally:
            stop(everything)
    finally:
        if args.keep:
            say(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["comparison"] = compare(result["latency"])
    result["frame_ratios"] = frame_ratios(result["frames"]) if result["frames"] else None
    result["loadavg_end"] = loadavg()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (component logs, the SMSC's outbox)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="ONEMAP_X=VALUE",
                    help="a setting for the worker (A/B runs), e.g. ONEMAP_BATCH_WAIT=0.005")
    ap.add_argument("--frames", action=argparse.BooleanOptionalAction, default=True,
                    help="run the frame-time part (default: yes)")
    ap.add_argument("--name", default="sinks",
                    help="results file stem: OUT/NAME.json and OUT/NAME.md")
    args = ap.parse_args(argv)
    env: dict[str, str] = {}
    for item in args.worker_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("ONEMAP_"):
            ap.error(f"--worker-env wants ONEMAP_NAME=VALUE, got {item!r}")
        env[key] = value
    args.worker_env = env
    r = asyncio.run(run(args))
    text = markdown(r)
    print(text)
    write_results(args.out, args.name, r, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
