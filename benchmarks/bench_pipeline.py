"""End-to-end pipeline benchmark: records/s per worker and event → alert latency.

Why: issue 7 asks for the throughput per worker at which consumer lag stays flat, and the
event → alert latency (p50/p99) at several rates, with one and with two workers; the targets
are >= 20,000 records/s per worker on one core and p99 < 500 ms at 5,000 records/s. This runs
the real thing: the embedded broker (Tansu) and redis-server as the tests start them, and
`onemap worker` subprocesses (SMS to a file outbox) in one consumer group.

Workload (seeded, realistic): readings of the fixture registries' river, reservoir and tide
stations (``onemap.in.water``) and automatic weather stations (``onemap.in.weather``), keyed
by station. Every source reports in rounds five minutes of event time apart, in order, so its
per-source state reaches its real size (24 h of history); almost every reading is normal and
stops at the rules stage, and a small seeded share (``--alert-fraction``) crosses a
threshold (a water level over 警戒水位, a gust over 8级) and comes back, which makes a
``new`` and, once the downgrade hold has passed, a ``resolved`` alert. The waterlogging points
are left out: they must report every minute, and at a five-minute step they would be
reported silent on every reading.

What is measured, for each group size (1, then 2 workers):

* **capacity** (drain): the workers are paused (SIGSTOP), a backlog is produced, they are
  resumed, and the rate at which the rules stage works it off (``onemap_rule_decisions_total``
  from every worker's /metrics, between 10 % and 90 % of the backlog) is the most the
  pipeline sustains end to end. Also per CPU-second of the workers (their utime + stime), which
  is what "per worker on one core" means on a shared machine.
* **rate steps**: records produced at a fixed rate (open loop, 20 ms ticks) for a while; the
  backlog (produced minus processed by the rules stage) is sampled: "flat" when its growth
  over the second half of the step is under 2 % of the offered rate. Event → alert latency:
  from the moment a reading is handed to the producer to the moment its alert is read back
  from ``onemap.alerts`` by this process (matched by source id and event time), p50/p99.
* **baseline**, in this process on the same broker: a plain aiokafka consume → produce loop
  forwarding the same records (``getmany`` + ``send`` without awaiting each); the results
  report the pipeline's rate as a ratio to it (DESIGN.md: ratios against a baseline run in the
  same process).
* **floor**, the same way: those records forwarded as the worker produces (one batch per
  partition, streams/outbox.py) and then consumed again by a second consumer in the same
  event loop, the two hops DESIGN's topics make every reading take
  (feed → observations → the rules), without any stage's work. The targets table says what
  it leaves of a core for the stages at the target rate.
* **profile** (full run): one worker runs under a sampling profiler (this file run as a
  script with ``--as-worker``: a thread samples every thread's stack every few ms) while
  it drains a backlog (or, with ``--profile-rate R``, during the rate step at R rec/s);
  where its time goes (faust and aiokafka internals, our stages, JSON, the producer, idle)
  is written to the results.

``--network N`` runs another workload: N synthetic weather stations (registered in a copy of
the fixture registries the workers load, each a few metres from a fixture station) besides
the fixture's, so that at the target rate each source reports about once per commit
interval, as a city's network of sensors reporting every few minutes does: a source's state
is then written (its head split and encoded) for every reading, not once per ~30 readings
as with the fixture's 165 sources. Its warm-up fills 2 h of history per source
(``NETWORK_WARM_ROUNDS``), not 24 h: 24 h of every source would take minutes and gigabytes.

The machine is shared (2 cores; other processes may run): /proc/loadavg is recorded at each
measurement, and the CPU-normalised rates are the figures to compare across runs.

Usage::

    python -m benchmarks.bench_pipeline            # full: 1 and 2 workers, profile; ~15 min
    python -m benchmarks.bench_pipeline --quick    # tiny, 1 worker, no profile (smoke test)
    python -m benchmarks.bench_pipeline --out DIR  # write DIR/pipeline.json and .md instead
    python -m benchmarks.bench_pipeline --workers 1 --profile-rate 2000  # a moderate rate
    python -m benchmarks.bench_pipeline --workers 1 --network 10000   # a sensor network
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
CST = timezone(timedelta(hours=8))
#: event time of the first round; every source reports once per round, STEP_S apart
BASE = datetime(2026, 7, 1, 0, 0, tzinfo=CST)
STEP_S = 300
PARTITIONS = 4
TICK_S = 0.02
#: how often the workers' processed count is read from their /metrics (drains and steps): a
#: scrape is not free (at four a second ~9 % of a worker's busy time; Prometheus scrapes
#: every 15 s: deploy/prometheus/prometheus.yml)
SAMPLE_S = 1.0
#: "flat": backlog growth over the second half of a step below this share of the rate
FLAT_SHARE = 0.02
#: ``--network``: rounds of warm-up (2 h of history per source at STEP_S)
NETWORK_WARM_ROUNDS = 24
#: ``--network``: how far a synthetic station lies from the fixture station it is placed by
#: (degrees; ~10 m: the same village, inside the map)
NETWORK_JITTER_DEG = 1e-4


def warm_history(network: bool) -> str:
    """How much history per source the warm-up fills.

    >>> warm_history(False), warm_history(True)
    ('24 h', '2 h')
    """
    return f"{NETWORK_WARM_ROUNDS * STEP_S / 3600:g} h" if network else "24 h"
TARGET_PER_WORKER = 20_000.0
TARGET_P99_S = 0.5
TARGET_P99_RATE = 5_000.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the workload -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Source:
    """One station: its feed, id and how its normal and threshold-crossing readings look."""

    feed: str
    source_id: str
    normal: float  # water: level (m); weather: unused
    peak: float  # water: a level just over 警戒水位; weather: a gust over 8级


@dataclasses.dataclass(frozen=True)
class Record:
    topic_feed: str
    key: bytes
    value: bytes
    source_id: str
    event_s: float  # epoch seconds of observed_at
    crossing: bool


def network_registries(directory: Path, stations: int, seed: int = 11) -> Path:
    """A copy of the fixture registries in ``directory`` with ``stations`` more weather
    stations (``ZH-NET-00001``...), each placed ~10 m from a fixture weather station picked
    in turn, reporting every 300 s; returns ``directory``."""
    from onemap.registries import default_registries_dir
    fixture = Path(default_registries_dir())
    shutil.copytree(fixture, directory)
    path = directory / "weather_stations.csv"
    rows = path.read_text(encoding="utf-8").splitlines()
    header, fixture_rows = rows[0].split(","), [r.split(",") for r in rows[1:] if r]
    lon_i, lat_i = header.index("lon"), header.index("lat")
    rnd = random.Random(seed)
    lines = []
    for i in range(stations):
        near = fixture_rows[i % len(fixture_rows)]
        lon = float(near[lon_i]) + rnd.uniform(-NETWORK_JITTER_DEG, NETWORK_JITTER_DEG)
        lat = float(near[lat_i]) + rnd.uniform(-NETWORK_JITTER_DEG, NETWORK_JITTER_DEG)
        lines.append(f"ZH-NET-{i + 1:05d},网络站{i + 1:05d},{lon:.6f},{lat:.6f},300")
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return directory


def sources(registries: Path | None = None) -> list[Source]:
    """The registries' water stations (not waterlogging points) and weather stations (the
    fixture's unless ``registries`` is given)."""
    from onemap.registries import Registries, default_registries_dir
    reg = Registries.load(registries or Path(default_registries_dir()))
    out: list[Source] = []
    for sid, st in sorted(reg.water.items()):
        if st.kind == "waterlogging":
            continue
        # the lowest colour bound of each kind (rules/default/water_level.yaml), less a metre
        lowest = (st.flood_limit_level_m if st.kind == "reservoir"
                  and st.flood_limit_level_m is not None else st.warning_level_m - 0.30)
        out.append(Source("water", sid, round(lowest - 1.0, 2),
                          round(st.warning_level_m + 0.05, 2)))
    out += [Source("weather", sid, 0.0, 20.0) for sid in sorted(reg.weather)]
    return out


