"""Kit for the scale-out and fault tests: a deterministic phased scenario, the alerts the pure
stages make of it, and readers that put the ledger, the Redis state and the SMSC in a form
that can be compared.

Why phases: an alert's urgency score and its inhibition depend on the other open hazards of
its district (rules/lifecycle.py), so two hazards of one district that change in the same
instant could reach the lifecycle stage in either order (they come from different
observation partitions) and be scored differently, with one worker as with two. Each phase
changes at most one hazard per district, and the next phase is produced only once every
alert of the previous one is on the ledger: then the order the lifecycle stage sees is fixed,
and one worker, two workers, a crashed-and-restarted worker and the pure stages run in
process must all issue the very same alerts, scores included.

Every water station used reports in every phase (at a normal level unless the scenario says
otherwise), five minutes of event time apart, so no source ever looks silent (that would add
"sensor silent" hazards at a moment set by a wall-clock timer, not by the data).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

import redis
from kafka import KafkaProducer, TopicPartition

from onemap.embedded import (
    broker_binary,
    groups_settled,
    onemap_command,
    spawn,
    start_broker,
    tcp_ready,
    wait_until,
)
from onemap.errors import ComponentError
from onemap.records import Alert
from onemap.registries import default_registries_dir
from onemap.settings import Settings
from onemap.sinks.sms.roster import load_roster
from onemap.sinks.sms.sink import SENT_KEY_PREFIX, messages_for
from onemap.sinks.sms.smsc import Smsc
from onemap.streams.context import WorkerContext, build_context
from onemap.streams.deadletter import RawRecord
from tests.conftest import worker_env
from tests.integration.kafka_helpers import produce_keyed, read_until, reading_consumer
from tests.proxy_kit import forward

T = TypeVar("T")
CST = timezone(timedelta(hours=8))
BASE = datetime(2017, 8, 23, 10, 0, tzinfo=CST)
STEP = timedelta(minutes=5)
#: the issue time is the worker's clock: the one thing about an alert a re-run may change
#: (its own, and those of the earlier transitions it lists for CAP references)
VOLATILE = ("issued_at",)
SMSC_PASSWORD = "Fk3pQ9"

# -- the scenario ------------------------------------------------------------------------------

#: water stations (not the waterlogging points: they report every minute, and a five-minute
#: step would make them silent) -> their normal level, a metre below their lowest bound
NORMAL = {
    "ZH-RES-001": 41.0, "ZH-RES-002": 52.5, "ZH-RES-003": 26.0, "ZH-RES-004": 19.5,
    "ZH-RES-005": 97.5, "ZH-RES-006": 30.0, "ZH-RES-007": 35.0,
    "ZH-RIV-001": 0.3, "ZH-RIV-002": 0.9, "ZH-RIV-003": 0.8, "ZH-RIV-004": 0.6,
    "ZH-RIV-005": 0.5, "ZH-RIV-006": 0.7,
    "ZH-TIDE-001": 0.9, "ZH-TIDE-002": 1.0, "ZH-TIDE-003": 1.2, "ZH-TIDE-004": 1.0,
    "ZH-TIDE-005": 1.1, "ZH-TIDE-006": 1.1,
}

#: (phase, station) -> level from that phase on (until the next entry of the station).
#: 香洲区: TIDE-005 yellow, red; TIDE-006 orange beside it; 斗门区: RIV-003 red, RES-006
#: yellow in the same town (muted by the red), RIV-002 orange, RES-006 orange (no longer
#: muted), RIV-003 back to normal (resolved after the hold); 金湾区: TIDE-002 yellow,
#: RES-007 red in the same town, then orange.
WATER_SCRIPT: dict[tuple[int, str], float] = {
    (0, "ZH-TIDE-005"): 2.45, (1, "ZH-TIDE-005"): 3.12, (3, "ZH-TIDE-006"): 2.75,
    (0, "ZH-RIV-003"): 2.95, (1, "ZH-RES-006"): 32.2, (2, "ZH-RIV-002"): 2.8,
    (4, "ZH-RES-006"): 33.6, (5, "ZH-RIV-003"): 0.8,
    (2, "ZH-TIDE-002"): 2.4, (3, "ZH-RES-007"): 38.7, (6, "ZH-RES-007"): 38.35,
}

#: (phase, incident record): 119 fire in 香洲区 that grows, then closes; a landslide in
#: 斗门区; a traffic accident in 金湾区 that escalates and is handled.
INCIDENTS: list[tuple[int, dict[str, Any]]] = [
    (2, {"incident_id": "119-FT-1", "channel": "119", "category": "fire", "lon": 113.576,
         "lat": 22.271, "injured": 12}),
    (4, {"incident_id": "119-FT-1", "channel": "119", "category": "fire", "lon": 113.576,
         "lat": 22.271, "injured": 12, "status": "closed"}),
    (3, {"incident_id": "110-FT-2", "channel": "110", "category": "landslide", "lon": 113.30,
         "lat": 22.23}),
    (0, {"incident_id": "110-FT-3", "channel": "110", "category": "traffic", "lon": 113.40,
         "lat": 22.08, "injured": 3}),
    (1, {"incident_id": "110-FT-3", "channel": "110", "category": "traffic", "lon": 113.40,
         "lat": 22.08, "injured": 55}),
    (5, {"incident_id": "110-FT-3", "channel": "110", "category": "traffic", "lon": 113.40,
         "lat": 22.08, "injured": 55, "status": "handled"}),
]

PHASES = 9

Record = tuple[bytes, bytes]  # (key, value)


def phase_records(phase: int) -> dict[str, list[Record]]:
    """feed -> (key, value) records of one phase, in produce order."""
    at = (BASE + phase * STEP).isoformat()
    water: list[Record] = []
    for station, normal in NORMAL.items():
        level = normal
        for p in range(phase + 1):
            level = WATER_SCRIPT.get((p, station), level)
        water.append((station.encode(), json.dumps(
            {"station_id": station, "observed_at": at, "level_m": level}).encode()))
    incidents = [(r["incident_id"].encode(), json.dumps({**r, "observed_at": at}).encode())
                 for p, r in INCIDENTS if p == phase]
    return {"water": water, "incident": incidents}


def noise_records(phase: int, count: int) -> list[Record]:
    """``count`` more readings of the normal stations at ``phase``'s time: load that changes
    nothing (the same reading again is a duplicate to the rules stage)."""
    quiet = [s for s in NORMAL if not any(st == s for _, st in WATER_SCRIPT)]
    at = (BASE + phase * STEP).isoformat()
    return [(s.encode(), json.dumps({"station_id": s, "observed_at": at,
                                     "level_m": NORMAL[s]}).encode())
            for s in (quiet[i % len(quiet)] for i in range(count))]


# -- what the pure stages make of it ------------------------------------------------------------

@functools.cache
def pure_context() -> WorkerContext:
    """The worker's own stages, built once from the shipped data (as `onemap worker` does)."""
    return build_context(Settings.from_env(env={}))


