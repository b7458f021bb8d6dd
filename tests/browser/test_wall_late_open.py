"""A wall page opened in the middle of an alert burst converges to exactly Redis's state.

Issue 6: "a browser reconnecting or opening late gets the current state at once". The sink
benchmark saw a page opened during a 10,000-alert burst never show all the markers. Here the
worker's own Redis writer writes a burst (new alerts, escalations and resolutions of alerts of
the same burst, so the deltas touch markers the page's first snapshot already holds) while a
fresh page opens early, in the middle and late in it. Right after the page is opened the writer
waits until the page has asked for the event stream and then writes the rest, so every round has
deltas arriving while the page is still loading its snapshot (without the wait a slow machine
could finish the burst first and prove nothing). Once the burst is over, the page must show what
Redis holds: each open alert once on the map at its level (in the wall's model and in the
cluster layer), the counts by level, the total and the top list in Redis's order.

Before the fix, the middle and late rounds failed every run: the cluster layer held duplicates
of markers that an update changed while the snapshot's chunked add was still running, and the
total under the top list stayed at its old value whenever the top rows did not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import shapely

from onemap.levels import COLOURS, WarningLevel
from onemap.records import Alert
from onemap.sinks.base import Outcome
from onemap.sinks.dashboard.live import TOP_K
from onemap.sinks.dashboard.state import RedisStateSink, alert_key, open_key
from tests.browser import kit
from tests.browser.conftest import RunningDashboard, new_wall_page

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: New alerts per round; escalations and resolutions of some of them come on top.
NEW_PER_ROUND = 3_000
BATCH = 150
#: (name, share of the burst written before the page is opened)
ROUNDS = (("early", 0.05), ("middle", 0.5), ("late", 0.9))
LEVEL_NAMES = {int(c): c.label for c in COLOURS}

#: The page's view: each open marker's level in the wall's model and in the cluster layer
#: (a duplicated marker or a stale one left in the cluster shows here), counts and lists.
PAGE_VIEW = """() => {
  const w = window.onemapWall;
  const model = {};
  w.markers.forEach(function (mk, id) { model[id] = mk.options.level; });
  const cluster = {}, dup = [];
  w.cluster.getLayers().forEach(function (mk) {
    const id = mk.options.hazardId;
    if (id in cluster) dup.push(id);
    cluster[id] = mk.options.level;
  });
  const kpis = {};
  document.querySelectorAll('#kpis .kpi').forEach(function (k) {
    const lv = Array.from(k.classList).find(function (c) { return c.startsWith('level-'); });
    kpis[lv.slice(6)] = Number(k.querySelector('.kpi-num').textContent);
  });
  const city = {};
  document.querySelectorAll('#area-info .ai-counts span').forEach(function (c) {
    city[c.className.slice(2)] = Number(c.textContent.replace(/[^0-9]/g, ''));
  });
  return {model: model, city: city, modelSize: w.markers.size, cluster: cluster,
          clusterSize: w.cluster.getLayers().length, duplicates: dup.slice(0, 20),
          kpis: kpis, total: document.getElementById('open-total').textContent,
          top: Array.from(document.querySelectorAll('#top-list li.alert'))
                 .map(function (li) { return li.dataset.hazard; }),
          states: w.stateCount, updates: w.updateCount};
}"""

#: True once the page's model and cluster layer hold exactly ``want`` (id → level).
CONVERGED = """(want) => {
  const w = window.onemapWall, ids = Object.keys(want);
  if (w.markers.size !== ids.length) return false;
  const layers = w.cluster.getLayers();
  if (layers.length !== ids.length) return false;
  for (const id of ids) {
    const mk = w.markers.get(id);
    if (!mk || mk.options.level !== want[id]) return false;
  }
  const seen = new Set();
  for (const mk of layers) {
    const id = mk.options.hazardId;
    if (seen.has(id) || want[id] !== mk.options.level) return false;
    seen.add(id);
  }
  return true;
}"""


class Burst:
    """The alerts of every round. Exposures are unique, so every score is unique and the top
    list has one right order (the ranking's tie-breaks are per process)."""

    def __init__(self) -> None:
        self.count = 0
        self.villages = kit.admin_map().village

    def _alert(self, round_name: str, level: WarningLevel, k: int, *, seq: int = 1,
               transition: str = "new") -> Alert:
        v = (k * 7) % len(self.villages.codes)
        minx, miny, maxx, maxy = (float(b) for b in
                                  shapely.bounds(self.villages.geometry[v]))
        fx, fy = ((k * 37) % 101) / 101, ((k * 59) % 103) / 103
        return kit.make_alert(
            self.villages.codes[v], level, source_id=f"{round_name}{k:05d}",
            hazard_type=list(kit.KINDS)[k % len(kit.KINDS)], seq=seq, transition=transition,
            exposure=(k * 7919 % 20_000) / 1000,  # unique per k; levels' scores never overlap
            at=(minx + fx * (maxx - minx), miny + fy * (maxy - miny)))

    def batches(self, round_name: str) -> list[list[Alert]]:
        """New alerts in batches; from the second batch on, each batch also escalates (to
        red) and resolves alerts of earlier batches of this burst."""
        out: list[list[Alert]] = []
        live: dict[int, Alert] = {}  # k → latest transition of each open alert of the burst
        for start in range(0, NEW_PER_ROUND, BATCH):
            earlier = sorted(live)
            batch = []
            for _ in range(min(BATCH, NEW_PER_ROUND - start)):
                k = self.count
                self.count += 1
                live[k] = self._alert(round_name, COLOURS[k % 3], k)  # blue, yellow, orange
                batch.append(live[k])
            if earlier:
                step = len(out)
                for k in earlier[step * 7 % len(earlier)::97][:6]:
                    if live[k].level != WarningLevel.RED:
                        live[k] = self._alert(round_name, WarningLevel.RED, k,
                                              seq=live[k].seq + 1, transition="escalated")
                        batch.append(live[k])
                for k in earlier[step * 11 % len(earlier)::131][:3]:
                    if k in live:
                        batch.append(kit.resolve(live.pop(k)))
            out.append(batch)
        return out


def events_requests(dash: RunningDashboard) -> float:
    """How many times a browser has asked for the event stream (a counter: only grows)."""
    status, _, body = dash.get("/metrics")
    assert status == 200
    found = re.search(r'^onemap_dashboard_requests_total\{route="events"\} (\S+)$',
                      body.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class Writer(threading.Thread):
    """Writes a burst with the worker's sink, on its own thread (Playwright owns this one):
    says when ``open_after`` batches are written, and writes batch ``hold_at`` and the rest
    only after the page has asked for /api/events."""

    def __init__(self, dash: RunningDashboard, batches: list[list[Alert]], open_after: int,
                 hold_at: int) -> None:
        super().__init__(daemon=True)
        self.dash = dash
        self.batches = batches
        self.open_after = open_after
        self.hold_at = hold_at
        self.page_may_open = threading.Event()
        self.events_before = events_requests(dash)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._write())
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.page_may_open.set()

    async def _write(self) -> None:
        sink = RedisStateSink(aioredis.Redis.from_url(self.dash.redis_url))
        try:
            for i, batch in enumerate(self.batches):
                if i == self.open_after:
                    self.page_may_open.set()
                if i == self.hold_at:
                    started = time.monotonic()
                    while events_requests(self.dash) <= self.events_before:
                        if time.monotonic() - started > 30:
                            raise AssertionError("the page never asked for /api/events")
                        await asyncio.sleep(0.02)
                outcomes = await sink.send(batch)
                assert all(o in (Outcome.DELIVERED, Outcome.DUPLICATE) for o in outcomes)
                await asyncio.sleep(0.03)  # a burst, not one write: deltas keep coming
        finally:
            await sink.close()


def redis_truth(redis_url: str) -> tuple[dict[str, int], list[str]]:
    """Open actual alerts in Redis: id → marker level, and ids most urgent first."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ids = [str(i) for i in client.zrevrange(open_key("actual"), 0, -1)]
        pipe = client.pipeline(transaction=False)
        for hazard_id in ids:
            pipe.hget(alert_key(hazard_id), "alert")
        rows = pipe.execute()
    finally:
        client.close()
    levels = {}
    for hazard_id, row in zip(ids, rows, strict=True):
        alert = Alert.from_json(row.encode())
        levels[hazard_id] = int(alert.level)
    return levels, ids


@pytest.fixture()
def fresh_page(browser: Any, dashboard: RunningDashboard
               ) -> Iterator[Callable[[], tuple[Any, list[str]]]]:
    """Opens a wall page (logged in) and returns at once: no wait for its first state."""
    contexts: list[Any] = []

    def open_page() -> tuple[Any, list[str]]:
        page, errors = new_wall_page(browser, contexts)
        page.goto(f"{dashboard.url}/?token={dashboard.token}")
        return page, errors

    yield open_page
    for context in contexts:
        context.close()


@pytest.mark.parametrize("round_name,share", ROUNDS, ids=[r[0] for r in ROUNDS])
def test_page_opened_mid_burst_converges_to_redis(
        round_name: str, share: float, fresh_page: Callable[[], tuple[Any, list[str]]],
        dashboard: RunningDashboard, burst: Burst) -> None:
    batches = burst.batches(round_name)
    open_after = int(len(batches) * share)
    hold_at = min(open_after + 1, len(batches) - 1)
    writer = Writer(dashboard, batches, open_after, hold_at)
    writer.start()
    assert writer.page_may_open.wait(60)
    page, errors = fresh_page()
    writer.join(90)
    assert not writer.is_alive(), "the burst did not finish"
    if writer.error is not None:
        raise writer.error

    view, summary = converged_view(page, dashboard.redis_url)
    assert_page_shows(view, summary)
    assert errors == [], errors


@pytest.fixture(scope="module")
def burst() -> Burst:
    """One generator for the module's rounds, so each round's alerts are new ones."""
    return Burst()


def converged_view(page: Any, redis_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait (up to 30 s) until the page shows what Redis holds; the page's view, with the
    truth (``want``, ``ranked``), and a summary of any difference for the asserts' messages."""
    want, ranked = redis_truth(redis_url)
    assert len(want) > NEW_PER_ROUND // 2  # the burst really left thousands open
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # see conftest.browser

    with contextlib.suppress(PlaywrightTimeout):  # on a time-out, the asserts say what differs
        page.wait_for_function(CONVERGED, arg=want, timeout=30_000, polling=250)
    view = page.evaluate(PAGE_VIEW)
    missing = [i for i in want if i not in view["cluster"]]
    stale = [i for i in view["cluster"] if i not in want]
    wrong = [i for i in want if i in view["cluster"] and view["cluster"][i] != want[i]]
    summary = {"redis": len(want), "model": view["modelSize"], "cluster": view["clusterSize"],
               "duplicates": view["duplicates"], "missing": missing[:10], "stale": stale[:10],
               "wrong_level": wrong[:10], "states": view["states"],
               "updates": view["updates"]}
    view["want"], view["ranked"] = want, ranked
    view["page_csp"] = page.evaluate("window.__cspViolations || []")
    return view, summary


def assert_page_shows(view: dict[str, Any], summary: dict[str, Any]) -> None:
    """Every marker, count and the top list as Redis has them, and no CSP violation."""
    want, ranked = view["want"], view["ranked"]
    assert view["model"] == want, summary
    assert view["clusterSize"] == len(want) and view["cluster"] == want, summary
    counts = {c.label: 0 for c in COLOURS}
    for level in want.values():
        counts[LEVEL_NAMES[level]] += 1
    assert view["kpis"] == counts
    assert view["city"] == {c: n for c, n in counts.items() if n}  # the city panel's counts
    assert view["total"] == str(len(want))
    assert view["top"] == ranked[:TOP_K]  # unique scores: one right order
    assert view["page_csp"] == []