class Workload:
    """Seeded readings in rounds: each round every source reports once, in a shuffled order,
    at ``BASE + round * STEP_S``; a reading crosses a threshold with probability
    ``crossing_p`` (not twice within ``cooldown`` rounds, so that each crossing makes one
    ``new`` and one ``resolved`` alert)."""

    def __init__(self, srcs: Sequence[Source], alert_fraction: float, seed: int = 7,
                 cooldown: int = 30) -> None:
        self.sources = list(srcs)
        self.rnd = random.Random(seed)
        # two alerts (new, resolved) per crossing
        self.crossing_p = alert_fraction / 2
        self.cooldown = cooldown
        self.round = 0
        self.pending: list[Source] = []
        self.last_crossing: dict[str, int] = {}

    def take(self, n: int) -> list[Record]:
        out: list[Record] = []
        while len(out) < n:
            if not self.pending:
                self.pending = self.sources[:]
                self.rnd.shuffle(self.pending)
                self.round += 1
            out.append(self.reading(self.pending.pop()))
        return out

    def reading(self, src: Source) -> Record:
        rnd = self.rnd
        at = BASE + timedelta(seconds=self.round * STEP_S)
        crossing = (rnd.random() < self.crossing_p
                    and self.round - self.last_crossing.get(src.source_id, -10**9)
                    > self.cooldown)
        if crossing:
            self.last_crossing[src.source_id] = self.round
        obj: dict[str, Any] = {"station_id": src.source_id, "observed_at": at.isoformat()}
        if src.feed == "water":
            obj["level_m"] = src.peak if crossing else round(
                src.normal + rnd.uniform(-0.1, 0.1), 2)
        else:
            # rain stays far below 50 mm in 12 h; wind below 6级 mean and 8级 gust
            obj["rain_mm"] = 0.0 if rnd.random() < 0.9 else round(rnd.uniform(0.1, 0.2), 1)
            obj["wind_speed_ms"] = round(rnd.uniform(2.0, 6.0), 1)
            obj["wind_gust_ms"] = src.peak if crossing else round(rnd.uniform(4.0, 10.0), 1)
        return Record(src.feed, src.source_id.encode(), json.dumps(obj).encode(),
                      src.source_id, at.timestamp(), crossing)


# -- machine, processes, metrics ----------------------------------------------------------------

def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def machine() -> dict[str, Any]:
    import aiokafka
    import faust
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "faust": faust.__version__, "aiokafka": aiokafka.__version__,
            "platform": platform.platform()}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def metric_sum(text: str, name: str, exclude: dict[str, str] | None = None) -> float:
    """Sum of the series of ``name`` in an exposition, less those carrying ``exclude``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        rest = series[len(name):]
        if rest and rest[0] not in "{ ":
            continue
        if exclude and any(f'{k}="{v}"' in rest for k, v in exclude.items()):
            continue
        total += float(value)
    return total


@dataclasses.dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log: Path

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n"
                               + self.log.read_text(errors="replace")[-3000:])

    def processed(self) -> float:
        """Observations the rules stage has processed (every decision but silence checks)."""
        return metric_sum(scrape(self.metrics_url), "onemap_rule_decisions_total",
                          {"decision": "source-silent"})

    def lag(self) -> float:
        return metric_sum(scrape(self.metrics_url), "onemap_consumer_lag_records")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


def worker_env(bootstrap: str, redis_url: str, data: Path, prefix: str,
               metrics_port: int, *, registries: Path | None = None) -> dict[str, str]:
    """The environment of a benchmark worker: the embedded-default group timeouts of the
    tests, its own topics, SMS to a file outbox (and ``registries`` instead of the
    fixture's)."""
    return {
        **({"ONEMAP_REGISTRIES_DIR": str(registries)} if registries else {}),
        **{k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")},
        "ONEMAP_KAFKA": f"kafka://{bootstrap}", "ONEMAP_REDIS": redis_url,
        "ONEMAP_APP_ID": f"{prefix}-app", "ONEMAP_TOPIC_PREFIX": prefix,
        "ONEMAP_PARTITIONS": str(PARTITIONS), "ONEMAP_METRICS_PORT": str(metrics_port),
        "ONEMAP_DATA_DIR": str(data), "ONEMAP_SMS_OUTBOX": f"file://{data / 'sms-outbox.jsonl'}",
        "ONEMAP_REBALANCE_TIMEOUT": "6", "ONEMAP_SESSION_TIMEOUT": "6",
        "ONEMAP_HEARTBEAT_INTERVAL": "1", "ONEMAP_LOG_LEVEL": "INFO",
    }


def start_worker(env: dict[str, str], data: Path, profile_out: Path | None = None,
                 prelude: Path | None = None) -> WorkerProc:
    from onemap.embedded import onemap_command, spawn, wait_until
    data.mkdir(parents=True, exist_ok=True)
    log = data / "worker.log"
    argv = onemap_command("worker")
    if profile_out is not None or prelude is not None:
        # this file as a script: the prelude and/or the sampler, then `onemap worker`
        argv = [sys.executable, "-P", str(Path(__file__).resolve()), "--as-worker",
                str(profile_out or ""), str(prelude or "")]
    proc = spawn(argv, env=env, log_path=log)
    worker = WorkerProc(proc, f"http://127.0.0.1:{env['ONEMAP_METRICS_PORT']}/metrics", log)

    def up() -> bool:
        try:
            urllib.request.urlopen(worker.metrics_url, timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(up, 90, f"worker (log: {log})", proc)
    except Exception as exc:
        raise RuntimeError(f"{exc}:\n{log.read_text(errors='replace')[-3000:]}") from exc
    return worker


def wait_settled(workers: Sequence[WorkerProc], timeout_s: float = 90.0) -> None:
    """Every worker joined the same (latest) generation of each of a worker's consumer groups
    and is ready in it (onemap.embedded.groups_settled)."""
    from onemap.embedded import groups_settled
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            w.alive()
        if groups_settled([w.log.read_text(errors="replace") for w in workers]):
            return
        time.sleep(0.25)
    raise RuntimeError("the consumer group did not settle in time")


# -- the asynchronous driver: producer, alert reader, steps ----------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


#: the hops of an alert's latency, from the records' broker timestamps (CreateTime: when
#: the stage handed the record to its producer) and the driver's wall clock
HOPS = ("feed → hazard", "hazard → alert", "alert → read")


class Driver:
    """Produces the workload with aiokafka (batches per partition, murmur2 like the Java
    client), reads ``onemap.alerts`` back and matches each alert to its reading; reads
    ``onemap.hazards`` too, to split each latency into :data:`HOPS` (ingest and rules; the
    alert lifecycle; the alert's way back to a reader)."""

    def __init__(self, bootstrap: str, prefix: str, workload: Workload) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.workload = workload
        #: per reading (source, event seconds): the monotonic and the wall-clock send time
        self.sent_at: dict[tuple[str, float], tuple[float, float]] = {}
        #: per reading: the broker timestamp of its first hazard record
        self.hazard_at: dict[tuple[str, float], float] = {}
        self.latencies: list[float] = []
        #: per matched alert: seconds spent in each of :data:`HOPS`
        self.hops: list[tuple[float, float, float]] = []
        self.alerts_seen = 0
        self.unmatched = 0
        self.produced = 0
        self._partitions: dict[str, list[int]] = {}
        #: each source key's topic and partition
        self._where: dict[bytes, tuple[str, int]] = {}
        self._reader: asyncio.Task[None] | None = None
        #: per reading: when this driver read its first hazard record (wall clock)
        self.hazard_read_at: dict[tuple[str, float], float] = {}
        #: with ``BENCH_ALERT_LOG=<path>``: a line per matched alert (its reading's send
        #: time on the monotonic clock, which the worker's diagnostics share, and its hops)
        log_path = os.environ.get("BENCH_ALERT_LOG")
        self.alert_log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115

    async def __aenter__(self) -> Driver:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.partitioner import DefaultPartitioner
        self.partitioner = DefaultPartitioner()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1,
                                         linger_ms=5, max_batch_size=256 * 1024)
        await self.producer.start()
        for feed in ("water", "weather"):
            topic = f"{self.prefix}.in.{feed}"
            self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                         enable_auto_commit=False, fetch_max_wait_ms=10)
        await self.consumer.start()
        await self._assign_alerts()
        self._reader = asyncio.create_task(self._read_alerts())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.consumer.stop()
        await self.producer.stop()
        if self.alert_log is not None:
            self.alert_log.close()

    def new_step(self) -> None:
        """Forget the readings and alerts matched so far (a rate step starts)."""
        for readings in (self.sent_at, self.hazard_at, self.hazard_read_at):
            readings.clear()
        self.latencies = []
        self.hops = []
        self.unmatched = 0

    async def _assign_alerts(self) -> None:
        from aiokafka import TopicPartition
        tps = []
        for topic in (f"{self.prefix}.alerts", f"{self.prefix}.hazards"):
            parts = sorted(await self.producer.partitions_for(topic))
            tps += [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)

    async def _read_alerts(self) -> None:
        alerts = f"{self.prefix}.alerts"
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            now, wall = time.monotonic(), time.time()
            for tp, messages in batches.items():
                if tp.topic != alerts:
                    for m in messages:
                        reading = reading_of(json.loads(m.value))
                        self.hazard_at.setdefault(reading, m.timestamp / 1000)
                        self.hazard_read_at.setdefault(reading, wall)
                    continue
                for m in messages:
                    self.alerts_seen += 1
                    key = reading_of(json.loads(m.value)["hazard"])
                    sent = self.sent_at.get(key)
                    if sent is None:
                        self.unmatched += 1
                        continue
                    self.latencies.append(now - sent[0])
                    hazard_at = self.hazard_at.get(key)
                    if hazard_at is not None:
                        alert_at = m.timestamp / 1000
                        self.hops.append((hazard_at - sent[1], alert_at - hazard_at,
                                          wall - alert_at))
                        if self.alert_log is not None:
                            read = self.hazard_read_at.get(key, hazard_at)
                            self.alert_log.write(
                                f"{sent[0]:.3f} total {(now - sent[0]) * 1000:.0f} "
                                f"feed>hazard {(hazard_at - sent[1]) * 1000:.0f} "
                                f"hazard>read {(read - hazard_at) * 1000:.0f} "
                                f"hazard>alert {(alert_at - hazard_at) * 1000:.0f} "
                                f"alert>read {(wall - alert_at) * 1000:.0f}\n")

    async def send(self, records: Sequence[Record], track: bool) -> list[asyncio.Future[Any]]:
        """Hand ``records`` to the producer in one batch per partition; with ``track`` each
        threshold-crossing reading's send time is kept for the latency match."""
        by_tp: dict[tuple[str, int], list[Record]] = {}
        where = self._where
        for r in records:
            tp = where.get(r.key)
            if tp is None:  # murmur2 in Python: once per source, not per reading
                topic = f"{self.prefix}.in.{r.topic_feed}"
                parts = self._partitions[topic]
                tp = where[r.key] = (topic, self.partitioner(r.key, parts, parts))
            by_tp.setdefault(tp, []).append(r)
        now, wall = time.monotonic(), time.time()
        futures: list[asyncio.Future[Any]] = []
        for (topic, p), rs in by_tp.items():
            batch = self.producer.create_batch()
            for r in rs:
                if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=p))
                    batch = self.producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=None)
            futures.append(await self.producer.send_batch(batch, topic, partition=p))
        if track:
            for r in records:  # every reading: a "resolved" alert comes of a normal one
                self.sent_at[(r.source_id, r.event_s)] = (now, wall)
        self.produced += len(records)
        return futures

    async def produce_now(self, n: int) -> float:
        """``n`` records as fast as possible, all acknowledged; returns the seconds it took."""
        records = self.workload.take(n)
        started = time.monotonic()
        futures: list[asyncio.Future[Any]] = []
        for i in range(0, len(records), 5000):
            futures += await self.send(records[i:i + 5000], track=False)
        await asyncio.gather(*futures)
        return time.monotonic() - started


