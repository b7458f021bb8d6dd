"""A wall page whose event stream is cut in the middle of an alert burst converges to Redis.

Issue 6: "a browser reconnecting or opening late gets the current state at once". The late-open
test (test_wall_late_open.py) opens a fresh page mid-burst; this one keeps one page open and
cuts its event stream mid-burst, the way a network blip or a proxy dropping idle streams does.

How the page reconnects: /api/events is a server-sent event stream (EventSource) that sends
``retry: 1000``; when the stream breaks, Chromium reconnects by itself a second later and the
server answers every connect with a full ``state`` snapshot followed by ``update`` deltas. When
the EventSource gives up (readyState CLOSED), the page checks /api/config and opens a new one
two seconds later. The server also closes the stream of a browser too slow to keep up (its
queue of 256 pushes is full), which ends the same way: the browser reconnects.

How the stream is cut: Playwright's ``context.set_offline(True)`` does not break a stream that
is already open in Chromium (tried: the EventSource stays open and no error fires), and routing
cannot cut a response half-way. So the page talks to the dashboard through a TCP forwarder in
this test, which can reset every open connection at once (the browser sees the stream break,
possibly in the middle of an event) and can refuse new connections for a while (an outage:
the browser's reconnects fail until it is over). The writer cuts at fixed batches of the burst,
keeps writing while the page is away, and holds a later batch until the page has asked for the
stream again, so deltas also arrive while the page is applying its fresh snapshot.

Once the burst is over the page must show exactly what Redis holds: each open alert once on the
map at its level (model and cluster layer, no duplicates), the counts by level, the total, the
top list in Redis's order, the connection badge back at 实时; no console errors (other than
Chromium's own "Failed to load resource" line for each failed /api/events or /api/config
request) and no CSP violations. A page that ignored the snapshot of a reconnect, or kept the
markers a snapshot no longer holds, fails here (tried: both leave hundreds of markers wrong).

The server's own drop of a slow client is not provoked here: its queue holds 256 pushes at
one per 0.15 s, so it takes ~40 s of a stalled page, and the queue size has no setting.

"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from onemap.records import Alert
from onemap.sinks.base import Outcome
from onemap.sinks.dashboard.state import RedisStateSink
from tests.browser.conftest import RunningDashboard, new_wall_page
from tests.browser.test_wall_late_open import (
    Burst,
    assert_page_shows,
    converged_view,
    events_requests,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: name → cuts: batch index → (seconds the outage lasts after the cut, what a connection
#: gets meanwhile). The burst has 20 batches.
#: "blips": two short breaks; the browser's own retry (a second later) gets through.
#: "outage": the stream is down for 2.5 s, reconnects are reset (the browser keeps retrying);
#: the burst goes on meanwhile, so the fresh snapshot brings ~1,000 new markers, added in
#: chunks while deltas go on; then a blip.
#: "gateway": a blip right after the page's first snapshot (its chunked add may still run),
#: then 2.5 s of "502 Bad Gateway" from the proxy: the EventSource gives up (CLOSED) and the
#: page's own reconnect (check /api/config, retry) has to bring it back.
ROUNDS: dict[str, dict[int, tuple[float, str]]] = {
    "blips": {4: (0.0, "reset"), 11: (0.0, "reset")},
    "outage": {5: (2.5, "reset"), 13: (0.0, "reset")},
    "gateway": {0: (0.0, "reset"), 8: (2.5, "502")},
}
#: after a cut, this many batches are written before the writer waits for the page to be back
LAG = 3
#: What Chromium itself logs when a request of the page's reconnect fails: the cut stream, a
#: reset reconnect, the 502 of the outage (the page's own code logs nothing).
NETWORK_LINE = re.compile(
    r"^console\.error: Failed to load resource: (net::ERR_[A-Z_]+|the server responded "
    r"with a status of 502 \(Bad Gateway\)) @ http://127\.0\.0\.1:\d+/api/(events|config)$")

#: Counts the page's EventSource errors and opens (read-only wrapper; injected before the page).
ES_PROBE = """
window.__esLog = {opens: 0, errors: 0, closed: 0, events: []};
(function () {
  const Native = window.EventSource, log = window.__esLog;
  function Counted(url, init) {
    const es = new Native(url, init);
    es.addEventListener("open", function () { log.opens++; log.events.push("open"); });
    es.addEventListener("error", function () {
      log.errors++;
      log.events.push(es.readyState === Native.CLOSED ? "closed" : "error");
      if (es.readyState === Native.CLOSED) log.closed++;
    });
    es.addEventListener("state", function (e) {
      log.events.push("state " + JSON.parse(e.data).markers.length);
    });
    es.addEventListener("update", function (e) {
      const m = JSON.parse(e.data).markers;
      log.events.push("update " + (m.upsert.length + m.remove.length));
    });
    return es;
  }
  Counted.prototype = Native.prototype;
  Counted.CONNECTING = Native.CONNECTING;
  Counted.OPEN = Native.OPEN;
  Counted.CLOSED = Native.CLOSED;
  window.EventSource = Counted;
})();
"""


class CuttableProxy:
    """A TCP forwarder between the browser and the dashboard. ``cut()`` resets every open
    connection (RST to the browser, the dashboard's side closed); ``refuse_s`` after it, new
    connections are reset as soon as they are accepted."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.refuse_until = 0.0
        self.answer = "reset"  # what a refused connection gets: "reset" or "502"
        self.cuts = 0
        self.refused = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)  # wakes the pump blocked in recv()
        sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                refuse = self.closed or time.monotonic() < self.refuse_until
                if refuse:
                    self.refused += 1
                gateway = refuse and not self.closed and self.answer == "502"
            if gateway:
                threading.Thread(target=self._bad_gateway, args=(client,), daemon=True).start()
                continue
            if refuse:
                self._reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            pair = (client, server)
            with self.lock:
                self.pairs.add(pair)
            threading.Thread(target=self._pump, args=(client, server, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, pair), daemon=True).start()

    @staticmethod
    def _bad_gateway(client: socket.socket) -> None:
        """What a reverse proxy answers while the dashboard behind it is unreachable."""
        with contextlib.suppress(OSError), client:
            client.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            body = b"<html><body>502 Bad Gateway</body></html>"
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                           % (len(body), body))

    def _pump(self, src: socket.socket, dst: socket.socket,
              pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:  # either side gone: the connection is over (HTTP/1.1 does not half-close)
            with self.lock:
                self.pairs.discard(pair)
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut(self, refuse_s: float = 0.0, answer: str = "reset") -> int:
        """Reset every open connection; for ``refuse_s`` after, new ones get ``answer``
        ("reset" or "502"). How many connections were cut."""
        with self.lock:
            self.refuse_until = time.monotonic() + refuse_s
            self.answer = answer
            pairs = list(self.pairs)
            self.pairs.clear()
            self.cuts += 1
        for client, server in pairs:
            self._reset(client)
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
        return len(pairs)

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.listener.close()
        self.cut()


class CuttingWriter(threading.Thread):
    """Writes a burst with the worker's sink on its own thread (Playwright owns this one).
    Before batch ``i`` of ``cuts`` it cuts the page's connections; ``LAG`` batches later it
    waits until the page has asked for /api/events again, then writes the rest."""

    def __init__(self, dash: RunningDashboard, proxy: CuttableProxy,
                 batches: list[list[Alert]], cuts: dict[int, tuple[float, str]]) -> None:
        super().__init__(daemon=True)
        self.dash = dash
        self.proxy = proxy
        self.batches = batches
        self.cuts = cuts
        self.cut_streams: list[int] = []  # connections open at each cut
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._write())
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    async def _write(self) -> None:
        sink = RedisStateSink(aioredis.Redis.from_url(self.dash.redis_url))
        back_at: dict[int, float] = {}  # batch index → events requests seen before the cut
        pace = 0.0  # extra pause between batches while the page is kept away
        try:
            for i, batch in enumerate(self.batches):
                if i in self.cuts:
                    back_at[i + LAG] = events_requests(self.dash)
                    refuse_s, answer = self.cuts[i]
                    self.cut_streams.append(self.proxy.cut(refuse_s, answer))
                    # during an outage the writes go on at the burst's pace, not all at once
                    pace = refuse_s / LAG
                if i in back_at:
                    pace = 0.0
                    started = time.monotonic()
                    while events_requests(self.dash) <= back_at[i]:
                        if time.monotonic() - started > 30:
                            raise AssertionError("the page never asked for /api/events again")
                        await asyncio.sleep(0.02)
                outcomes = await sink.send(batch)
                assert all(o in (Outcome.DELIVERED, Outcome.DUPLICATE) for o in outcomes)
                await asyncio.sleep(0.03 + pace)  # a burst, not one write: deltas keep coming
        finally:
            await sink.close()


