"""HTTP ingest on the real embedded broker: records land in Kafka with keys and exact bytes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from onemap.embedded import free_port, stop, wait_until
from onemap.settings import Settings
from onemap.streams.http_ingest import IngestConfig, KafkaIngestProducer, make_ingest_app
from onemap.topics import ensure_topics
from tests.conftest import Broker
from tests.integration.kafka_helpers import read_until

pytestmark = pytest.mark.integration

TOKEN = "integration-ingest-token"
JSON = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CAP_A3 = Path(__file__).parent.parent / "data" / "cap" / "reference" / "spec-appendix-a3.xml"
_prefixes = itertools.count()


def water(station: str, level: float | str, minute: int = 0) -> bytes:
    return json.dumps({"station_id": station, "level_m": level,
                       "observed_at": f"2017-08-23T12:{minute:02d}:00+08:00"}).encode()


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@pytest.fixture()
def prefix(broker: Broker) -> str:
    name = f"h{int(time.time() * 1000) % 10_000_000}x{next(_prefixes)}"
    ensure_topics(Settings.from_env({}, kafka_url=broker.url, topic_prefix=name, partitions=2))
    return name


def post_all(bootstrap: str, prefix: str, requests: list[tuple[str, bytes, dict[str, str]]],
             **config: Any) -> list[Answer]:
    """Serve the app on a real socket with a real aiokafka producer and send ``requests``."""
    async def main() -> list[Answer]:
        producer = KafkaIngestProducer([bootstrap])
        app = make_ingest_app(producer, IngestConfig(token=TOKEN, topic_prefix=prefix, **config))
        answers = []
        try:
            async with TestClient(TestServer(app)) as client:
                for path, body, headers in requests:
                    response = await client.post(path, data=body, headers=headers)
                    answers.append(Answer(response.status, await response.json(),
                                          dict(response.headers)))
        finally:
            await producer.stop()
        return answers

    return asyncio.run(main())


def test_good_records_reach_the_input_topic_and_bad_ones_the_dead_letter_topic(
    broker: Broker, prefix: str,
) -> None:
    good = [water("ZH-TIDE-005", 2.5, 0), water("ZH-RIV-001", 1.25, 5),
            water("ZH-TIDE-005", 2.7, 10)]
    bad = [water("ZH-TIDE-005", "high", 15), b'{"station_id": "ZH-RIV-002"}']
    body = b"[" + b", ".join([good[0], bad[0], good[1], bad[1], good[2]]) + b"]"
    [answer] = post_all(broker.bootstrap, prefix, [("/ingest/water", body, JSON)])
    assert answer.status == 207
    assert answer.body["accepted"] == 3
    assert [(r["index"], r["reason"], r["field"]) for r in answer.body["rejected"]] == [
        (1, "bad-field", "level_m"), (3, "missing-field", "observed_at")]

    records = read_until(broker.bootstrap, f"{prefix}.in.water", lambda r: len(r) >= 3)
    assert sorted(records) == sorted([(b"ZH-TIDE-005", good[0]), (b"ZH-RIV-001", good[1]),
                                      (b"ZH-TIDE-005", good[2])])
    same_source = [value for key, value in records if key == b"ZH-TIDE-005"]
    assert same_source == [good[0], good[2]]  # one partition per source: order kept

    letters = read_until(broker.bootstrap, f"{prefix}.deadletter", lambda r: len(r) >= 2)
    decoded = sorted((json.loads(value) for _, value in letters), key=lambda d: d["reason"])
    assert [(d["reason"], d["field"], d["stage"], d["feed"]) for d in decoded] == [
        ("bad-field", "level_m", "http-ingest", "water"),
        ("missing-field", "observed_at", "http-ingest", "water")]
    assert {base64.b64decode(d["original_b64"]) for d in decoded} == set(bad)
    assert sorted(key for key, _ in letters) == [b"ZH-RIV-002", b"ZH-TIDE-005"]


def test_cap_xml_is_accepted_whole_and_keyed_by_its_lineage(broker: Broker, prefix: str) -> None:
    raw = CAP_A3.read_bytes()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/xml"}
    [answer] = post_all(broker.bootstrap, prefix, [("/ingest/cap", raw, headers)])
    assert (answer.status, answer.body) == (200, {"accepted": 1, "rejected": []})
    records = read_until(broker.bootstrap, f"{prefix}.in.cap", lambda r: len(r) >= 1)
    assert records == [(b"TRI13970876.1", raw)]


def test_refused_requests_produce_nothing(broker: Broker, prefix: str) -> None:
    refused = water("ZH-REFUSED", 1.0)
    marker = water("ZH-MARKER", 1.0)
    answers = post_all(broker.bootstrap, prefix, [
        ("/ingest/water", refused, {"Content-Type": "application/json"}),
        ("/ingest/water", refused, {**JSON, "Authorization": "Bearer wrong"}),
        ("/ingest/water", b"[" + b",".join([refused] * 40) + b"]", JSON),
        ("/ingest/water", marker, JSON),
    ], max_body_bytes=1024)
    assert [a.status for a in answers] == [401, 401, 413, 200]
    records = read_until(broker.bootstrap, f"{prefix}.in.water",
                         lambda r: any(k == b"ZH-MARKER" for k, _ in r))
    assert records == [(b"ZH-MARKER", marker)]


def test_unreachable_broker_is_503_with_retry_after(prefix: str) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    [answer] = post_all(nobody, prefix, [("/ingest/water", water("ZH-TIDE-005", 1.0), JSON)],
                        retry_after_s=3)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "3"
    assert answer.body["error"] == "broker-unavailable"


@pytest.fixture()
def served(broker: Broker, prefix: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """``run_ingest`` in its own process, as ``onemap ingest`` will run it."""
    port = free_port()
    log = tmp_path / "ingest.log"
    code = ("import sys; from onemap.settings import Settings; "
            "from onemap.streams.http_ingest import run_ingest; "
            "sys.exit(run_ingest(Settings.from_env(), '127.0.0.1', int(sys.argv[1]), "
            "sys.argv[2]))")
    env = {"ONEMAP_KAFKA": broker.url, "ONEMAP_TOPIC_PREFIX": prefix,
           "ONEMAP_LOG_LEVEL": "DEBUG", "PATH": "/usr/bin:/bin"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, str(port), TOKEN], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(up, 60, f"http ingest (log: {log})", proc)
        yield url, prefix, log
    finally:
        stop([proc])


def test_run_ingest_serves_and_never_logs_the_token(
    served: tuple[str, str, Path], broker: Broker,
) -> None:
    url, prefix, log = served
    record = water("ZH-RIV-001", 0.5)
    request = urllib.request.Request(f"{url}/ingest/water", data=record, headers=JSON)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"accepted": 1, "rejected": []}
    wrong = urllib.request.Request(f"{url}/ingest/water", data=record,
                                   headers={**JSON, "Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(wrong, timeout=30)
    assert caught.value.code == 401
    records = read_until(broker.bootstrap, f"{prefix}.in.water", lambda r: len(r) >= 1)
    assert records == [(b"ZH-RIV-001", record)]
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'onemap_ingest_requests_total{feed="water",status="200"} 1.0' in metrics
    assert 'onemap_ingest_records_total{feed="water",outcome="accepted"} 1.0' in metrics
    assert TOKEN not in log.read_text(errors="replace")