def reading_of(hazard: dict[str, Any]) -> tuple[str, float]:
    """The reading a hazard record (or an alert's hazard) came of: (source, event seconds)."""
    return hazard["source_id"], datetime.fromisoformat(hazard["observed_at"]).timestamp()


def hop_percentiles(hops: Sequence[tuple[float, ...]]) -> dict[str, dict[str, float | None]]:
    """p50 / p99 / max milliseconds of each of :data:`HOPS` (each hop on its own: the
    alerts at a hop's p99 need not be those at the total's)."""
    out: dict[str, dict[str, float | None]] = {}
    for i, hop in enumerate(HOPS):
        values = [h[i] for h in hops]
        out[hop] = {q: (round(v * 1000, 1) if v is not None else None) for q, v in (
            ("p50_ms", percentile(values, 50)), ("p99_ms", percentile(values, 99)),
            ("max_ms", max(values) if values else None))}
    return out


class Group:
    """N workers of one consumer group, with their own topics."""

    def __init__(self, workers: list[WorkerProc]) -> None:
        self.workers = workers

    def processed(self) -> float:
        return sum(w.processed() for w in self.workers)

    def cpu(self) -> list[float]:
        return [w.cpu() for w in self.workers]

    def alive(self) -> None:
        for w in self.workers:
            w.alive()

    def pause(self) -> None:
        for w in self.workers:
            os.kill(w.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        for w in self.workers:
            os.kill(w.proc.pid, signal.SIGCONT)


async def wait_processed(group: Group, target: float, timeout_s: float,
                         samples: list[tuple[float, float]] | None = None,
                         interval_s: float = SAMPLE_S) -> bool:
    """Wait until the rules stage has processed ``target`` records (sampling the count
    every :data:`SAMPLE_S`; crossing times are interpolated between samples, so a drain of
    several seconds loses no precision).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group.alive()
        n = await asyncio.to_thread(group.processed)
        if samples is not None:
            samples.append((time.monotonic(), n))
        if n >= target:
            return True
        await asyncio.sleep(interval_s)
    return False


def crossing_time(samples: Sequence[tuple[float, float]], level: float) -> float | None:
    """When the sampled count reached ``level`` (linear between samples)."""
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if n0 < level <= n1:
            return t0 + (t1 - t0) * (level - n0) / (n1 - n0)
    return None


async def drain(driver: Driver, group: Group, backlog: int, *, expected_rate: float,
                broker_pid: int | None = None) -> dict[str, Any]:
    """Pause the workers, produce ``backlog`` records, resume them and time the work-off."""
    records = driver.workload.take(backlog)  # generated before the pause: keep it short
    base = await asyncio.to_thread(group.processed)
    group.pause()
    try:
        started = time.monotonic()
        futures: list[asyncio.Future[Any]] = []
        for i in range(0, len(records), 5000):
            futures += await driver.send(records[i:i + 5000], track=False)
        await asyncio.gather(*futures)
        produce_s = time.monotonic() - started
    finally:
        group.resume()
    load = loadavg()
    t0 = time.monotonic()
    cpu0 = group.cpu()
    bcpu0 = cpu_seconds(broker_pid) if broker_pid else 0.0
    samples: list[tuple[float, float]] = [(t0, base)]
    done = await wait_processed(
        group, base + backlog, timeout_s=60 + 3 * backlog / max(expected_rate, 50.0),
        samples=samples)
    elapsed = time.monotonic() - t0
    cpu = [b - a for a, b in zip(cpu0, group.cpu(), strict=True)]
    broker_cpu = (cpu_seconds(broker_pid) - bcpu0) if broker_pid else 0.0
    lo = crossing_time(samples, base + 0.1 * backlog)
    hi = crossing_time(samples, base + 0.9 * backlog)
    steady = 0.8 * backlog / (hi - lo) if lo is not None and hi is not None and hi > lo else None
    return {"backlog": backlog, "completed": done, "produce_s": round(produce_s, 2),
            "elapsed_s": round(elapsed, 2), "records_per_s": round(backlog / elapsed, 1),
            "steady_records_per_s": round(steady, 1) if steady else None,
            "worker_cpu_s": [round(c, 2) for c in cpu],
            "records_per_cpu_s": round(backlog / sum(cpu), 1) if sum(cpu) > 0 else None,
            "broker_cpu_s": round(broker_cpu, 2), "loadavg": load}


async def rate_step(driver: Driver, group: Group, rate: float, duration_s: float,
                    capacity: float, *, broker_pid: int | None = None) -> dict[str, Any]:
    """Offer ``rate`` records/s for ``duration_s``; backlog trend, latency, and the CPU the
    workers, this benchmark and the broker (``broker_pid``) used meanwhile."""
    driver.new_step()
    base = await asyncio.to_thread(group.processed)
    produced0 = driver.produced
    cpu0 = group.cpu()
    load = loadavg()
    backlog: list[tuple[float, float]] = []
    futures: list[asyncio.Future[Any]] = []
    # the step's readings made before it: the benchmark shares the cores with the workers,
    # and making them as they are due took CPU the workers then lacked at high rates
    records = driver.workload.take(int(rate * duration_s) + 1)
    own0 = cpu_seconds(os.getpid())
    broker0 = cpu_seconds(broker_pid) if broker_pid else 0.0
    started = time.monotonic()
    next_sample = started
    sent = 0
    while True:
        now = time.monotonic()
        elapsed = now - started
        if elapsed >= duration_s:
            break
        due = min(int(rate * elapsed), len(records)) - sent
        if due > 0:
            futures += await driver.send(records[sent:sent + due], track=True)
            sent += due
        if now >= next_sample:
            next_sample = now + SAMPLE_S
            done = await asyncio.to_thread(group.processed)
            backlog.append((now - started, driver.produced - produced0 - (done - base)))
        await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
    await asyncio.gather(*futures)
    produced = driver.produced - produced0
    cpu_during = sum(b - a for a, b in zip(cpu0, group.cpu(), strict=True))
    driver_cpu = cpu_seconds(os.getpid()) - own0
    broker_cpu = (cpu_seconds(broker_pid) - broker0) if broker_pid else None
    # the growth of the backlog over the second half of the step
    half = [(t, b) for t, b in backlog if t >= duration_s / 2]
    growth = 0.0
    if len(half) >= 2:
        ts = [t for t, _ in half]
        bs = [b for _, b in half]
        mt, mb = statistics.fmean(ts), statistics.fmean(bs)
        var = sum((t - mt) ** 2 for t in ts)
        growth = sum((t - mt) * (b - mb) for t, b in half) / var if var else 0.0
    end_backlog = backlog[-1][1] if backlog else 0.0
    drained = await wait_processed(group, base + produced,
                                   timeout_s=30 + end_backlog / max(capacity, 100.0))
    await asyncio.sleep(1.0)  # the last alerts
    lat = driver.latencies
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "rate": rate, "duration_s": duration_s, "produced": produced,
        "achieved_rate": round(produced / duration_s, 1),
        "backlog_growth_per_s": round(growth, 1),
        "backlog_at_end": int(end_backlog),
        "flat": growth < FLAT_SHARE * rate,
        "drained_after": drained,
        "alerts": len(lat), "unmatched_alerts": driver.unmatched,
        "latency_p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
        "latency_p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        "latency_max_ms": round(max(lat) * 1000, 1) if lat else None,
        "hops": hop_percentiles(driver.hops),
        "worker_cpu_share": round(cpu_during / duration_s / len(group.workers), 3),
        "driver_cpu_share": round(driver_cpu / duration_s, 3),
        "broker_cpu_share": (round(broker_cpu / duration_s, 3) if broker_cpu is not None
                             else None),
        "loadavg": load,
    }


# -- the baselines: plain aiokafka loops in this process ------------------------------------------

async def _forward(consumer: Any, producer: Any, dst: str, n: int, *, started: float,
                   name: str, as_worker: bool) -> None:
    """Forward ``n`` records from ``consumer`` to ``dst``: each with its own ``send`` (not
    awaited one by one), or, ``as_worker``, as the worker's loops produce (streams/outbox.py:
    the records appended to one batch per partition, queued with ``send_batch``)."""
    from onemap.streams.outbox import Outbox, PartitionCache
    forwarded = 0
    pending: list[asyncio.Future[Any]] = []
    partitions: PartitionCache = {}
    while forwarded < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=2000)
        if not batches and time.monotonic() - started > 120:
            raise RuntimeError(f"{name} stalled at {forwarded} of {n}")
        if as_worker:
            out = Outbox(lambda: producer, lambda: None, partitions)
            for messages in batches.values():
                for m in messages:
                    out.add(dst, m.key, m.value)
                forwarded += len(messages)
            await out.send()
            continue
        for messages in batches.values():
            for m in messages:
                pending.append(await producer.send(dst, key=m.key, value=m.value))
            forwarded += len(messages)
        if len(pending) > 20_000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await producer.flush()


async def _read(consumer: Any, n: int, *, started: float, name: str) -> None:
    """Consume ``n`` records."""
    count = 0
    while count < n:
        batches = await consumer.getmany(timeout_ms=500, max_records=2000)
        if not batches and time.monotonic() - started > 120:
            raise RuntimeError(f"{name} stalled at {count} of {n} read again")
        count += sum(map(len, batches.values()))


async def baseline(bootstrap: str, prefix: str, workload: Workload, n: int,
                   floor: bool = False) -> dict[str, Any]:
    """Forward ``n`` of the same records from one topic to another: ``getmany`` and ``send``
    without awaiting each (the loop DESIGN.md measured at ~32,000/s), in this process.

    ``floor``: the pipeline's **floor**: the Kafka work DESIGN's topics make every reading
    take, without any stage's work: the records forwarded as the ingest loop produces (a
    batch per partition; its hop: feed → ``onemap.observations``) and consumed again by a
    second consumer in the same event loop (the rules loop's). It leaves out what the
    worker adds to it (records as large as an observation, commits, state writes,
    hazards), so it is a lower bound of a worker's Kafka work per reading: what is left of
    a CPU-second after it is all the stages' own work can have."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    name = "floor" if floor else "baseline"
    src, dst = f"{prefix}.{name}.in", f"{prefix}.{name}.out"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    try:
        admin.create_topics([NewTopic(src, PARTITIONS, 1), NewTopic(dst, PARTITIONS, 1)])
    finally:
        admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()

    try:
        futures = []
        for r in workload.take(n):
            futures.append(await producer.send(src, key=r.key, value=r.value))
        await asyncio.gather(*futures)
        consumers = []
        try:
            for topic in [src, *([dst] if floor else [])]:
                consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                            enable_auto_commit=False, fetch_max_wait_ms=100,
                                            max_partition_fetch_bytes=4 << 20)
                consumers.append(consumer)
                await consumer.start()
                consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
                await consumer.seek_to_beginning()
            load = loadavg()
            started = time.monotonic()
            cpu0 = time.process_time()
            await asyncio.gather(
                _forward(consumers[0], producer, dst, n, started=started, name=name,
                         as_worker=floor),
                *(_read(c, n, started=started, name=name) for c in consumers[1:]))
            elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu0
        finally:
            for consumer in consumers:
                await consumer.stop()
    finally:
        await producer.stop()
    return {"records": n, "hops": 2 if floor else 1, "elapsed_s": round(elapsed, 2),
            "records_per_s": round(n / elapsed, 1),
            "records_per_cpu_s": round(n / cpu, 1) if cpu > 0 else None, "loadavg": load}


