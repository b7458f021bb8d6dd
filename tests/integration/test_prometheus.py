"""A real Prometheus server (Debian `prometheus`) scrapes a running worker; its HTTP API shows
the pipeline's metrics, and `promtool check metrics` accepts the worker's exposition.

Prometheus or promtool missing is a failure, not a skip: CI installs Debian's `prometheus`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from onemap.embedded import free_port, stop, wait_until
from onemap.sinks.dashboard.live import LiveState
from tests.conftest import Broker, RunningWorker
from tests.integration.kafka_helpers import produce
from tests.integration.test_pipeline import water

pytestmark = pytest.mark.integration

JOB = "onemap-worker"
N_RECORDS = 5


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                  else None)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's `prometheus` package "
                    "(apt-get install prometheus), which provides prometheus and promtool")
    return path


class PrometheusServer:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(worker: RunningWorker,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    binary = _binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(worker.metrics_url).netloc
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: {JOB}\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n", encoding="utf-8")
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, 30, f"prometheus (log: {log})", proc)
        yield PrometheusServer(url)
    finally:
        stop([proc])
        assert proc.poll() is not None, "prometheus left running"


def wait_for_value(prom: PrometheusServer, expr: str, ok: Any, timeout_s: float = 60.0,
                   ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = prom.query(expr)
        if last and ok(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {expr}; last: {last}")


def test_prometheus_scrapes_the_worker(
    prometheus: PrometheusServer, worker: RunningWorker, broker: Broker,
) -> None:
    values = [water("ZH-TIDE-001", 1.0 + i / 100, i) for i in range(N_RECORDS)]
    produce(broker.bootstrap, worker.topic("in.water"), values, key=b"ZH-TIDE-001")

    wait_for_value(prometheus, f'up{{job="{JOB}"}}', lambda r: r[0]["value"][1] == "1")
    wait_for_value(prometheus, f'onemap_records_in_total{{job="{JOB}", feed="water"}}',
                   lambda r: sum(float(s["value"][1]) for s in r) >= N_RECORDS)
    lag = wait_for_value(prometheus, "onemap_consumer_lag_records", lambda r: True)
    topics = {s["metric"]["topic"] for s in lag}
    assert worker.topic("in.water") in topics, topics
    assert all(s["metric"]["partition"].isdigit() for s in lag)
    # everything produced is worked off: the water partitions' lag drops to 0
    wait_for_value(prometheus,
                   f'sum(onemap_consumer_lag_records{{topic="{worker.topic("in.water")}"}})',
                   lambda r: float(r[0]["value"][1]) == 0)
    received = wait_for_value(
        prometheus, 'time() - onemap_feed_last_received_timestamp_seconds{feed="water"}',
        lambda r: True)
    assert 0 <= float(received[0]["value"][1]) < 120
    newest = prometheus.value('onemap_feed_last_event_timestamp_seconds{feed="water"}')
    # the readings' own time (2017), not the arrival time
    assert newest is not None and time.gmtime(newest).tm_year == 2017

    # 香洲港潮位站 over its guaranteed level: one open red water-level hazard
    produce(broker.bootstrap, worker.topic("in.water"), [water("ZH-TIDE-005", 3.12, 5)],
            key=b"ZH-TIDE-005")
    wait_for_value(prometheus, 'sum(onemap_hazards_live{level="red", type="water_level"})',
                   lambda r: float(r[0]["value"][1]) == 1)


def test_feed_health_reaches_redis_in_the_dashboards_format(
    prometheus: PrometheusServer, worker: RunningWorker, redis_client: redis.Redis,
) -> None:
    def health() -> dict[str, Any] | None:
        raw = redis_client.hget("onemap:feeds", "water")
        value = orjson.loads(raw) if raw else None
        return value if value and value["records_total"] >= N_RECORDS else None

    deadline = time.monotonic() + 30
    while (value := health()) is None:
        assert time.monotonic() < deadline, "onemap:feeds has no water entry"
        time.sleep(0.5)
    assert set(value) >= {"last_record_at", "last_observed_at", "records_total",
                          "silent_after_s", "records_per_min", "silent_sources"}
    assert value["last_observed_at"].startswith("2017-08-23T03:0")
    assert isinstance(value["silent_sources"], list)
    state = LiveState()
    state.feed_health = {"water": value}
    (water_feed,) = [f for f in state.feeds(datetime.now(UTC)) if f["feed"] == "water"]
    assert water_feed["silent"] is False, "the wall shows the feed as 正常"


def test_promtool_accepts_the_exposition(worker: RunningWorker, tmp_path: Path) -> None:
    promtool = _binary("promtool")
    exposition = worker.metrics()
    assert "onemap_consumer_lag_records" in exposition
    done = subprocess.run([promtool, "check", "metrics"], input=exposition.encode(),
                          capture_output=True, timeout=30, check=False)
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0 and not report.strip(), f"promtool check metrics:\n{report}"


def test_two_workers_merge_into_one_feed_entry(redis_client: redis.Redis) -> None:
    """Each worker sees its own partitions: the newest times win, the counts add up."""
    from onemap.streams.health import _MERGE_FEEDS  # the script the worker runs

    key = "onemap:feeds:merge-test"
    redis_client.delete(key)

    def write(received: str, observed: str | None, delta: int, silent: list[str]) -> None:
        rest = {"silent_after_s": 900.0, "records_per_min": 1.5, "silent_sources": silent}
        redis_client.eval(_MERGE_FEEDS, 1, key, "water", received, observed or "", delta,
                          json.dumps(rest, ensure_ascii=False))

    write("2026-11-23T12:00:10.000+00:00", "2017-08-23T03:05:00.000+00:00", 3, [])
    write("2026-11-23T12:00:05.000+00:00", "2017-08-23T03:09:00.000+00:00", 4, ["站点甲"])
    write("2026-11-23T12:00:01.000+00:00", None, 0, [])
    value = orjson.loads(redis_client.hget(key, "water") or b"")
    assert value == {"last_record_at": "2026-11-23T12:00:10.000+00:00",
                     "last_observed_at": "2017-08-23T03:09:00.000+00:00",
                     "records_total": 7, "silent_after_s": 900.0, "records_per_min": 1.5,
                     "silent_sources": []}
    redis_client.delete(key)
