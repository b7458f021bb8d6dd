"""The typhoon scenario through a real worker on the real broker, checked against the batch
oracle (tests/oracle, docs/oracle.md): hazards, levels, alert transitions and the top K,
recomputed from the recorded input topics with plain pandas/geopandas.

The worker runs with one partition per topic, so the order in which the lifecycle stage
reads ``onemap.hazards`` is the topic's order, which the oracle's lifecycle then follows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pandas as pd
import pytest
import redis
from kafka import KafkaConsumer

from onemap.embedded import stop
from onemap.settings import Settings
from onemap.streams import typhoon
from onemap.streams.app import observations_topic
from onemap.streams.replay import replay
from tests.conftest import Broker, start_worker, worker_env
from tests.integration.kafka_helpers import read_until
from tests.oracle.compare import (
    hazard_differences,
    in_stream_order,
    inadmissible_silences,
    level_differences,
    score_differences,
    split_silences,
    stream_alert,
    stream_entries,
    stream_hazard,
    top_differences,
    transition_differences,
)
from tests.oracle.data import FEEDS, OracleData
from tests.oracle.hazards import HazardRecord, hazards, silence_windows
from tests.oracle.inputs import read_inputs
from tests.oracle.ranking import AlertRecord, entries, lifecycle, live_levels, top_k

pytestmark = pytest.mark.integration

#: Event-time instants the live set and the top K are compared at.
INSTANTS = {
    "early": typhoon.START + timedelta(hours=2),
    "before landfall": typhoon.LANDFALL - timedelta(minutes=30),
    "landfall": typhoon.LANDFALL,
    "after landfall": typhoon.LANDFALL + timedelta(hours=1),
    "end": typhoon.START + timedelta(hours=typhoon.HOURS),
}
TOP_K = 10
DISTRICTS = ("440402", "440403", "440404")  # 香洲区, 斗门区, 金湾区
SHOWN = 25  # differences listed in a failure message


@dataclasses.dataclass
class TyphoonRun:
    """What the worker read and wrote, as recorded on the topics."""

    inputs: dict[str, list[bytes]]
    hazards: list[HazardRecord]
    alerts: list[AlertRecord]


@dataclasses.dataclass
class Oracle:
    data: OracleData
    readings: pd.DataFrame
    hazards: list[HazardRecord]
    silence_windows: dict[str, list[tuple[float, float]]]


def _read_all(bootstrap: str, topic: str, at_least: int, timeout_s: float,
              quiet_s: float = 3.0) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic once it holds ``at_least`` and has been quiet ``quiet_s``."""
    last = {"n": -1, "since": time.monotonic()}

    def settled(records: list[tuple[bytes | None, bytes]]) -> bool:
        if len(records) != last["n"]:
            last["n"], last["since"] = len(records), time.monotonic()
        return len(records) >= at_least and time.monotonic() - last["since"] >= quiet_s

    return read_until(bootstrap, topic, settled, timeout_s=timeout_s)