# -- the sampling profiler (runs inside a worker) --------------------------------------------------

_OURS = tuple(f"{REPO / part}/" for part in ("streams", "rules", "geo", "sinks", "onemap"))
#: our functions that a sample is attributed to (innermost wins), by file and function name
#: (py-spy names a method after its ``self``'s class: RulesLoop.turn, not BatchLoop.turn)
_STAGES = {("ingest_loop.py", "process"): "ingest", ("rules_loop.py", "process"): "rules",
           ("rules_loop.py", "assigned"): "rules (restoring state)",
           ("batch_loop.py", "turn"):
               "batch loops' own aiokafka work (fetch, send, flush, commit)",
           ("app.py", "lifecycle_agent"): "lifecycle", ("app.py", "deliver_until_done"): "sinks",
           ("app.py", "deliver"): "sinks", ("health.py", "tick"): "health",
           ("rules_loop.py", "idle"): "silence check", ("app.py", "reload_rules"): "rule reload",
           ("app.py", "refresh_silences"): "lifecycle",
           # before the batch loops (for A/B preludes of older code)
           ("app.py", "ingest_batch"): "ingest", ("app.py", "rules_agent"): "rules",
           ("app.py", "check_silence"): "silence check"}
UNSTAGED = "faust/aiokafka (no stage of ours on the stack)"
#: the innermost Python frame of a thread that waits (no CPU)
_IDLE = {("selectors.py", "select"), ("threading.py", "wait"), ("queue.py", "get"),
         ("threading.py", "_wait_for_tstate_lock"), ("socketserver.py", "serve_forever"),
         ("selectors.py", "_select")}


