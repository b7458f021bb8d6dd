"""The batch loops commit every ``ONEMAP_COMMIT_INTERVAL``, not every turn
(streams/batch_loop.py): the rules' state is written once per interval however many turns it
spans; a worker stopped with SIGTERM writes and commits what it holds before it leaves; one
killed with SIGKILL leaves it uncommitted, and the next worker replays it to the same state."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from onemap.embedded import stop
from onemap.streams.rules_loop import changelog_topic
from tests.conftest import Broker, RunningWorker, start_worker, worker_env
from tests.integration.kafka_helpers import produce, read_until
from tests.integration.test_pipeline import wait_for, water

STATION = "ZH-RIV-001"
KEY = orjson.dumps(f"water:{STATION}")
READINGS = 40
NEWEST = (datetime(2017, 8, 23, 3, 0, tzinfo=UTC)
          + timedelta(minutes=5 * (READINGS - 1))).timestamp()


def decided(worker: RunningWorker) -> float:
    """Readings the rules stage has decided on (every decision label)."""
    return sum(float(line.rpartition(" ")[2]) for line in worker.metrics().splitlines()
               if line.startswith("onemap_rule_decisions_total{"))


def heads(broker: Broker, app_id: str, at_least: int = 0) -> list[dict[str, Any]]:
    """The station's head records on the rules' changelog, oldest first."""
    found = read_until(broker.bootstrap, changelog_topic(app_id),
                       lambda rs: sum(k == KEY for k, _ in rs) >= at_least, timeout_s=5)
    return [orjson.loads(v) for k, v in found if k == KEY and v is not None]


def run_readings(broker: Broker, redis_url: str, tmp: Path, interval: str,
                 ) -> tuple[RunningWorker, dict[str, str]]:
    """A worker with small batches (many turns) that has decided on every reading."""
    prefix = f"c{int(time.time() * 1000) % 10_000_000}"
    env = worker_env(broker, redis_url, tmp, prefix, ONEMAP_BATCH_SIZE="4",
                     ONEMAP_COMMIT_INTERVAL=interval)
    running = start_worker(env, tmp)
    produce(broker.bootstrap, f"{prefix}.in.water",
            [water(STATION, 1.0, 5 * m) for m in range(READINGS)], key=STATION.encode())
    wait_for(lambda: decided(running) >= READINGS, timeout_s=60,
             what=f"the rules to decide on {READINGS} readings")
    return running, env


def test_a_commit_per_turn_writes_the_state_at_every_turn(
    broker: Broker, redis_url: str, tmp_path: Path,
) -> None:
    running, env = run_readings(broker, redis_url, tmp_path, "0")
    try:
        # batches of 4: at least 10 turns, each wrote the station's head
        written = wait_for(lambda: len(heads(broker, env["ONEMAP_APP_ID"], 10)) >= 10,
                           what="a head per turn")
        assert written
    finally:
        stop([running.proc])
    assert heads(broker, env["ONEMAP_APP_ID"])[-1]["newest"] == NEWEST


def test_held_state_is_replayed_after_a_kill_and_written_once_at_a_stop(
    broker: Broker, redis_url: str, tmp_path: Path,
) -> None:
    """A long interval: 40 readings over at least 10 turns write nothing until a commit; a
    SIGKILL loses what was held (nothing committed), the next worker consumes the records
    again and, stopped with SIGTERM, writes the station's head once, with every reading."""
    running, env = run_readings(broker, redis_url, tmp_path, "60")
    time.sleep(1.0)
    assert heads(broker, env["ONEMAP_APP_ID"]) == []  # held: the interval is not over
    running.proc.send_signal(signal.SIGKILL)
    running.proc.wait(timeout=10)
    assert heads(broker, env["ONEMAP_APP_ID"]) == []  # nothing was committed
    again = start_worker(env, tmp_path)
    try:
        # nothing committed, so the new worker reads the input again from the start
        wait_for(lambda: decided(again) >= READINGS, timeout_s=60,
                 what="the replayed readings to be decided on")
        assert heads(broker, env["ONEMAP_APP_ID"]) == []
    finally:
        stop([again.proc])  # SIGTERM: the loop commits what it holds before leaving
    assert again.proc.returncode in (0, -15), again.log.read_text(errors="replace")[-3000:]
    written = heads(broker, env["ONEMAP_APP_ID"], 1)
    assert len(written) == 1 and written[0]["newest"] == NEWEST