def expected_phases(phases: int = PHASES) -> list[list[Alert]]:
    """The alerts of each phase from the pure stages in process, phase by phase."""
    ctx = pure_context()
    book = ctx.rulebook.current
    source_state: dict[str, Any] = {}
    alert_state: dict[str, Any] = {}
    out: list[list[Alert]] = []
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for phase in range(phases):
        alerts: list[Alert] = []
        for feed, records in phase_records(phase).items():
            raw = [RawRecord(value, key) for key, value in records]
            ingested = ctx.ingest.process(feed, raw)
            assert not ingested.dead_letters, ingested.dead_letters
            ruled = ctx.rules.process(ingested.observations, source_state, book)
            alerts += ctx.lifecycle.process(ruled.hazards, alert_state, book.urgency,
                                            book.lifecycle, now=now)
        out.append(alerts)
    return out


def content(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert as JSON less what a re-run may change (issue times)."""
    out = {k: v for k, v in alert.items() if k not in VOLATILE}
    if "earlier" in out:
        out["earlier"] = [pair[0] for pair in out["earlier"]]
    return out


def expected_by_id(phases: list[list[Alert]]) -> dict[str, dict[str, Any]]:
    return {a.alert_id: content(json.loads(a.to_json())) for p in phases for a in p}


# -- driving a run --------------------------------------------------------------------------------

def ledger(bootstrap: str, topic: str, want: set[str],
           timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every alert on the ledger, read until all of ``want`` are there (or timeout)."""
    def done(records: list[tuple[bytes | None, bytes]]) -> bool:
        return want <= {json.loads(v)["alert_id"] for _, v in records}

    return [json.loads(v) for _, v in read_until(bootstrap, topic, done, timeout_s)]


def produce_phase(bootstrap: str, prefix: str, phase: int,
                  producer: KafkaProducer | None = None) -> None:
    for feed, records in phase_records(phase).items():
        if records:
            produce_keyed(bootstrap, f"{prefix}.in.{feed}", records, producer)


class LedgerReader:
    """Reads the alert ledger as it grows, with one consumer (no group) for a whole run."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = reading_consumer(bootstrap, auto_offset_reset="earliest")
        partitions = wait_for(lambda: self.consumer.partitions_for_topic(topic), 30,
                              f"topic {topic}")
        self.consumer.assign([TopicPartition(topic, p) for p in partitions])
        self.consumer.seek_to_beginning()
        self.records: list[dict[str, Any]] = []

    def until(self, want: set[str], timeout_s: float) -> list[dict[str, Any]]:
        """Every record so far, read until all of ``want`` are there (or timeout)."""
        deadline = time.monotonic() + timeout_s
        seen = {r["alert_id"] for r in self.records}
        while not want <= seen and time.monotonic() < deadline:
            for messages in self.consumer.poll(timeout_ms=200).values():
                for m in messages:
                    self.records.append(json.loads(m.value))
                    seen.add(self.records[-1]["alert_id"])
        return list(self.records)

    def close(self) -> None:
        self.consumer.close()


def run_phases(bootstrap: str, prefix: str, phases: list[list[Alert]], *,
               between: Callable[[int], None] | None = None, timeout_s: float = 90.0,
               produce: Callable[[int], bool] = lambda phase: True,
               ) -> list[dict[str, Any]]:
    """Produce each phase and wait until its alerts are on the ledger; the whole ledger.

    ``between(phase)`` runs after a phase is produced, before waiting for its alerts (for
    faults that must strike while the phase is flowing); a phase for which ``produce`` says
    False is left for ``between`` to produce.
    """
    want: set[str] = set()
    records: list[dict[str, Any]] = []
    reader = LedgerReader(bootstrap, f"{prefix}.alerts")
    try:
        for phase, alerts in enumerate(phases):
            if produce(phase):
                produce_phase(bootstrap, prefix, phase)
            if between is not None:
                between(phase)
            want |= {a.alert_id for a in alerts}
            records = reader.until(want, timeout_s)
            missing = want - {r["alert_id"] for r in records}
            assert not missing, f"phase {phase}: alerts missing from the ledger: {sorted(missing)}"
    finally:
        reader.close()
    return records


def compare_ledger(records: list[dict[str, Any]], expected: dict[str, dict[str, Any]],
                   ) -> Counter[str]:
    """Assert the ledger holds exactly the expected alerts (a repeat after a crash must be
    the same alert again); returns how often each id appears."""
    seen: Counter[str] = Counter(r["alert_id"] for r in records)
    extra = [(r["alert_id"], r["transition"], r["previous_level"], r["level"],
              r["hazard"]["observed_at"], r["issued_at"])
             for r in records if r["alert_id"] not in expected]
    assert set(seen) == set(expected), (
        f"missing: {sorted(set(expected) - set(seen))}, unexpected: {extra}")
    for r in records:
        assert content(r) == expected[r["alert_id"]], (
            f"{r['alert_id']} differs from the expected alert:\n{json.dumps(content(r))}\n"
            f"{json.dumps(expected[r['alert_id']])}")
    return seen


def first_issue(records: list[dict[str, Any]]) -> dict[str, Alert]:
    """alert id -> the alert as first issued on the ledger (what the sinks got first)."""
    out: dict[str, Alert] = {}
    for r in records:
        out.setdefault(r["alert_id"], Alert.from_json(json.dumps(r).encode()))
    return out


# -- the dashboard state in Redis ---------------------------------------------------------------

def expected_dashboard(expected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the Redis state sink must hold after every alert is applied once, in order."""
    latest: dict[str, dict[str, Any]] = {}
    for alert in expected.values():
        current = latest.get(alert["hazard_id"])
        if current is None or alert["seq"] > current["seq"]:
            latest[alert["hazard_id"]] = alert
    return {
        "alerts": {h: (a["seq"], a) for h, a in latest.items()},
        "open": {h: a["score"] for h, a in latest.items() if a["transition"] != "resolved"},
        "ticker": sorted(expected),
    }


def dashboard(client: redis.Redis) -> dict[str, Any]:
    """The dashboard state of the actual alerts, in the form of :func:`expected_dashboard`;
    the ticker as the sorted ids it lists (each applied transition is pushed once)."""
    alerts: dict[str, tuple[int, dict[str, Any]]] = {}
    for key in client.scan_iter(match="onemap:alert:*"):
        seq, raw = cast(list[bytes], client.hmget(key, ["seq", "alert"]))
        alerts[_text(key).removeprefix("onemap:alert:")] = (int(seq), content(json.loads(raw)))
    members = cast(list[tuple[bytes, float]],
                   client.zrange("onemap:alerts:open:actual", 0, -1, withscores=True))
    ticker = cast(list[bytes], client.lrange("onemap:ticker:actual", 0, -1))
    return {
        "alerts": alerts,
        "open": {_text(m): score for m, score in members},
        "ticker": sorted(json.loads(r)["alert_id"] for r in ticker),
    }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_dashboard(client: redis.Redis, want: dict[str, Any], timeout_s: float,
                   alive: Callable[[], None] | None = None) -> None:
    """Wait until the dashboard state is ``want``; on timeout, say what differs."""
    try:
        wait_for(lambda: dashboard(client) == want, timeout_s, "the dashboard state", alive)
    except AssertionError:
        got = dashboard(client)
        diff = {part: {k: (got[part].get(k), want[part].get(k))
                       for k in set(got[part]) | set(want[part])
                       if got[part].get(k) != want[part].get(k)}
                for part in ("alerts", "open")}
        raise AssertionError(f"dashboard differs (got, want): {diff}; ticker "
                             f"{got['ticker']} != {want['ticker']}") from None


def wait_for(check: Callable[[], T], timeout_s: float, what: str,
             alive: Callable[[], None] | None = None) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


# -- SMS --------------------------------------------------------------------------------------

def expected_sms_keys(alerts: dict[str, Alert]) -> set[str]:
    """The idempotency key (``alert_id/recipient_id``) of every message the alerts make."""
    ctx = pure_context()
    roster = load_roster(_registries_dir() / "duty_roster.yaml")
    return {m.key for alert in alerts.values()
            for m in messages_for(alert, roster, ctx.registries)}


def sms_claims(client: redis.Redis) -> dict[str, str]:
    """key -> state of every SMS idempotency claim (sinks/sms/storm_store.py)."""
    return {_text(k).removeprefix(SENT_KEY_PREFIX): _text(client.get(k) or b"")
            for k in client.scan_iter(match=f"{SENT_KEY_PREFIX}*")}


def sms_settled(client: redis.Redis, keys: set[str]) -> bool:
    """Every message has been decided for good: sent, failed, or held for a summary."""
    claims = sms_claims(client)
    return all(claims.get(k, "pending") != "pending" for k in keys)


def check_sms(client: redis.Redis, keys: set[str],
              gateway: Counter[tuple[str, str]]) -> None:
    """Every message of the alerts is accounted for and none reached the gateway twice.

    Storm protection (sinks/sms/storm.py) may hold a message for a later summary, so the
    check is made on the claims rather than on an expected list of texts: each message has
    a final claim (never still ``pending``, never missing), and the gateway holds exactly one
    message per claim that says ``delivered`` (single messages and summaries alike).
    """
    claims = sms_claims(client)
    unsettled = {k: claims.get(k) for k in keys if claims.get(k, "pending") == "pending"}
    assert not unsettled, f"messages never sent (claim missing or left pending): {unsettled}"
    twice = {m: n for m, n in gateway.items() if n > 1}
    assert not twice, f"sent more than once: {twice}"
    delivered = sum(1 for v in claims.values() if v == "delivered")
    assert sum(gateway.values()) == delivered, (
        f"{sum(gateway.values())} messages at the gateway, {delivered} claims delivered")


def _registries_dir() -> Path:
    return Path(default_registries_dir())


class SmscThread:
    """The loopback SMSC (sinks/sms/smsc.py) on its own event loop in a thread, so a worker
    in a subprocess can reach it while the test reads what it received."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.smsc = Smsc("onemap", SMSC_PASSWORD, receipt_delay=0.0)
        self.smsc.receipts = False
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SmscThread:
        self._thread.start()
        self.call(self.smsc.start())
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self.smsc.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def set(self, **attributes: Any) -> None:
        """Change the SMSC's fault knobs (answering, fail_fraction...) on its own loop."""
        def apply() -> None:
            for name, value in attributes.items():
                setattr(self.smsc, name, value)
        self.loop.call_soon_threadsafe(apply)

    def url(self, timeout_s: float = 1.0) -> str:
        return (f"smpp://onemap@127.0.0.1:{self.smsc.port}?source_addr=12110"
                f"&timeout={timeout_s}&reconnect_min=0.1&reconnect_max=1&enquire_link=5")

    def count(self) -> int:
        return len(self.smsc.messages)

    def received(self, since: int = 0) -> Counter[tuple[str, str]]:
        """(phone, text) of every complete message the SMSC accepted (after the first
        ``since``)."""
        return Counter((m.destination, m.text) for m in list(self.smsc.messages)[since:])

    def refused(self) -> int:
        return sum(1 for s in list(self.smsc.submits) if s.status != 0)


# -- processes --------------------------------------------------------------------------------

@dataclasses.dataclass
class Worker:
    """An `onemap worker` subprocess of a test."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['ONEMAP_METRICS_PORT']}/metrics"

    def alive(self) -> None:
        assert self.proc.poll() is None, (
            f"worker exited with {self.proc.returncode}:\n"
            + self.log.read_text(errors="replace")[-4000:])

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the series of ``name`` whose labels include ``labels``."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            got = series[len(name):]
            if got and got[0] not in "{ ":
                continue
            if all(f'{k}="{v}"' in got for k, v in labels.items()):
                total += float(value)
        return total

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """SIGSTOP for the block, SIGCONT after it: whatever the block writes to Kafka is all
        there when the worker goes on (keep it well inside the group's session timeout)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)


def start_sms_worker(kafka_url: str, redis_url: str, smsc: SmscThread, tmp: Path, *,
                     prefix: str, name: str = "w", **extra: str) -> Worker:
    """A worker of ``prefix``'s run that sends its SMS to the loopback SMSC, with its own data
    directory (and log) ``tmp/PREFIX-NAME``."""
    data = tmp / f"{prefix}-{name}"
    data.mkdir(exist_ok=True)
    env = worker_env(kafka_url, redis_url, data, prefix, ONEMAP_SMS_OUTBOX=smsc.url(),
                     ONEMAP_SMS_SECRET=SMSC_PASSWORD, **extra)
    return start_worker(env, data / "worker.log")


def start_worker(env: dict[str, str], log: Path) -> Worker:
    """Start `onemap worker` and wait until its metrics answer (it is consuming soon after)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(onemap_command("worker"), env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent)
    worker = Worker(proc, env, log)

    def up() -> bool:
        try:
            urllib.request.urlopen(worker.metrics_url, timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(up, 60, f"worker (log: {log})", proc)
    return worker


def wait_group_settled(workers: list[Worker], timeout_s: float = 60.0) -> None:
    """Wait until every worker joined the same (latest) generation of each of the worker's
    consumer groups and is ready in it (onemap.embedded.groups_settled)."""
    def alive() -> None:
        for w in workers:
            w.alive()

    wait_for(lambda: groups_settled([w.log.read_text(errors="replace") for w in workers]),
             timeout_s, "the consumer group to settle", alive)


class TcpProxy:
    """A TCP forwarder in a thread: the broker as clients see it. ``cut()`` drops every
    connection and refuses new ones (the broker process gone), ``restore()`` accepts again
    (the broker back, with its data, as a restarted Kafka broker is)."""

    def __init__(self, target_port: int, port: int) -> None:
        self.target_port = target_port
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                      reuse_address=True)
        self._run(listen())

    def cut(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for w in list(self._writers):
                w.transport.abort()
        self._run(close())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await forward(reader, writer, ("127.0.0.1", self.target_port), self._writers)


def start_broker_behind(proxy_port: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Tansu on a free port, advertising ``proxy_port``: every client connection, the
    metadata-directed ones included, then goes through the proxy."""
    port = free_port()
    env = {**os.environ, "CLUSTER_ID": "onemap-faults", "RUST_LOG": "warn"}
    proc = spawn([broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                  "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}",
                  "--storage-engine", "memory://tansu/"], env=env, log_path=log)
    wait_until(tcp_ready("127.0.0.1", port), 20, "Tansu", proc)
    return proc, port


# -- a broker that survives a restart ----------------------------------------------------------

S3_BUCKET = "tansu"


def start_s3_server(log: Path, timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], int]:
    """A local S3 server (moto's, run by this interpreter) on a free loopback port, with the
    bucket a durable Tansu writes to. Its objects live in its own memory: they outlive any
    number of broker restarts, and go with the test."""
    port = free_port()
    proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 log_path=log)
    try:
        wait_until(tcp_ready("127.0.0.1", port), timeout_s, "the S3 server (moto)", proc)
    except ComponentError as exc:  # most likely moto[server] is missing: say so
        raise ComponentError(f"{exc} (is `moto[server]` installed? the test extras have "
                             f"it):\n{log.read_text(errors='replace')[-2000:]}") from None
    # moto's server does not check signatures: a bare PUT creates the bucket
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{S3_BUCKET}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, f"creating the bucket: HTTP {response.status}"
    return proc, port