def library(filename: str) -> str:
    """What a frame's file belongs to: our part, a site package, or the standard library."""
    for prefix in _OURS:
        if filename.startswith(prefix):
            return "onemap." + prefix.rstrip("/").rsplit("/", 1)[1]
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    name = filename.rsplit("/", 1)[-1].removesuffix(".py")
    parent = filename.rsplit("/", 2)[-2] if filename.count("/") >= 2 else ""
    return f"stdlib:{parent}" if parent in ("asyncio", "json", "concurrent") else \
        f"stdlib:{name}"


class Sampler:
    """Samples every thread's Python stack every ``interval_s`` and tallies self time by
    function and library, inclusive time of our functions, and time by stage."""

    def __init__(self, out: Path, interval_s: float = 0.004) -> None:
        self.out = out
        self.interval_s = interval_s
        self.self_fn: Counter[str] = Counter()
        self.incl_fn: Counter[str] = Counter()
        self.by_lib: Counter[str] = Counter()
        self.by_stage: Counter[str] = Counter()
        self.by_thread: Counter[str] = Counter()
        #: samples with no stage of ours: the task or callback the event loop was running
        self.unstaged: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()

    def run(self) -> None:
        me = threading.get_ident()
        last_dump = time.monotonic()
        reset = self.out.with_suffix(".reset")
        while not self._stop.wait(self.interval_s):
            if reset.exists():
                reset.unlink()
                self.reset()
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                self.take(names.get(ident, str(ident)), frame)
            self.samples += 1
            if time.monotonic() - last_dump > 1.0:
                self.dump()
                last_dump = time.monotonic()

    def take(self, thread: str, frame: Any) -> None:
        frames: list[tuple[str, str]] = []
        f = frame
        while f is not None:
            code = f.f_code
            frames.append((code.co_filename, code.co_qualname))
            f = f.f_back
        self.tally(thread, frames)

    def tally(self, thread: str, frames: Sequence[tuple[str, str]], weight: int = 1) -> None:
        """``weight`` samples of one stack: ``frames`` innermost first, as (file name,
        qualified function name)."""
        if not frames:
            return
        filename, name = frames[0]
        if (filename.rsplit("/", 1)[-1], name.rsplit(".", 1)[-1]) in _IDLE:
            self.by_thread[f"{thread} (idle)"] += weight
            return
        self.by_thread[thread] += weight
        self.self_fn[f"{library(filename)}:{name}"] += weight
        self.by_lib[library(filename)] += weight
        seen: set[str] = set()
        stage = None
        root = None  # the outermost frame the event loop called (a task's coroutine, a callback)
        in_loop = True
        for filename, name in frames:
            short = name.rsplit(".", 1)[-1]
            if short == "_run" and filename.endswith("asyncio/events.py"):
                in_loop = False  # below: the event loop and whatever started it
            elif in_loop and short != "__step":
                root = (filename, name)
            if filename.startswith(_OURS):
                key = f"{library(filename)}:{name}"
                if key not in seen:
                    seen.add(key)
                    self.incl_fn[key] += weight
                if stage is None:
                    stage = _STAGES.get((filename.rsplit("/", 1)[-1], short))
        self.by_stage[stage or UNSTAGED] += weight
        if stage is None:
            self.unstaged[f"{library(root[0])}:{root[1]}" if root is not None
                          else thread] += weight

    def dump(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data(), ensure_ascii=False))
        tmp.replace(self.out)

    def data(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "samples": self.samples,
                "by_thread": dict(self.by_thread), "by_library": dict(self.by_lib),
                "by_stage": dict(self.by_stage),
                "self_top": self.self_fn.most_common(40),
                "inclusive_ours_top": self.incl_fn.most_common(40),
                "unstaged_top": self.unstaged.most_common(25)}

    def reset(self) -> None:
        for c in (self.self_fn, self.incl_fn, self.by_lib, self.by_stage, self.by_thread,
                  self.unstaged):
            c.clear()
        self.samples = 0


def as_worker(out: Path | None, prelude: Path | None) -> int:
    """`onemap worker`, after running the ``prelude`` file (a candidate change applied by
    monkeypatching, for an A/B run that leaves the checkout alone) and with the sampler
    writing to ``out`` (if given). Creating ``out`` with the suffix ``.reset`` clears the
    tallies, so that the profile covers only the measured drain, not the start-up (not a
    signal: the faust worker owns SIGUSR1 and SIGUSR2)."""
    from onemap.cli import main
    if prelude is not None:
        exec(compile(prelude.read_text(), str(prelude), "exec"),
             {"__name__": "prelude", "__file__": str(prelude)})
    if out is None:
        return main(["worker"])
    # A sampler thread gets the GIL when the worker's thread releases it: at a system call,
    # or when the switch interval forces it. At the default 5 ms almost every sample would
    # land on a socket write; at 0.2 ms a sample falls on whatever Python code is running.
    sys.setswitchinterval(0.0002)
    sampler = Sampler(out)
    threading.Thread(target=sampler.run, name="sampler", daemon=True).start()
    try:
        return main(["worker"])
    finally:
        sampler.dump()


# -- one group's run -----------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    warmup: int  # records that bring every source's state to its 24 h size (fixture)
    drain_s: float  # the capacity backlog is this many seconds of the warm-up's rate...
    min_backlog: int  # ... but at least this many records
    max_backlog: int  # ... and at most this many
    rates: list[float]
    step_s: float
    steps: bool = True  # False: capacity only (quick A/Bs of a change), no rate steps
    #: also step at these shares of the measured capacity (the highest flat rate's search)
    capacity_shares: tuple[float, ...] = (0.5, 0.8)
    #: also step at the target rate per worker (``TARGET_PER_WORKER`` × the group's size):
    #: "sustained" is a rate the backlog stays flat at, which a drain does not show
    target_step: bool = True


def plan_for(quick: bool) -> Plan:
    if quick:
        return Plan(warmup=600, drain_s=2.0, min_backlog=1000, max_backlog=1500, rates=[200.0],
                    step_s=3.0, target_step=False)
    # 24.25 h of history at 300 s steps = 291 rounds of the 165 sources
    return Plan(warmup=49_000, drain_s=40.0, min_backlog=5_000, max_backlog=200_000,
                rates=[500.0, 2_000.0, 5_000.0], step_s=20.0)


