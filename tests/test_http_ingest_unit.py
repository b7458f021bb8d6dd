"""HTTP ingest without a broker: auth, content types, limits, per-record verdicts.

The producer here is a fake with the one method the endpoint calls (``send``); the real
aiokafka path is covered in tests/integration/test_http_ingest.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from onemap.errors import ConfigError
from onemap.streams.http_ingest import (
    BrokerUnavailable,
    IngestConfig,
    RequestRefused,
    make_ingest_app,
    source_key,
    split_json_array,
    split_records,
)
from onemap.streams.replay import _key as replay_key

TOKEN = "ingest-s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
NDJSON = {**AUTH, "Content-Type": "application/x-ndjson"}
XML = {**AUTH, "Content-Type": "application/xml"}
NOW = datetime(2017, 8, 23, 12, 0, tzinfo=UTC)
CAP_A2 = Path(__file__).parent / "data" / "cap" / "reference" / "spec-appendix-a2.xml"

GOOD_1 = (b'{"station_id": "ZH-TIDE-005", "observed_at": "2017-08-23T12:35:00+08:00", '
          b'"level_m": 3.12}')
GOOD_2 = b'{ "level_m" : 1.5 ,"observed_at":"2017-08-23T12:40:00+08:00","station_id":"ZH-RIV-001"}'
BAD_MISSING = b'{"station_id": "ZH-TIDE-005", "level_m": 3.0}'
BAD_RANGE = (b'{"station_id": "ZH-TIDE-006", "observed_at": "2017-08-23T12:35:00+08:00", '
             b'"level_m": 1e9}')


@dataclasses.dataclass
class FakeProducer:
    """Records every send; can refuse to start (``fail``) or never deliver (``hang``)."""

    sent: list[tuple[str, bytes | None, bytes | None]] = dataclasses.field(default_factory=list)
    fail: BaseException | None = None
    fail_delivery: BaseException | None = None
    hang: bool = False

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None,
    ) -> Awaitable[Any]:
        if self.fail is not None:
            raise self.fail
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_delivery is not None:
            future.set_exception(self.fail_delivery)
        elif not self.hang:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future


@dataclasses.dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def post(
    path: str, body: bytes | AsyncIterator[bytes], headers: dict[str, str],
    producer: FakeProducer | None = None, **config: Any,
) -> Answer:
    producer = producer if producer is not None else FakeProducer()
    registry = CollectorRegistry()

    async def main() -> Answer:
        app = make_ingest_app(producer, IngestConfig(token=TOKEN, **config), registry,
                              clock=lambda: NOW)
        async with TestClient(TestServer(app)) as client:
            data = io.BytesIO(body) if isinstance(body, bytes) and len(body) > 1 << 20 else body
            response = await client.post(path, data=data, headers=headers)
            text = await response.text()
            return Answer(response.status, json.loads(text) if text else None,
                          dict(response.headers), registry)

    return asyncio.run(main())


# -- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer ",
                                    f"Bearer {TOKEN}x", "Bearer 令牌"])
def test_missing_or_wrong_token_is_401_and_nothing_is_produced(header: str | None) -> None:
    producer = FakeProducer()
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    answer = post("/ingest/water", GOOD_1, headers, producer)
    assert answer.status == 401
    assert answer.body["error"] == "unauthorised"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert producer.sent == []
    assert answer.metric("onemap_ingest_requests_total", feed="water", status="401") == 1


def test_scheme_is_case_insensitive() -> None:
    answer = post("/ingest/water", GOOD_1, {"Authorization": f"bearer {TOKEN}",
                                             "Content-Type": "application/json"})
    assert answer.status == 200


def test_unknown_feed_is_401_before_auth_and_404_after() -> None:
    assert post("/ingest/nope", GOOD_1, {"Content-Type": "application/json"}).status == 401
    answer = post("/ingest/nope", GOOD_1, JSON)
    assert answer.status == 404
    assert "water" in answer.body["detail"]
    assert answer.metric("onemap_ingest_requests_total", feed="unknown", status="404") == 1


def test_token_never_logged_nor_in_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    post("/ingest/water", b"[" + GOOD_1 + b"," + BAD_MISSING + b"]", JSON)
    post("/ingest/water", GOOD_1, {"Authorization": "Bearer guess"})
    post("/ingest/water", GOOD_1, JSON, FakeProducer(fail=BrokerUnavailable("down")))
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(IngestConfig(token=TOKEN))


def test_empty_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="token"):
        IngestConfig(token="")


# -- formats -------------------------------------------------------------------------------------


def test_single_object_is_accepted_with_its_exact_bytes_and_key() -> None:
    producer = FakeProducer()
    answer = post("/ingest/water", b"  " + GOOD_2 + b"\n", JSON, producer)
    assert (answer.status, answer.body) == (200, {"accepted": 1, "rejected": []})
    assert producer.sent == [("onemap.in.water", b"ZH-RIV-001", GOOD_2)]


def test_mixed_array_is_207_with_every_rejection_explained_and_dead_lettered() -> None:
    producer = FakeProducer()
    body = b"[\n  " + GOOD_1 + b",\n  " + BAD_MISSING + b" , " + GOOD_2 + b",\n" + BAD_RANGE \
        + b", 42 ]"
    answer = post("/ingest/water", body, JSON, producer, topic_prefix="t1")
    assert answer.status == 207
    assert answer.body["accepted"] == 2
    assert [(r["index"], r["reason"], r["field"]) for r in answer.body["rejected"]] == [
        (1, "missing-field", "observed_at"), (3, "out-of-range", "level_m"),
        (4, "invalid-json", None)]
    assert all(r["detail"] for r in answer.body["rejected"])
    inputs = [(key, value) for topic, key, value in producer.sent if topic == "t1.in.water"]
    assert inputs == [(b"ZH-TIDE-005", GOOD_1), (b"ZH-RIV-001", GOOD_2)]
    letters = [(key, orjson.loads(value or b"")) for topic, key, value in producer.sent
               if topic == "t1.deadletter"]
    assert [key for key, _ in letters] == [b"ZH-TIDE-005", b"ZH-TIDE-006", None]
    for (_, letter), original in zip(letters, (BAD_MISSING, BAD_RANGE, b"42"), strict=True):
        assert letter["stage"] == "http-ingest"
        assert letter["feed"] == "water"
        assert base64.b64decode(letter["original_b64"]) == original
        assert letter["source"]["topic"] == "t1.in.water"
        assert letter["rejected_at"] == NOW.isoformat()
    assert [letter["reason"] for _, letter in letters] == [
        "missing-field", "out-of-range", "invalid-json"]
    assert answer.metric("onemap_ingest_records_total", feed="water", outcome="accepted") == 2
    assert answer.metric("onemap_ingest_records_total", feed="water", outcome="rejected") == 3
    assert answer.metric("onemap_ingest_requests_total", feed="water", status="207") == 1


def test_json_lines_each_line_a_record_even_a_broken_one() -> None:
    producer = FakeProducer()
    body = GOOD_1 + b"\r\n\n{not json\n" + GOOD_2
    answer = post("/ingest/water", body, NDJSON, producer)
    assert answer.status == 207
    assert answer.body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in answer.body["rejected"]] == [(1, "invalid-json")]
    assert [v for t, _, v in producer.sent if t == "onemap.in.water"] == [GOOD_1, GOOD_2]


def test_cap_xml_is_one_message_keyed_by_lineage() -> None:
    producer = FakeProducer()
    raw = CAP_A2.read_bytes()
    answer = post("/ingest/cap", raw, XML, producer)
    assert (answer.status, answer.body) == (200, {"accepted": 1, "rejected": []})
    assert producer.sent == [("onemap.in.cap", b"KSTO1055887203", raw)]
    assert producer.sent[0][1] == replay_key(raw.decode())


def test_cap_that_is_not_xml_is_rejected_and_dead_lettered() -> None:
    producer = FakeProducer()
    answer = post("/ingest/cap", b"<alert>never closed", XML, producer)
    assert answer.status == 207
    [rejected] = answer.body["rejected"]
    assert rejected["index"] == 0
    assert [t for t, _, _ in producer.sent] == ["onemap.deadletter"]


@pytest.mark.parametrize(("path", "content_type"), [
    ("/ingest/water", "text/plain"), ("/ingest/water", "application/xml"),
    ("/ingest/water", None), ("/ingest/cap", "application/json"),
    ("/ingest/cap", "application/x-ndjson")])
def test_wrong_content_type_is_415(path: str, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = post(path, GOOD_1, headers)
    assert answer.status == 415
    assert answer.body["error"] == "unsupported-media-type"


def test_charset_parameter_is_fine() -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    assert post("/ingest/water", GOOD_1, headers).status == 200


@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"[1, 2", b"42", b'"text"', b"[]",
                                  b"\xff\xfe{}", b"null"])
def test_unreadable_or_empty_body_is_400(body: bytes) -> None:
    producer = FakeProducer()
    answer = post("/ingest/water", body, JSON, producer)
    assert answer.status == 400
    assert answer.body["error"] == "unreadable-body"
    assert producer.sent == []


# -- limits ---------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_by_content_length() -> None:
    producer = FakeProducer()
    body = b"[" + b",".join([GOOD_1] * 20) + b"]"
    answer = post("/ingest/water", body, JSON, producer, max_body_bytes=1000)
    assert answer.status == 413
    assert answer.body["error"] == "body-too-large"
    assert producer.sent == []


def test_chunked_body_over_the_limit_is_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield GOOD_1 + b"\n"

    answer = post("/ingest/water", chunks(), NDJSON, max_body_bytes=1000)
    assert answer.status == 413


def test_default_body_limit_is_5_mib() -> None:
    line = b'{"station_id": "x", "pad": "' + b"a" * 60_000 + b'"}\n'
    body = line * (5 * 1024 * 1024 // len(line) + 1)
    assert post("/ingest/water", body, NDJSON).status == 413


def test_record_over_the_feed_limit_is_413_naming_it() -> None:
    producer = FakeProducer()
    big = b'{"station_id": "ZH-TIDE-005", "pad": "' + b"x" * (64 * 1024) + b'"}'
    answer = post("/ingest/water", GOOD_1 + b"\n" + big + b"\n", NDJSON, producer)
    assert answer.status == 413
    assert (answer.body["error"], answer.body["index"], answer.body["limit"]) == (
        "record-too-large", 1, 64 * 1024)
    assert producer.sent == []


def test_cap_limit_is_1_mib() -> None:
    with pytest.raises(RequestRefused) as caught:
        split_records("cap", "application/xml", b"<a>" + b"x" * (1024 * 1024) + b"</a>")
    assert caught.value.status == 413
    assert split_records("cap", "application/xml", b"<a>" + b"x" * 70_000 + b"</a>")


def test_too_many_records_is_413() -> None:
    answer = post("/ingest/water", (GOOD_1 + b"\n") * 6, NDJSON, max_records=5)
    assert answer.status == 413
    assert answer.body["error"] == "too-many-records"


# -- broker trouble -------------------------------------------------------------------------------


@pytest.mark.parametrize("producer", [
    FakeProducer(fail=BrokerUnavailable("cannot reach Kafka")),
    FakeProducer(fail=KafkaConnectionError("no broker")),
    FakeProducer(fail_delivery=KafkaConnectionError("lost")),
    FakeProducer(hang=True)], ids=["not-started", "connect", "delivery", "timeout"])
def test_broker_unavailable_is_503_with_retry_after(producer: FakeProducer) -> None:
    answer = post("/ingest/water", b"[" + GOOD_1 + b"," + BAD_MISSING + b"]", JSON, producer,
                  delivery_timeout_s=0.3, retry_after_s=7)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "7"
    assert answer.body["error"] == "broker-unavailable"
    assert "accepted" not in answer.body
    assert answer.metric("onemap_ingest_records_total", feed="water", outcome="accepted") == 0
    assert answer.metric("onemap_ingest_requests_total", feed="water", status="503") == 1


def test_healthz_and_metrics_are_open() -> None:
    async def main() -> tuple[int, int, str]:
        app = make_ingest_app(FakeProducer(), IngestConfig(token=TOKEN))
        async with TestClient(TestServer(app)) as client:
            health = await client.get("/healthz")
            metrics = await client.get("/metrics")
            return health.status, metrics.status, await metrics.text()

    health, metrics, text = asyncio.run(main())
    assert (health, metrics) == (200, 200)
    assert "onemap_ingest_requests_total" in text


# -- the pure parts -------------------------------------------------------------------------------


def test_split_json_array_keeps_exact_bytes_through_tricky_strings() -> None:
    body = (b'[ {"a": "x,]}\\"[{"}, {"b": [1, {"c": ","}]} ,\n"s\\\\", [], {} ,'
            b' 1.5e3 ]  ')
    assert split_json_array(body) == [
        b'{"a": "x,]}\\"[{"}', b'{"b": [1, {"c": ","}]}', b'"s\\\\"', b"[]", b"{}", b"1.5e3"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(json_values, max_size=6), st.sampled_from([",", " , ", ",\n  "]))
def test_split_json_array_round_trips(items: list[Any], sep: str) -> None:
    body = ("[" + sep.join(json.dumps(i, ensure_ascii=False) for i in items) + "]").encode()
    parts = split_json_array(body)
    assert [orjson.loads(p) for p in parts] == orjson.loads(body)


@pytest.mark.parametrize("raw", [GOOD_1, GOOD_2, BAD_MISSING, b"42", b"{bad",
                                 b'{"point_id": "ZH-GEO-001"}', b'{"incident_id": "119-1"}',
                                 b'{"station_id": 7, "source_id": "s"}'])
def test_source_key_follows_the_replay_rule(raw: bytes) -> None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = None
    assert source_key("water", raw, None) == replay_key(record)