@pytest.fixture(scope="module")
def proxy(dashboard: RunningDashboard) -> Iterator[CuttableProxy]:
    split = urlsplit(dashboard.url)
    assert split.hostname is not None and split.port is not None
    forwarder = CuttableProxy((split.hostname, split.port))
    yield forwarder
    forwarder.close()


@pytest.fixture()
def wall_via_proxy(browser: Any, dashboard: RunningDashboard, proxy: CuttableProxy
                   ) -> Iterator[Callable[[], tuple[Any, list[str]]]]:
    """Opens a wall page (logged in) through the proxy and waits for its first state."""
    contexts: list[Any] = []

    def open_page() -> tuple[Any, list[str]]:
        page, errors = new_wall_page(browser, contexts, init_scripts=(ES_PROBE,))
        page.goto(f"http://127.0.0.1:{proxy.port}/?token={dashboard.token}")
        page.wait_for_function("() => window.onemapWall && window.onemapWall.stateCount > 0",
                               timeout=15_000)
        return page, errors

    yield open_page
    for context in contexts:
        context.close()


@pytest.mark.parametrize("round_name", list(ROUNDS))
def test_page_reconnecting_mid_burst_converges_to_redis(
        round_name: str, burst: Burst, dashboard: RunningDashboard, proxy: CuttableProxy,
        wall_via_proxy: Callable[[], tuple[Any, list[str]]]) -> None:
    cuts = ROUNDS[round_name]
    batches = burst.batches(round_name)
    assert max(cuts) + LAG < len(batches)  # every reconnect happens before the burst ends
    page, errors = wall_via_proxy()
    states_before = page.evaluate("window.onemapWall.stateCount")
    refused_before = proxy.refused
    writer = CuttingWriter(dashboard, proxy, batches, cuts)
    writer.start()
    writer.join(90)
    assert not writer.is_alive(), "the burst did not finish"
    if writer.error is not None:
        raise writer.error
    assert all(writer.cut_streams), writer.cut_streams  # each cut broke an open stream

    view, summary = converged_view(page, dashboard.redis_url)
    es_log = page.evaluate("window.__esLog")
    summary.update(event_source=es_log, refused=proxy.refused)
    # the stream really broke and the page really came back with a fresh snapshot each time
    assert es_log["errors"] >= len(cuts), summary
    assert view["states"] >= states_before + len(cuts), summary
    refused = [answer for refuse_s, answer in cuts.values() if refuse_s]
    if refused:
        assert proxy.refused > refused_before, summary  # the outage turned reconnects away
    if "502" in refused:  # the EventSource gave up and the page itself reconnected
        assert es_log["closed"] >= 1, summary
    assert_page_shows(view, summary)
    assert page.locator("#conn").text_content() == "实时"  # not left saying "重连中"
    page_errors = [e for e in errors if not NETWORK_LINE.match(e)]
    assert page_errors == [], errors


@pytest.fixture(scope="module")
def burst() -> Burst:
    """One generator for the module's rounds, so each round's alerts are new ones."""
    return Burst()
