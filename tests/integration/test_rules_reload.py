"""Rule edits are picked up by a running worker without a restart; a bad edit is rejected
while the last good rules stay in force, and every hazard names the rule version it used."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from onemap.embedded import stop
from onemap.rules.rulebook import default_rules_dir
from tests.conftest import Broker, RunningWorker, start_worker, worker_env
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration

CASES = Path(__file__).resolve().parent.parent / "data" / "bad_rules"


@pytest.fixture()
def reloading_worker(broker: Broker, redis_url: str, tmp_path: Path,
                     ) -> Iterator[tuple[RunningWorker, Path]]:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    env = worker_env(broker, redis_url, tmp_path, f"rl{int(time.time() * 1000) % 10**7}")
    env["ONEMAP_RULES_DIR"] = str(rules)
    env["ONEMAP_RULES_RELOAD_INTERVAL"] = "0.5"
    redis.Redis.from_url(redis_url).flushdb()
    running = start_worker(env, tmp_path)
    yield running, rules
    stop([running.proc])


def metric_value(worker: RunningWorker, prefix: str) -> float:
    for line in worker.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.rpartition(" ")[2])
    return 0.0


def wait(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_edit_bad_edit_and_version_stamps_while_records_flow(
    reloading_worker: tuple[RunningWorker, Path], broker: Broker, redis_client: redis.Redis,
) -> None:
    worker, rules = reloading_worker
    topic = worker.topic("in.water")

    def reading(station: str, minutes: int, level: float) -> bytes:
        return json.dumps({"station_id": station, "level_m": level,
                           "observed_at": f"2017-08-23T10:{minutes:02d}:00+08:00"}).encode()

    def alert(station: str) -> dict[str, object] | None:
        raw = redis_client.hget(f"onemap:alert:water_level:{station}", "alert")
        return json.loads(raw) if raw else None

    produce(broker.bootstrap, topic, [reading("ZH-RIV-001", 0, 1.70)], key=b"ZH-RIV-001")
    wait(lambda: alert("ZH-RIV-001"), "the first alert")
    first = alert("ZH-RIV-001")
    assert first is not None and first["level"] == "yellow"  # warning 1.60

    # a bad edit: rejected, counted, the old rules keep working
    shutil.copy(CASES / "bad_number.yaml", rules / "water_level.yaml")
    wait(lambda: metric_value(worker, 'onemap_rule_reloads_total{outcome="rejected"}') >= 1,
         "the bad edit to be rejected")
    produce(broker.bootstrap, topic, [reading("ZH-RIV-002", 0, 2.30)], key=b"ZH-RIV-002")
    wait(lambda: alert("ZH-RIV-002"), "an alert under the old rules")
    old = alert("ZH-RIV-002")
    assert old is not None
    assert old["hazard"]["rule_version"] == first["hazard"]["rule_version"]  # type: ignore[index]

    # a good edit: yellow starts 0.5 m above the warning level from now on
    good = (default_rules_dir() / "water_level.yaml").read_text(encoding="utf-8").replace(
        "    yellow: {threshold: warning, offset_m: 0.0}\n    orange: {threshold: guaranteed, "
        "offset_m: -0.30}\n    red:    {threshold: guaranteed, offset_m: 0.0}\n  tide:",
        "    yellow: {threshold: warning, offset_m: 0.5}\n    orange: {threshold: guaranteed, "
        "offset_m: -0.30}\n    red:    {threshold: guaranteed, offset_m: 0.0}\n  tide:", 1)
    assert "offset_m: 0.5" in good
    (rules / "water_level.yaml").write_text(good, encoding="utf-8")
    wait(lambda: metric_value(worker, 'onemap_rule_reloads_total{outcome="reloaded"}') >= 1,
         "the good edit to be loaded")
    # 前山河南屏站 at 1.70 m is now below the moved yellow bound: blue from the next reading on
    produce(broker.bootstrap, topic, [reading("ZH-RIV-003", 0, 2.20)], key=b"ZH-RIV-003")
    wait(lambda: alert("ZH-RIV-003"), "an alert under the new rules")
    new = alert("ZH-RIV-003")  # 虎跳门水道斗门站: warning 2.10; 2.20 < 2.60: blue, not yellow
    assert new is not None and new["level"] == "blue"
    assert new["hazard"]["rule_version"] != first["hazard"]["rule_version"]  # type: ignore[index]
