"""HTTP ingest: departments whose systems push over HTTP POST feed records here.

``POST /ingest/{feed}`` takes one JSON object, a JSON array of objects, or JSON Lines
(``application/x-ndjson``); for ``cap`` one CAP 1.2 XML message (``application/xml``). Every
record is checked by the feed's own parser *before* anything is produced, so the caller learns
at once which records were bad and why. Then, in one go, the original bytes of each accepted
record go to ``<prefix>.in.<feed>`` keyed by its source (as ``onemap replay`` keys them) and
each rejected record goes to ``<prefix>.deadletter`` (stage ``http-ingest``), so nothing is
lost. The answer waits for the broker to acknowledge every one of them (acks=all): 200 or 207
means all were written; 503 means nothing is acknowledged and the caller should send the
whole request again (delivery is at least once; the pipeline counts a duplicate reading once).

Why validate here when the ingest stage validates again: a gateway pushing over HTTP can fix
and resend a bad record only if it is told in the response, not in a dead-letter topic it
cannot see. Registry checks (is this station known?) stay in the pipeline, which holds the
registries.

The token is compared in constant time and never logged; /healthz and /metrics stay open for
the orchestrator and Prometheus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from onemap.errors import ConfigError, InputRejected, OneMapError
from onemap.settings import Settings
from onemap.streams.deadletter import DeadLetter, RawRecord
from onemap.streams.feeds import FEEDS, Feed, Reading
from onemap.streams.feeds.base import MAX_RECORD_BYTES
from onemap.streams.feeds.cap import MAX_CAP_BYTES

log = logging.getLogger(__name__)

STAGE: Final = "http-ingest"
MAX_BODY_BYTES: Final = 5 * 1024 * 1024
MAX_RECORDS: Final = 10_000
#: Largest single record per feed: the limit its own parser enforces.
RECORD_LIMITS: Final[Mapping[str, int]] = {"cap": MAX_CAP_BYTES}
JSON_TYPES: Final = frozenset({"application/json"})
NDJSON_TYPES: Final = frozenset({"application/x-ndjson", "application/jsonl",
                                 "application/jsonlines", "application/x-jsonlines"})
XML_TYPES: Final = frozenset({"application/xml", "text/xml", "application/cap+xml"})
#: Fields naming a record's source, in the order ``onemap replay`` looks for them.
KEY_FIELDS: Final = ("station_id", "point_id", "incident_id", "source_id")


# -- configuration and the producer it writes with ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What the endpoint needs; :meth:`from_settings` builds it for ``onemap ingest``."""

    token: str = dataclasses.field(repr=False)
    topic_prefix: str = "onemap"
    max_body_bytes: int = MAX_BODY_BYTES
    max_records: int = MAX_RECORDS
    #: Longest wait for the broker to acknowledge a request's records before answering 503.
    delivery_timeout_s: float = 15.0
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigError("the ingest token must not be empty", field="ONEMAP_INGEST_TOKEN")
        if self.max_body_bytes < 1 or self.max_records < 1 or self.delivery_timeout_s <= 0:
            raise ConfigError("ingest limits and timeouts must be positive")

    @classmethod
    def from_settings(cls, settings: Settings, token: str) -> IngestConfig:
        return cls(token=token, topic_prefix=settings.topic_prefix)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


class Producer(Protocol):
    """The one call the endpoint makes: aiokafka's ``send`` (enqueue, return the delivery).

    ``await send(...)`` queues the record and returns an awaitable that resolves when the
    broker has acknowledged it (or raises if it could not).
    """

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None,
    ) -> Awaitable[Any]: ...


class BrokerUnavailable(OneMapError):
    """The broker cannot be reached now; the request is refused with 503 and Retry-After."""