async def run_group(size: int, bootstrap: str, redis_url: str, *, tmp: Path, plan: Plan,
                    alert_fraction: float, broker_pid: int, profile: bool,
                    prelude: Path | None, say: Callable[[str], None],
                    profile_rate: float | None = None,
                    profiler: str = "py-spy",
                    registries: Path | None = None) -> dict[str, Any]:
    """Start ``size`` workers in a new group; warm up; capacity; rate steps. With
    ``profile`` the first worker is sampled (by py-spy, or by the in-process
    :class:`Sampler` if ``profiler`` is "sampler") and its profile covers the capacity drain,
    or the rate step at ``profile_rate`` if given."""
    from onemap.embedded import free_port, stop
    prefix = f"bp{size}w{int(time.time()) % 100_000}"
    workers: list[WorkerProc] = []
    profile_out = tmp / f"{prefix}-profile.json"
    in_process = profile and profiler == "sampler"
    try:
        for i in range(size):
            data = tmp / f"{prefix}-{i}"
            workers.append(start_worker(
                worker_env(bootstrap, redis_url, data, prefix, free_port(),
                           registries=registries), data,
                profile_out=profile_out if in_process and i == 0 else None, prelude=prelude))
        wait_settled(workers)
        sampled: InProcessProfile | PySpyProfile = (
            InProcessProfile(profile_out) if in_process else
            PySpyProfile(py_spy() or "py-spy", workers[0].proc.pid,
                         tmp / f"{prefix}-py-spy.txt"))
        group = Group(workers)
        say(f"  {size} worker(s) ready (group settled){' [profiled]' if profile else ''}, "
            f"load {loadavg()}")
        srcs = sources(registries)
        workload = Workload(srcs, alert_fraction)
        out: dict[str, Any] = {"workers": size}
        # warm-up: fill every source's 24 h of history (its steady-state size); a network's
        # sources 2 h each
        warmup = NETWORK_WARM_ROUNDS * len(srcs) if registries else plan.warmup
        history = warm_history(registries is not None)
        async with Driver(bootstrap, prefix, workload) as driver:
            warm = await drain(driver, group, warmup, expected_rate=100.0,
                               broker_pid=broker_pid)
            say(f"  warm-up {warmup:,} records (state growing to {history} per source): "
                f"{warm['records_per_s']:,.0f} rec/s in {warm['elapsed_s']:.0f} s")
            backlog = int(min(plan.max_backlog, max(plan.min_backlog,
                                                    plan.drain_s * warm["records_per_s"])))
            drain_profiled = profile and profile_rate is None
            if drain_profiled:
                await sampled.start()
            cap = await drain(driver, group, backlog, expected_rate=warm["records_per_s"],
                              broker_pid=broker_pid)
            if drain_profiled:
                out["profile"] = {**await sampled.read(), "drain": cap,
                                  "during": f"the capacity drain of {backlog:,} records"}
            capacity = float(cap["steady_records_per_s"] or cap["records_per_s"])
            say(f"  capacity (drain of {backlog:,}): {capacity:,.0f} rec/s steady, "
                f"{cap['records_per_cpu_s'] or 0:,.0f} per worker CPU-second, "
                f"worker CPU {cap['worker_cpu_s']} s in {cap['elapsed_s']} s, load "
                f"{cap['loadavg']}")
            rates = sorted({*plan.rates, *(float(max(10.0, round(f * capacity, -1)))
                                           for f in plan.capacity_shares),
                            *([TARGET_PER_WORKER * size] if plan.target_step else []),
                            *([profile_rate] if profile_rate else [])}) if plan.steps else []
            steps: list[dict[str, Any]] = []
            for rate in rates:
                if rate > 1.2 * capacity:
                    say(f"  {rate:,.0f} rec/s: above the measured capacity, not run")
                    steps.append({"rate": rate, "skipped": "above the measured capacity"})
                    continue
                step_profiled = profile and rate == profile_rate
                if step_profiled:
                    await sampled.start()
                step = await rate_step(driver, group, rate, plan.step_s, capacity,
                                       broker_pid=broker_pid)
                if step_profiled:
                    out["profile"] = {
                        **await sampled.read(),
                        "drain": {"records_per_s": step["achieved_rate"]},
                        "during": f"{plan.step_s:.0f} s at {rate:,.0f} rec/s offered "
                                  f"(worker CPU {step['worker_cpu_share']:.0%} of a core)"}
                steps.append(step)
                say(f"  {rate:,.0f} rec/s: achieved {step['achieved_rate']:,.0f}, backlog "
                    f"growth {step['backlog_growth_per_s']:+,.0f}/s "
                    f"({'flat' if step['flat'] else 'GROWING'}), {step['alerts']} alerts, "
                    f"p50 {step['latency_p50_ms']} ms, p99 {step['latency_p99_ms']} ms ("
                    + ", ".join(f"{h} {v['p50_ms']}/{v['p99_ms']}"
                                for h, v in step["hops"].items()) + "), "
                    f"CPU: worker {step['worker_cpu_share']:.2f}, benchmark "
                    f"{step['driver_cpu_share']:.2f}, broker "
                    f"{_fmt(step['broker_cpu_share'], 2)}, load {step['loadavg']}")
        out.update({"warmup": warm, "capacity": cap, "steps": steps,
                    "capacity_records_per_s": capacity,
                    "capacity_per_worker": round(capacity / size, 1)})
        return out
    finally:
        stop([w.proc for w in workers])


class InProcessProfile:
    """The worker's own :class:`Sampler` (started with it): a reset, later its last dump."""

    name = "the in-process sampler (a thread of the worker, 4 ms, switch interval 0.2 ms)"

    def __init__(self, out: Path) -> None:
        self.out = out

    async def start(self) -> None:
        """The sampler's tallies start again now (the profile covers what follows)."""
        self.out.with_suffix(".reset").touch()
        await asyncio.sleep(0.1)

    async def read(self) -> dict[str, Any]:
        await asyncio.sleep(1.5)  # the sampler's next dump
        prof: dict[str, Any] = json.loads(self.out.read_text())
        return {**prof, "profiler": self.name}