def _wait_for_topics(bootstrap: str, topics: list[str], timeout_s: float = 60.0) -> None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(consumer.partitions_for_topic(t) for t in topics):
                return
            time.sleep(0.5)
        raise AssertionError(f"the worker did not declare its topics within {timeout_s} s")
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def typhoon_run(broker: Broker, redis_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[TyphoonRun]:
    tmp = tmp_path_factory.mktemp("oracle")
    prefix = f"o{int(time.time() * 1000) % 10_000_000}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {**worker_env(broker, redis_url, tmp, prefix), "ONEMAP_PARTITIONS": "1"}
    running = start_worker(env, tmp)
    try:
        topic: Callable[[str], str] = running.topic
        _wait_for_topics(broker.bootstrap, [topic(f"in.{f}") for f in FEEDS]
                         + [topic("hazards"), topic("alerts")])
        path = typhoon.write(tmp / "typhoon.jsonl")
        settings = Settings.from_env(env={}, kafka_url=broker.url, topic_prefix=prefix,
                                     partitions=1)
        sent = replay(settings, [path], speed=0, progress=None)
        per_feed = {f: 0 for f in FEEDS}
        for line in path.read_text(encoding="utf-8").splitlines():
            per_feed[line.split('"feed":"', 1)[1].split('"', 1)[0]] += 1
        assert sum(per_feed.values()) == sent
        inputs = {f: [v for _, v in _read_all(broker.bootstrap, topic(f"in.{f}"), n,
                                              timeout_s=60, quiet_s=0.0)]
                  for f, n in per_feed.items()}
        # every reading observed, then every hazard and alert (quiet for a few seconds)
        for lane in ("observations", "observations.priority"):
            _read_all(broker.bootstrap, topic(lane),
                      sum(n for f, n in per_feed.items() if observations_topic(f) == lane),
                      timeout_s=240)
        stream = [stream_hazard(v) for _, v in
                  _read_all(broker.bootstrap, topic("hazards"), 1, timeout_s=60, quiet_s=8)]
        alerts = [stream_alert(v) for _, v in
                  _read_all(broker.bootstrap, topic("alerts"), 1, timeout_s=60, quiet_s=5)]
        assert running.proc.poll() is None, running.log.read_text()[-3000:]
        yield TyphoonRun(inputs, stream, alerts)
    finally:
        stop([running.proc])


@pytest.fixture(scope="module")
def oracle(typhoon_run: TyphoonRun) -> Oracle:
    data = OracleData.load()
    readings, rejected = read_inputs(typhoon_run.inputs, data)
    assert rejected.empty, rejected
    records, too_late = hazards(readings, data)
    assert not too_late
    return Oracle(data, readings, records, silence_windows(readings, data))


def _failing(differences: list[str], what: str) -> str:
    kinds: dict[str, int] = {}
    for d in differences:
        kind = d.split(":", 1)[0] if not d.startswith("top ") else "top K"
        kinds[kind] = kinds.get(kind, 0) + 1
    shown = f"by kind: {kinds}\n" + "\n".join(differences[:SHOWN])
    more = f"\n... and {len(differences) - SHOWN} more" if len(differences) > SHOWN else ""
    return f"{len(differences)} difference(s) in {what}:\n{shown}{more}"


def _oracle_alerts(oracle: Oracle, run: TyphoonRun) -> list[AlertRecord]:
    split = split_silences(run.hazards)
    return lifecycle(in_stream_order(oracle.hazards, run.hazards, split), oracle.data)


def test_hazard_state_changes_equal_the_oracle(typhoon_run: TyphoonRun, oracle: Oracle) -> None:
    split = split_silences(typhoon_run.hazards)
    differences = hazard_differences(oracle.hazards, split.exact)
    differences += inadmissible_silences(split, oracle.silence_windows)
    assert not differences, _failing(differences, "hazard state changes")
    # the scenario's landmarks, so an empty run cannot pass
    ids = {h.hazard_id for h in oracle.hazards}
    assert {"sensor_silent:ZH-TIDE-005", "cap_warning:44040041600000_TY_201708230800",
            "water_level:ZH-TIDE-004"} <= ids
    assert {h.hazard_type for h in oracle.hazards} >= {
        "rainstorm", "wind", "water_level", "geohazard", "incident", "cap_warning"}


def test_live_levels_equal_the_oracle_at_key_instants(typhoon_run: TyphoonRun,
                                                      oracle: Oracle) -> None:
    stream = split_silences(typhoon_run.hazards).exact
    differences: list[str] = []
    for at in INSTANTS.values():
        mine = live_levels(oracle.hazards, at)
        assert mine, f"nothing live at {at}"
        differences += level_differences(at, mine, live_levels(stream, at))
    assert not differences, _failing(differences, "live hazards")


def test_alert_transitions_equal_the_oracle(typhoon_run: TyphoonRun, oracle: Oracle) -> None:
    mine = _oracle_alerts(oracle, typhoon_run)
    differences = transition_differences(mine, typhoon_run.alerts)
    assert not differences, _failing(differences, "alert transitions")
    assert {a.transition for a in mine} >= {"new", "escalated", "de-escalated", "resolved"}


def test_scores_and_top_k_equal_the_oracle_at_key_instants(typhoon_run: TyphoonRun,
                                                           oracle: Oracle) -> None:
    mine = _oracle_alerts(oracle, typhoon_run)
    differences = score_differences(mine, typhoon_run.alerts)
    ours, theirs = entries(mine), stream_entries(typhoon_run.alerts)
    for at in INSTANTS.values():
        for area in ("*", *DISTRICTS):
            top = top_k(ours, at, TOP_K, area)
            if area == "*":
                assert len(top) == TOP_K, f"fewer than {TOP_K} live hazards at {at}"
            differences += top_differences(at, area, top, top_k(theirs, at, TOP_K, area))
    assert not differences, _failing(differences, "scores and top K")


def test_the_oracle_fails_when_a_threshold_differs(typhoon_run: TyphoonRun,
                                                   oracle: Oracle) -> None:
    """The comparison can fail: the oracle with the rainstorm red bound at 90 mm instead of
    the rule file's 100 mm disagrees with the stream."""
    changed = oracle.data.with_rule_value("rainstorm", ("levels", "red", "rain_mm"), 90)
    records, _ = hazards(oracle.readings, changed)
    differences = hazard_differences(records, split_silences(typhoon_run.hazards).exact)
    assert any(d.startswith("rainstorm:") for d in differences), differences[:5]