class KafkaIngestProducer:
    """An aiokafka producer (acks=all) started on first use.

    Starting lazily lets the endpoint come up, answer /healthz and refuse with 503 while the
    broker is away, instead of failing to start; a later request tries again.
    """

    def __init__(self, bootstrap_servers: Sequence[str], *,
                 request_timeout_ms: int = 10_000, client_id: str = "onemap-http-ingest") -> None:
        self.bootstrap_servers = list(bootstrap_servers)
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def _started(self) -> Any:
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=5,
                    client_id=self.client_id, request_timeout_ms=self.request_timeout_ms)
                try:
                    await producer.start()
                except (KafkaError, OSError) as exc:
                    await producer.stop()
                    raise BrokerUnavailable(
                        f"cannot reach Kafka at {','.join(self.bootstrap_servers)}: "
                        f"{type(exc).__name__}") from exc
                self._producer = producer
            return self._producer

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None,
    ) -> Awaitable[Any]:
        producer = await self._started()
        delivery: Awaitable[Any] = await producer.send(topic, value=value, key=key)
        return delivery

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


# -- pure request logic: body -> records -> verdicts --------------------------------------------


class RequestRefused(OneMapError):
    """The request as a whole cannot be taken: HTTP ``status``, a stable ``error`` code."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra
        super().__init__(f"{status} {error}: {detail}")

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{},]', re.DOTALL)


def split_json_array(body: bytes) -> list[bytes]:
    """The exact bytes of each element of a JSON array that is already known to be valid.

    >>> split_json_array(b'[{"a": "x,]"}, {"b": [1, 2]} , 3]')
    [b'{"a": "x,]"}', b'{"b": [1, 2]}', b'3']
    """
    start = body.index(b"[") + 1
    items: list[bytes] = []
    item_start = start
    depth = 0
    for match in _JSON_TOKEN.finditer(body, start):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            if depth == 0:  # the array's own closing bracket
                last = body[item_start:match.start()].strip()
                if last:
                    items.append(last)
                break
            depth -= 1
        elif token == b"," and depth == 0:
            items.append(body[item_start:match.start()].strip())
            item_start = match.end()
    return items


def _json_records(content_type: str, body: bytes) -> list[bytes]:
    if content_type in NDJSON_TYPES:
        return [line.strip() for line in body.split(b"\n") if line.strip()]
    if content_type not in JSON_TYPES:
        raise RequestRefused(415, "unsupported-media-type",
                             "send application/json (one object or an array) or "
                             f"application/x-ndjson; got {content_type or 'no Content-Type'}")
    if not body.strip():
        return []
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(400, "unreadable-body", f"not valid JSON: {exc}") from None
    if isinstance(parsed, dict):
        return [body.strip()]
    if isinstance(parsed, list):
        return split_json_array(body)
    raise RequestRefused(400, "unreadable-body", "expected a JSON object or an array of "
                         f"objects, got {type(parsed).__name__}")


def split_records(
    feed: str, content_type: str, body: bytes, *,
    max_records: int = MAX_RECORDS, record_limit: int | None = None,
) -> list[bytes]:
    """The request body as the original bytes of each record, or RequestRefused saying why.

    >>> split_records("water", "application/x-ndjson", b'{"a": 1}\\r\\n\\n{"b": 2}\\n')
    [b'{"a": 1}', b'{"b": 2}']
    """
    limit = record_limit if record_limit is not None else RECORD_LIMITS.get(feed, MAX_RECORD_BYTES)
    if feed == "cap":
        if content_type not in XML_TYPES:
            raise RequestRefused(415, "unsupported-media-type",
                                 f"cap takes one CAP XML message as {', '.join(sorted(XML_TYPES))}"
                                 f"; got {content_type or 'no Content-Type'}")
        records = [body] if body.strip() else []
    else:
        records = _json_records(content_type, body)
    if not records:
        raise RequestRefused(400, "unreadable-body", "the request holds no records")
    if len(records) > max_records:
        raise RequestRefused(413, "too-many-records",
                             f"{len(records)} records; at most {max_records} per request",
                             limit=max_records)
    for index, raw in enumerate(records):
        if len(raw) > limit:
            raise RequestRefused(413, "record-too-large",
                                 f"record {index} is {len(raw)} bytes; limit {limit}",
                                 index=index, limit=limit)
    return records


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """One record of a request: accepted (``reading``) or rejected (``rejection``)."""

    index: int
    raw: bytes
    key: bytes | None
    reading: Reading | None = None
    rejection: InputRejected | None = None

    def as_json(self) -> dict[str, Any]:
        assert self.rejection is not None
        return {"index": self.index, "reason": self.rejection.reason,
                "field": self.rejection.field, "detail": self.rejection.detail}


def source_key(feed: str, raw: bytes, reading: Reading | None) -> bytes | None:
    """The partition key, by the rule of ``onemap replay``: the source the record belongs to.

    The first string among station_id / point_id / incident_id / source_id; for CAP the
    warning's lineage. None when the record does not say (only possible for rejected ones).
    """
    if feed == "cap":
        return reading.source_id.encode() if reading is not None else None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        for field in KEY_FIELDS:
            value = obj.get(field)
            if isinstance(value, str):
                return value.encode()
    return None


def judge(feed: Feed, records: Sequence[bytes]) -> list[Verdict]:
    """Run the feed's parser on every record; pure and CPU-bound (run it off the loop)."""
    verdicts: list[Verdict] = []
    for index, raw in enumerate(records):
        try:
            reading = feed.parse(raw)
        except InputRejected as exc:
            verdicts.append(Verdict(index, raw, source_key(feed.name, raw, None), rejection=exc))
        else:
            verdicts.append(Verdict(index, raw, source_key(feed.name, raw, reading), reading))
    return verdicts