class DurableBroker:
    """Tansu keeping topics, records and committed offsets in S3 (:func:`start_s3_server`):
    killed and started again on the same port and storage, it comes back with its data, as
    a restarted Kafka broker does. (The embedded default's memory storage loses everything
    with the process, so restarting that one is no test of the worker.)

    The broker advertises its own port, so clients reconnect to the very address they knew;
    between :meth:`kill` and :meth:`start` nothing listens there (connections are refused).
    """

    CLUSTER_ID = "onemap-durable"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.s3_proc, self.s3_port = start_s3_server(tmp / "s3.log")
        self.proc: subprocess.Popen[bytes] | None = None
        #: how often the broker was started (1 after the first start)
        self.starts = 0

    def __enter__(self) -> DurableBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.tmp / "broker.log"

    def _env(self) -> dict[str, str]:
        # Tansu's S3 client (the object_store crate) reads these; the credentials are
        # placeholders moto accepts, the region one moto knows
        return {"AWS_ACCESS_KEY_ID": "onemap", "AWS_SECRET_ACCESS_KEY": "onemap",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT": f"http://127.0.0.1:{self.s3_port}", "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout_s: float = 30.0) -> None:
        """Start Tansu on the broker's port and storage (as ``onemap up --broker-storage``
        does), and wait until it accepts.

        A start right after a kill may find the port still held for a moment (the kernel
        closing the dead process's sockets): then it tries again until ``timeout_s``."""
        assert self.proc is None or self.proc.poll() is not None, "the broker is running"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.proc = start_broker(
                    "127.0.0.1", self.port, self.log, max(1.0, deadline - time.monotonic()),
                    storage=f"s3://{S3_BUCKET}/", env=self._env(), cluster_id=self.CLUSTER_ID)
                break
            except ComponentError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: a crash, with no shutdown of any kind."""
        assert self.proc is not None and self.proc.poll() is None, "the broker is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        from onemap.embedded import stop
        stop([p for p in (self.proc, self.s3_proc) if p is not None])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefix_for(name: str) -> str:
    return f"{name}{int(time.time() * 1000) % 10_000_000}"


@contextlib.contextmanager
def stopping(workers: list[Worker]) -> Iterator[list[Worker]]:
    """Stop (SIGTERM, then SIGKILL) whatever workers the list holds at the end."""
    from onemap.embedded import stop
    try:
        yield workers
    finally:
        stop([w.proc for w in workers])


# -- the outcome of a run -----------------------------------------------------------------------

def check_run(bootstrap: str, prefix: str, client: redis.Redis, smsc: SmscThread,
              phases: list[list[Alert]], *, workers: list[Worker],
              before: int) -> list[dict[str, Any]]:
    """A run's ledger, dashboard and SMS are exactly right: every expected alert on
    ``prefix``'s ledger with exactly the expected content (a repeat must be the same alert),
    the Redis dashboard state that of applying each alert once, every SMS settled and none
    at the SMSC twice. ``before``: how many SMSC messages earlier runs left. Returns the
    ledger. (test_faults.py's ``check_outcome`` is this, on its rig.)"""
    expected = expected_by_id(phases)
    records = ledger(bootstrap, f"{prefix}.alerts", set(expected))
    compare_ledger(records, expected)

    def alive() -> None:
        for w in workers:
            w.alive()

    wait_dashboard(client, expected_dashboard(expected), 90, alive=alive)
    keys = expected_sms_keys(first_issue(records))
    try:
        wait_for(lambda: sms_settled(client, keys), 40, "every SMS to be settled", alive)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{explain_unsettled(client, keys, workers, prefix)}") from None
    finally:
        check_sms(client, keys, smsc.received(since=before))
    return records


def explain_unsettled(client: redis.Redis, keys: set[str], workers: list[Worker],
                      prefix: str) -> str:
    """What a run's workers did with the messages still unsettled: each claim's state and
    age, the SMS sink's deliveries by outcome per worker, and the lines of every worker log
    of the run (killed workers' too) that name the message or its alert."""
    claims = sms_claims(client)
    logs = sorted({w.log for w in workers} | {  # the run's workers: tmp/PREFIX-NAME/
        p for w in workers for p in w.log.parent.parent.glob(f"{prefix}-*/{w.log.name}")})
    log_lines = {log: log.read_text(errors="replace").splitlines() if log.exists() else []
                 for log in logs}
    lines = []
    for key in sorted(k for k in keys if claims.get(k, "pending") == "pending"):
        ttl = client.ttl(SENT_KEY_PREFIX + key)
        lines.append(f"unsettled {key}: claim {claims.get(key, 'missing')!r}, TTL {ttl} s")
        alert_id = key.split("/")[0]
        for log, text in log_lines.items():
            hits = [ln for ln in text if key in ln or alert_id in ln]
            lines.append(f"  {log}: {len(hits)} lines")
            lines.extend(f"    {ln[:300]}" for ln in hits[-8:])
    for w in workers:
        try:
            outcomes = str({o: w.metric("onemap_sink_deliveries_total", sink="sms", outcome=o)
                            for o in ("delivered", "duplicate", "retry", "failed")})
        except OSError as exc:
            outcomes = f"metrics unavailable: {exc!r}"
        lines.append(f"worker {w.log}: SMS deliveries {outcomes}")
    return "\n".join(lines)