def py_spy() -> str | None:
    """py-spy's executable (beside this Python's, else on PATH), if installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class PySpyProfile:
    """py-spy sampling the worker from outside (``py-spy record --nonblocking``): every
    thread's stack at ``rate`` Hz without the GIL, so a sample is not biased toward the
    moments the worker releases it (a system call), as an in-process sampler's are. The
    stacks are tallied as :class:`Sampler` tallies its own."""

    def __init__(self, executable: str, pid: int, out: Path, rate: int = 250) -> None:
        self.executable = executable
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def name(self) -> str:
        return f"py-spy (--nonblocking, {self.rate} Hz, from outside the worker)"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.executable, "record", "--pid", str(self.pid), "--rate", str(self.rate),
             "--format", "raw", "--threads", "--nonblocking", "--full-filenames",
             "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()
        await asyncio.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy could not sample the worker (pid {self.pid}): "
                               + self.proc.communicate()[1].decode(errors="replace")[-500:]
                               + " (it needs ptrace; --profiler sampler avoids it)")

    async def read(self) -> dict[str, Any]:
        assert self.proc is not None, "start() first"
        elapsed = time.monotonic() - self.started
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        await asyncio.to_thread(self.proc.wait, 60)
        tallies = Sampler(self.out, interval_s=1 / self.rate)
        tallies.samples = round(elapsed * self.rate)
        for line in self.out.read_text(encoding="utf-8").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            thread, frames = parse_py_spy_stack(stack)
            tallies.tally(thread, frames, int(count))
        return {**tallies.data(), "profiler": self.name}


def parse_py_spy_stack(stack: str) -> tuple[str, list[tuple[str, str]]]:
    """One stack of ``py-spy record --format raw --threads --full-filenames``: the thread's
    name and the frames innermost first as (file name, function name).

    ``--nonblocking`` reads the worker's memory while it runs, so a name is now and then
    read from a frame being changed: characters that are not printable (NULs, seen in a
    file name) become "?", so that the results stay text.

    >>> parse_py_spy_stack("thread (7): MainThread;main (/a/m.py:3);Loop.turn (/a/b.py:9)")
    ('MainThread', [('/a/b.py', 'Loop.turn'), ('/a/m.py', 'main')])
    >>> parse_py_spy_stack("thread (7): MainThread;f (/usr/lib/" + chr(0) * 2 + ".py:1)")
    ('MainThread', [('/usr/lib/??.py', 'f')])
    """
    if not stack.isprintable():
        stack = "".join(c if c.isprintable() else "?" for c in stack)
    parts = stack.split(";")
    thread = parts[0].split(": ", 1)[-1] if parts[0].startswith("thread (") else "?"
    frames: list[tuple[str, str]] = []
    for part in reversed(parts[1:] if parts[0].startswith("thread (") else parts):
        name, _, where = part.partition(" (")
        frames.append((where.rsplit(":", 1)[0], name))
    return thread, frames


# -- results ---------------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    base = res["baseline"]
    lines = [
        "Pipeline benchmark",
        "",
        f"{res['date']}{' (quick)' if res['quick'] else ''}: {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), Python {m['python']}, faust {m['faust']}, aiokafka "
        f"{m['aiokafka']}; Tansu (memory storage) and redis-server on loopback. "
        f"Load average at start {res['loadavg_start']}, at the end {res['loadavg_end']}: "
        "**the 2 cores were shared with other work**, so absolute rates are noisy; the "
        "per-CPU-second rates and the ratio to the baseline (run in this process, same broker, "
        "same minutes) are the steadier figures.",
        "",
        f"Workload: {res['workload']['sources']} sources ({res['workload']['water']} water, "
        f"{res['workload']['weather']} weather stations of the fixture registries"
        + (f", {res['workload']['network']:,} of them synthetic: a sensor network, each "
           f"source's history warmed up to {warm_history(True)}, not {warm_history(False)}"
           if res["workload"].get("network")
           else "") + "), rounds "
        f"{STEP_S} s of event time apart, {res['workload']['alert_fraction']:.2%} of the "
        f"readings make an alert; {PARTITIONS} partitions per topic."
        + (f" **Workers ran with the prelude {res['workload']['prelude']}** (a candidate "
           "change, not the checkout's code)." if res["workload"].get("prelude") else ""),
        "",
        "## Capacity (end to end, through the rules stage; backlog drained)",
        "",
        "| workers | backlog | rec/s (steady 10-90 %) | rec/s (whole drain) | per worker | "
        "rec per worker CPU-s | × baseline | worker CPU s | broker CPU s | load |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for g in res["groups"]:
        c = g["capacity"]
        ratio = g["capacity_records_per_s"] / base["records_per_s"]
        lines.append(
            f"| {g['workers']} | {c['backlog']:,} | {_fmt(c['steady_records_per_s'])} | "
            f"{_fmt(c['records_per_s'])} | {_fmt(g['capacity_per_worker'])} | "
            f"{_fmt(c['records_per_cpu_s'])} | {ratio:.3f} | "
            f"{', '.join(f'{x:.1f}' for x in c['worker_cpu_s'])} | {c['broker_cpu_s']:.1f} | "
            f"{c['loadavg']} |")
    lines += [
        "",
        f"Baseline (plain aiokafka consume → produce loop, this process): "
        f"{base['records_per_s']:,.0f} rec/s, {_fmt(base['records_per_cpu_s'])} per CPU-second "
        f"of this process ({base['records']:,} records, load {base['loadavg']})."
        + (f" Floor (the pipeline's Kafka work without its stages: the same records "
           f"forwarded as the worker produces, a batch per partition, then consumed again: "
           f"the two hops DESIGN's topics make a reading take): "
           f"{res['floor']['records_per_s']:,.0f} rec/s, "
           f"{_fmt(res['floor']['records_per_cpu_s'])} per CPU-second."
           if res.get("floor") else ""),
        "",
        "Warm-up drains (state growing from empty to "
        f"{warm_history(bool(res['workload'].get('network')))} per source): " + "; ".join(
            f"{g['workers']} worker(s) {g['warmup']['records_per_s']:,.0f} rec/s"
            for g in res["groups"]) + ".",
        "",
        "## Rate steps: backlog and event → alert latency",
        "",
        "| workers | offered rec/s | achieved | backlog growth /s | flat | backlog at end | "
        "alerts | p50 ms | p99 ms | max ms | worker CPU share | benchmark CPU share | "
        "broker CPU share | load |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- |",
    ]
    for g in res["groups"]:
        for s in g["steps"]:
            if "skipped" in s:
                lines.append(f"| {g['workers']} | {s['rate']:,.0f} | not run: {s['skipped']} "
                             "| | | | | | | | | | | |")
                continue
            lines.append(
                f"| {g['workers']} | {s['rate']:,.0f} | {s['achieved_rate']:,.0f} | "
                f"{s['backlog_growth_per_s']:+,.0f} | {'yes' if s['flat'] else 'no'} | "
                f"{s['backlog_at_end']:,} | {s['alerts']} | {_fmt(s['latency_p50_ms'], 1)} | "
                f"{_fmt(s['latency_p99_ms'], 1)} | {_fmt(s['latency_max_ms'], 1)} | "
                f"{s['worker_cpu_share']:.2f} | {_fmt(s.get('driver_cpu_share'), 2)} | "
                f"{_fmt(s.get('broker_cpu_share'), 2)} | {s['loadavg']} |")
    split = [(g["workers"], s) for g in res["groups"] for s in g["steps"] if s.get("hops")]
    if split:
        lines += ["", "Where each alert's latency went, by hop (broker timestamps: when a stage "
                  "handed the record to its producer; p50 / p99 ms of each hop on its own):", "",
                  "| workers | offered rec/s | " + " | ".join(HOPS) + " |",
                  "| ---: | ---: |" + " ---: |" * len(HOPS)]
        for workers, s in split:
            lines.append(f"| {workers} | {s['rate']:,.0f} | " + " | ".join(
                f"{_fmt(s['hops'][h]['p50_ms'], 1)} / {_fmt(s['hops'][h]['p99_ms'], 1)}"
                for h in HOPS) + " |")
    lines += ["", "## Targets (issue 7), per worker on one core", "",
              "| target | measured | verdict |", "| --- | --- | --- |"]
    for t in res["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {t['verdict']} |")
    prof = next((g["profile"] for g in res["groups"] if "profile" in g), None)
    if prof:
        lines += ["", "## Where a worker's time goes (sampling profile of the first worker "
                  f"during {prof['during']})", ""]
        lines += profile_markdown(prof)
    return "\n".join(lines) + "\n"


def profile_markdown(prof: dict[str, Any]) -> list[str]:
    busy: Counter[str] = Counter()
    for name, n in prof["by_thread"].items():
        if not name.endswith("(idle)"):  # "Thread-7 (process_request_thread)": one per scrape
            busy[re.sub(r"^Thread-\d+ \((.+)\)$", r"\1 threads", name)] += n
    total = sum(busy.values()) or 1
    out = [f"{prof['samples']:,} sampling rounds every {prof['interval_s'] * 1000:.0f} ms by "
           f"{prof.get('profiler', 'the in-process sampler')}; "
           f"shares of the busy (non-waiting) samples of all threads "
           f"(rec/s while profiled: {prof['drain']['records_per_s']:,.0f}).", "",
           "| thread | busy samples | share |", "| --- | ---: | ---: |"]
    for k, v in sorted(busy.items(), key=lambda kv: -kv[1]):
        out.append(f"| {k} | {v:,} | {v / total:.1%} |")
    out += ["", "| stage on the stack (innermost of ours) | share |", "| --- | ---: |"]
    for k, v in sorted(prof["by_stage"].items(), key=lambda kv: -kv[1]):
        out.append(f"| {k} | {v / total:.1%} |")
    if prof.get("unstaged_top"):
        out += ["", f"| {UNSTAGED}: the task or callback the event loop ran | share |",
                "| --- | ---: |"]
        for k, v in prof["unstaged_top"][:15]:
            out.append(f"| `{k}` | {v / total:.1%} |")
    out += ["", "| library of the running frame (self time) | share |", "| --- | ---: |"]
    for k, v in sorted(prof["by_library"].items(), key=lambda kv: -kv[1])[:20]:
        out.append(f"| {k} | {v / total:.1%} |")
    out += ["", "| function (self time) | share |", "| --- | ---: |"]
    for k, v in prof["self_top"][:25]:
        out.append(f"| `{k}` | {v / total:.1%} |")
    out += ["", "| our function (inclusive) | share |", "| --- | ---: |"]
    for k, v in prof["inclusive_ours_top"][:25]:
        out.append(f"| `{k}` | {v / total:.1%} |")
    return out


def floor_budget(floor_per_cpu_s: float | None) -> str:
    """What the pipeline's floor (its Kafka work alone, per CPU-second) leaves of a core for
    the stages' own work at the target rate.

    >>> print(floor_budget(25_000.0))  # doctest: +NORMALIZE_WHITESPACE
    the Kafka work alone (floor) 25,000 per CPU-second: at 20,000 rec/s that leaves 10 µs
    per reading for all the stages' own work
    >>> floor_budget(16_000.0).endswith("below the target before any stage's work")
    True
    """
    if not floor_per_cpu_s:
        return ""
    head = f"the Kafka work alone (floor) {floor_per_cpu_s:,.0f} per CPU-second: "
    left_us = (1 / TARGET_PER_WORKER - 1 / floor_per_cpu_s) * 1e6
    if left_us <= 0:
        return head + "below the target before any stage's work"
    return (head + f"at {TARGET_PER_WORKER:,.0f} rec/s that leaves {left_us:,.0f} µs per "
            "reading for all the stages' own work")


def targets(groups: list[dict[str, Any]], floor: dict[str, Any] | None = None
            ) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    one = next((g for g in groups if g["workers"] == 1), groups[0])
    per_worker = one["capacity_per_worker"]
    per_cpu = one["capacity"]["records_per_cpu_s"] or 0.0
    budget = floor_budget(floor["records_per_cpu_s"] if floor else None)
    # "sustained" is a rate the backlog stays flat at: a drain's rate per CPU-second meets
    # it only if no step at the target rate or above grew its backlog
    run = [s for s in one["steps"] if "skipped" not in s]
    at_target = [s for s in run if s["rate"] >= TARGET_PER_WORKER]
    grew = [s for s in at_target if not s["flat"]]
    flat = max((s["rate"] for s in run if s["flat"]), default=None)
    measured = (f"{per_worker:,.0f} rec/s per worker ({one['workers']} in the group), "
                f"{per_cpu:,.0f} per CPU-second in the drain")
    if flat is not None:
        measured += f"; flat up to {flat:,.0f} rec/s"
    if grew:
        g = grew[0]
        measured += (f"; offered {g['rate']:,.0f} rec/s, it worked off "
                     f"{g['achieved_rate'] - g['backlog_growth_per_s']:,.0f} with "
                     f"{g['worker_cpu_share']:.2f} of a core")
    if budget:
        measured += f"; {budget}"
    if per_cpu < TARGET_PER_WORKER:
        verdict = f"**missed by {TARGET_PER_WORKER / max(per_cpu, 1):.1f}×**"
    elif grew:
        verdict = "**not flat at the target** (the drain's rate per CPU-second meets it)"
    elif not at_target:
        verdict = "met in the drain (no step at the target rate)"
    else:
        verdict = "met"
    out.append({"target": f">= {TARGET_PER_WORKER:,.0f} rec/s sustained per worker",
                "measured": measured, "verdict": verdict})
    target = f"p99 < {TARGET_P99_S * 1000:.0f} ms at {TARGET_P99_RATE:,.0f} rec/s"
    # per worker: one worker's step decides; larger groups sharing the rate are reported
    shared = [f"p99 {_fmt(s['latency_p99_ms'], 1)} ms with {g['workers']} workers sharing it"
              + ("" if s["flat"] else " (not flat)")
              for g in groups if g is not one
              for s in g["steps"] if s.get("rate") == TARGET_P99_RATE and "skipped" not in s]
    step = next((s for s in one["steps"] if s.get("rate") == TARGET_P99_RATE
                 and "skipped" not in s), None)
    verdict = ""
    if step is None and any(s.get("rate") == TARGET_P99_RATE for s in one["steps"]):
        measured = "not measurable: above one worker's capacity"
        ok = False
    elif step is None:  # a run without that step (--capacity-only, --rates): no verdict
        measured = f"not measured (no step at {TARGET_P99_RATE:,.0f} rec/s)"
        ok, verdict = False, "not measured"
    else:
        p99 = step["latency_p99_ms"]
        ok = p99 is not None and p99 < TARGET_P99_S * 1000 and step["flat"]
        measured = (f"p99 {_fmt(p99, 1)} ms ({one['workers']} worker(s)"
                    + (", profiled" if one.get("profile") else "") + ")"
                    + ("" if step["flat"] else ", not flat"))
    out.append({"target": target, "measured": "; ".join([measured, *shared]),
                "verdict": verdict or ("met" if ok else "**missed**")})
    return out


def say(text: str) -> None:
    print(text, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from onemap.embedded import free_port, start_broker, start_redis, stop
    plan = plan_for(args.quick)
    plan.steps = not args.capacity_only
    if args.rates:
        plan.rates = [float(x) for x in args.rates.split(",")]
        plan.capacity_shares = ()
        plan.target_step = False
    sizes = [int(x) for x in args.workers.split(",")]
    res: dict[str, Any] = {"date": datetime.now(CST).replace(microsecond=0).isoformat(),
                           "quick": args.quick, "machine": machine(),
                           "loadavg_start": loadavg()}
    network = (network_registries(Path(tempfile.mkdtemp(prefix="onemap-bench-network-"))
                                  / "registries", args.network)
               if args.network else None)
    srcs = sources(network)
    res["workload"] = {"sources": len(srcs), "network": args.network or 0,
                       "water": sum(s.feed == "water" for s in srcs),
                       "weather": sum(s.feed == "weather" for s in srcs),
                       "alert_fraction": args.alert_fraction, "step_s": STEP_S,
                       "prelude": str(args.prelude) if args.prelude else None,
                       "capacity_only": args.capacity_only, "rates": args.rates,
                       "profile_rate": args.profile_rate,
                       "partitions": PARTITIONS}
    say(f"pipeline benchmark: {res['machine']['cpu_count']} CPUs, load {res['loadavg_start']}")
    with tempfile.TemporaryDirectory(prefix="onemap-bench-pipeline-") as d:
        tmp = Path(d)
        bport, rport = free_port(), free_port()
        broker = start_broker("127.0.0.1", bport, tmp / "broker.log")
        redis_proc = start_redis("127.0.0.1", rport, tmp / "redis", tmp / "redis.log")
        bootstrap, redis_url = f"127.0.0.1:{bport}", f"redis://127.0.0.1:{rport}/0"
        try:
            say("baseline: plain aiokafka forwarding loop in this process")
            res["baseline"] = await baseline(bootstrap, "bp", Workload(srcs, 0.0, seed=1),
                                             2_000 if args.quick else 100_000)
            say(f"  {res['baseline']['records_per_s']:,.0f} rec/s, "
                f"{res['baseline']['records_per_cpu_s'] or 0:,.0f} per CPU-second")
            say("floor: the same records forwarded as the worker produces and consumed "
                "again (the two hops of a reading), in this process")
            res["floor"] = await baseline(bootstrap, "bp", Workload(srcs, 0.0, seed=1),
                                          2_000 if args.quick else 100_000, floor=True)
            say(f"  {res['floor']['records_per_s']:,.0f} rec/s, "
                f"{res['floor']['records_per_cpu_s'] or 0:,.0f} per CPU-second")
            res["groups"] = []
            for size in sizes:
                say(f"{size} worker(s)")
                res["groups"].append(await run_group(
                    size, bootstrap, redis_url, tmp=tmp, plan=plan,
                    alert_fraction=args.alert_fraction, broker_pid=broker.pid,
                    profile=args.profile and size == sizes[0], prelude=args.prelude,
                    say=say, profile_rate=args.profile_rate, profiler=args.profiler,
                    registries=network))
        finally:
            stop([broker, redis_proc])
            if network is not None:
                shutil.rmtree(network.parent, ignore_errors=True)
    res["loadavg_end"] = loadavg()
    res["targets"] = targets(res["groups"], res.get("floor"))
    return res


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--as-worker"]:
        return as_worker(Path(argv[1]) if argv[1] else None,
                         Path(argv[2]) if argv[2] else None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 worker, no profile")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--workers", help="group sizes, e.g. 1,2 (default: 1,2; quick: 1)")
    parser.add_argument("--alert-fraction", type=float, default=0.004,
                        help="share of readings that make an alert (default 0.004)")
    parser.add_argument("--prelude", type=Path,
                        help="a Python file each worker runs first (A/B runs of a candidate "
                        "change applied by monkeypatching); recorded in the results")
    parser.add_argument("--capacity-only", action="store_true",
                        help="warm-up and capacity drain only, no rate steps (A/B runs)")
    parser.add_argument("--rates",
                        help="rate steps in records/s, e.g. 5000 (default: 500, 2,000, "
                        "5,000 and 0.5 and 0.8 of the measured capacity)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="run the sampling profile (default: on unless --quick)")
    parser.add_argument("--profiler", choices=("py-spy", "sampler"),
                        help="who samples the profiled worker: py-spy from outside (the "
                        "default where it is installed) or a thread inside the worker")
    parser.add_argument("--network", type=int, metavar="N",
                        help="add N synthetic weather stations (a sensor network: each "
                        "source about once per commit at the target rate; 2 h warm-up)")
    parser.add_argument("--profile-rate", type=float,
                        help="profile the rate step at this many records/s (added to the "
                        "steps) instead of the capacity drain")
    args = parser.parse_args(argv)
    args.workers = args.workers or ("1" if args.quick else "1,2")
    if args.profile_rate is not None:
        if args.capacity_only or args.profile is False:
            parser.error("--profile-rate profiles a rate step: not with --capacity-only or "
                         "--no-profile")
        args.profile = True
    if args.profile is None:
        args.profile = not args.quick
    if args.profiler is None:
        args.profiler = "py-spy" if py_spy() else "sampler"
    elif args.profiler == "py-spy" and args.profile and not py_spy():
        parser.error("py-spy is not installed (pip install py-spy), or use --profiler sampler")
    res = asyncio.run(run(args))
    from benchmarks.report import write_results  # here: the worker runs this file as a script
    text = markdown(res)
    write_results(args.out, "pipeline", res, text, indent=1)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