# -- the aiohttp application --------------------------------------------------------------------


class IngestMetrics:
    """Requests by status and records by outcome, per feed (``unknown`` for unknown feeds)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "onemap_ingest_requests_total", "HTTP ingest requests by feed and HTTP status.",
            ["feed", "status"], registry=registry)
        self.records = Counter(
            "onemap_ingest_records_total",
            "Records received over HTTP, by outcome (accepted / rejected).",
            ["feed", "outcome"], registry=registry)


@dataclasses.dataclass
class IngestState:
    producer: Producer
    config: IngestConfig
    registry: CollectorRegistry
    metrics: IngestMetrics
    feeds: Mapping[str, Feed]
    clock: Callable[[], datetime]
    token: bytes = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.token = self.config.token.encode()

    def authorised(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, candidate = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # compare_digest on bytes: constant time for any candidate, even a non-ASCII one
        return hmac.compare_digest(candidate.strip().encode(), self.token)


STATE_KEY: web.AppKey[IngestState] = web.AppKey("ingest", IngestState)


def _refusal(exc: RequestRefused, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(exc.body(), status=exc.status, headers=headers,
                             dumps=lambda o: orjson.dumps(o).decode())


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to pass ``limit``."""
    too_large = RequestRefused(413, "body-too-large", f"the body is over {limit} bytes",
                               limit=limit)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except (OSError, ValueError) as exc:  # a broken upload (e.g. bad chunked encoding)
        raise RequestRefused(400, "unreadable-body",
                             f"cannot read the body: {type(exc).__name__}") from None
    return b"".join(chunks)


async def _produce(state: IngestState, feed: str, verdicts: Sequence[Verdict]) -> None:
    """Write every verdict (record or dead letter) and wait until the broker has them all."""
    now = state.clock()
    topic = state.config.topic(f"in.{feed}")
    deadletter = state.config.topic("deadletter")
    deliveries: list[Awaitable[Any]] = []
    async with asyncio.timeout(state.config.delivery_timeout_s):
        for v in verdicts:
            if v.rejection is None:
                deliveries.append(await state.producer.send(topic, value=v.raw, key=v.key))
            else:
                letter = DeadLetter(RawRecord(v.raw, v.key, topic), feed, STAGE,
                                    v.rejection.reason, v.rejection.detail, v.rejection.field)
                deliveries.append(await state.producer.send(
                    deadletter, value=letter.to_json(now), key=v.key))
        results = await asyncio.gather(*deliveries, return_exceptions=True)
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed


async def _ingest(state: IngestState, request: web.Request, feed_name: str) -> web.Response:
    if not state.authorised(request.headers.get("Authorization")):
        raise RequestRefused(401, "unauthorised", "send Authorization: Bearer <ingest token>")
    feed = state.feeds.get(feed_name)
    if feed is None:
        raise RequestRefused(404, "unknown-feed", f"no feed {feed_name[:40]!r}; known: "
                             f"{', '.join(sorted(state.feeds))}")
    body = await _read_body(request, state.config.max_body_bytes)
    records = split_records(feed.name, request.content_type, body,
                            max_records=state.config.max_records)
    loop = asyncio.get_running_loop()
    verdicts = await loop.run_in_executor(None, judge, feed, records)
    try:
        await _produce(state, feed.name, verdicts)
    except (BrokerUnavailable, KafkaError, TimeoutError, OSError) as exc:
        log.warning("http ingest %s: broker unavailable (%s); %d records refused with 503",
                    feed.name, type(exc).__name__, len(verdicts))
        raise RequestRefused(503, "broker-unavailable", "Kafka did not acknowledge the records; "
                             "nothing was accepted, send the whole request again") from None
    rejected = [v.as_json() for v in verdicts if v.rejection is not None]
    accepted = len(verdicts) - len(rejected)
    state.metrics.records.labels(feed.name, "accepted").inc(accepted)
    state.metrics.records.labels(feed.name, "rejected").inc(len(rejected))
    log.info("http ingest %s: %d accepted, %d rejected", feed.name, accepted, len(rejected))
    return web.json_response({"accepted": accepted, "rejected": rejected},
                             status=207 if rejected else 200,
                             dumps=lambda o: orjson.dumps(o).decode())


async def ingest(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    feed_name = request.match_info["feed"]
    try:
        response = await _ingest(state, request, feed_name)
    except RequestRefused as exc:
        headers = ({"WWW-Authenticate": 'Bearer realm="onemap-ingest"'} if exc.status == 401
                   else {"Retry-After": str(state.config.retry_after_s)} if exc.status == 503
                   else None)
        response = _refusal(exc, headers)
    label = feed_name if feed_name in state.feeds else "unknown"
    state.metrics.requests.labels(label, str(response.status)).inc()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_ingest_app(
    producer: Producer, config: IngestConfig, registry: CollectorRegistry | None = None, *,
    feeds: Mapping[str, Feed] = FEEDS, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The ingest app. The caller owns ``producer`` (starts and stops it)."""
    registry = registry if registry is not None else CollectorRegistry()
    state = IngestState(producer=producer, config=config, registry=registry,
                        metrics=IngestMetrics(registry), feeds=feeds, clock=clock)
    app = web.Application(client_max_size=config.max_body_bytes + 1)
    app[STATE_KEY] = state
    app.router.add_post("/ingest/{feed}", ingest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def run_ingest(settings: Settings, host: str, port: int, token: str | None) -> int:
    """``onemap ingest``: serve the endpoint until SIGINT/SIGTERM."""
    from onemap import logs
    from onemap.embedded import require_free
    from onemap.errors import ComponentError
    from onemap.topics import ensure_topics

    logs.configure(settings.log_level, settings.log_format)
    if not token:
        raise ConfigError("set the ingest token in ONEMAP_INGEST_TOKEN: the endpoint writes "
                          "into the pipeline and is never open", field="ONEMAP_INGEST_TOKEN")
    if not 0 < port < 65536:
        raise ConfigError(f"port must be 1..65535, got {port}", field="ONEMAP_INGEST_PORT")
    config = IngestConfig.from_settings(settings, token)
    require_free(host, port, "http ingest", "--port or ONEMAP_INGEST_PORT")
    try:
        ensure_topics(settings)
    except ComponentError as exc:  # the endpoint answers 503 until the broker is back
        log.warning("http ingest: %s", exc)
    producer = KafkaIngestProducer(settings.bootstrap_servers)
    app = make_ingest_app(producer, config, CollectorRegistry())

    async def stop_producer(_: web.Application) -> None:
        await producer.stop()

    app.on_cleanup.append(stop_producer)
    print(f"http ingest: http://{host}:{port}/ingest/{{feed}}", file=sys.stderr, flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=2.0)
    return 0
