"""The worker's stages: each a thin shell around its pure batch logic.

Ingest runs on a plain aiokafka batch loop of its own (streams/ingest_loop.py: it keeps no
state, and faust's per-event stream cost more than the stage itself); rules, lifecycle and
the sinks are faust agents, whose tables keep their state.

    onemap.in.<feed> --ingest--> onemap.observations --rules--> onemap.hazards
        --lifecycle--> onemap.alerts --sinks--> Redis state, SMS

Incident reports and CAP warnings take a lane of their own between ingest and rules,
``onemap.observations.priority`` with its own rules agent: a burst of sensor readings
(thousands a second in a storm) then never queues the news that is urgent by itself
(docs/operations.md, "Overload and priority").

Stages talk only through Kafka topics, so each scales by adding workers to the group.
Partition keys keep state local: observations by source (per-source windows and levels),
hazards and alerts by area. Offsets are committed after a batch is processed and its output
handed to the producer; sinks are flushed before their batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any, TypeVar, cast

import faust
import redis.asyncio as aioredis
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import EventT
from mode import CrashingSupervisor
from redis.exceptions import RedisError

from onemap.records import Alert, Hazard, Observation
from onemap.rules.evaluate import state_key
from onemap.rules.lifecycle import rank_area
from onemap.rules.silences import Silence, silenced_by
from onemap.sinks.base import AlertSink, Outcome
from onemap.sinks.silences import read_silences
from onemap.sinks.sms.followup import ESCALATION_CHECK_S, SmsFollowUp
from onemap.sinks.sms.sink import SmsSink
from onemap.streams.context import WorkerContext
from onemap.streams.deadletter import DeadLetter, RawRecord
from onemap.streams.feeds import FEEDS
from onemap.streams.health import HEALTH_INTERVAL_S, HealthMonitor
from onemap.streams.ingest_loop import IngestLoop
from onemap.streams.ledger_tail import ledger_tails
from onemap.streams.outbox import Outbox, PartitionCache
from onemap.streams.source_state import assemble, chunk_key, is_chunk_key, split

log = logging.getLogger(__name__)

INPUT_TOPICS = {name: f"in.{name}" for name in ("weather", "water", "geohazard", "incident", "cap")}
PIPELINE_TOPICS = ("observations", "observations.priority", "hazards", "alerts", "deadletter")
#: feeds whose every record is a report on its own (no window, no rate): few, and the most
#: urgent news; their observations skip the queue of the sensor readings
PRIORITY_FEEDS = frozenset({"incident", "cap"})
SINK_RETRY_MAX_S = 10.0  # a sink back after an outage catches up within ~10 s
SILENCE_CHECK_S = 5.0
SILENCES_REFRESH_S = 5.0
#: how often held SMS are checked for a due summary
SMS_TICK_S = 15.0
#: keys of the per-partition changelog markers (see EventBoundTable.seal); not state
MARKER_PREFIX = "__marker__:"
#: a failpoint for the fault tests: ``<stage>:before-state`` kills the worker (SIGKILL) after
#: the stage's first batch with output has been flushed and before its state is written, the
#: one moment that makes a batch's output appear twice (see Pipeline.output_then_state)
FAILPOINT_ENV = "ONEMAP_FAILPOINT"

T = TypeVar("T")


def observations_topic(feed: str) -> str:
    """The topic (without prefix) a feed's observations go to: the priority lane or the
    bulk of the readings. A source's observations always take the same lane, so its
    readings stay in order and its state in one partition."""
    return "observations.priority" if feed in PRIORITY_FEEDS else "observations"


def all_topics(ctx_prefix: str) -> list[str]:
    return [f"{ctx_prefix}.{t}" for t in (*INPUT_TOPICS.values(), *PIPELINE_TOPICS)]


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    """faust's consumer with our fetch wait (faust hard-codes 1.5 s).

    The embedded broker (Tansu) holds every fetch for the full wait even when records
    arrive, so with faust's 1.5 s a record waited ~0.75 s on average at each of the four
    stages: more than the wall's 2 s budget. Measured: 0.55 s per hop at 1.5 s, < 10 ms
    at 0.1 s. Apache Kafka answers early, so a short wait only adds idle fetches there.
    """
    consumer = _faust_create_worker_consumer(self, transport)
    wait_s = getattr(self.app, "onemap_fetch_max_wait_s", None)
    if wait_s is not None:
        consumer._fetch_max_wait_ms = int(wait_s * 1000)  # read when the consumer starts
    return consumer


_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


def make_faust_app(ctx: WorkerContext) -> faust.App:
    s = ctx.settings
    app = faust.App(
        s.app_id,
        broker=s.kafka_url,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        topic_allow_declare=True,
        broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        web_enabled=False,
        store="memory://",
        datadir=str(s.data_dir / "faust"),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
    )
    app.onemap_fetch_max_wait_s = s.fetch_max_wait_s  # type: ignore[attr-defined]
    return app


_DELETED = object()


class EventBoundTable(MutableMapping[str, Any]):
    """A faust table seen through the events of one batch, written when the batch is done.

    Faust writes a table key to the changelog partition of the *current event*; in a batch
    there is none, so each write first makes current the event its key came from. State thus
    stays co-partitioned with the records that change it, and recovers with them.

    Writes are held (reads see them) until :meth:`seal`, which the stage calls after its
    output is flushed to the broker: if the worker dies before, the batch is consumed again
    and its output re-issued under the same ids; were the state written first, the second
    run would find the batch already applied and its output would be lost.
    """

    def __init__(self, table: Any, stream: faust.StreamT[bytes],
                 events_by_key: dict[str, EventT[bytes]]) -> None:
        # faust.Stream (the concrete class every agent gets) sets the current event
        self.stream = cast(faust.Stream[bytes], stream)
        self.table = table
        self.events_by_key = events_by_key
        self.pending: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            value = self.pending[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.pending:
            value = self.pending[key]
            return default if value is _DELETED else value
        return self.table.get(key, default)

    def _as_of(self, event: EventT[bytes]) -> Any:
        """Make ``event`` current for a table write; returns what to restore afterwards
        (the stream's own current event: its take buffer relies on it)."""
        previous = self.stream.current_event
        self.stream._set_current_event(event)
        return previous

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.events_by_key:
            raise KeyError(f"{key!r} is not bound to an event of this batch")
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self.events_by_key:
            raise KeyError(f"{key!r} is not bound to an event of this batch")
        self.pending[key] = _DELETED

    def _write(self, key: str, value: Any) -> None:
        event = self.events_by_key[key]
        if isinstance(value, dict):
            value["partition"] = event.message.partition  # for per-partition stream time
        previous = self._as_of(event)
        try:
            for table_key, stored in self._stored_form(key, value):
                if stored is _DELETED:
                    self.table.pop(table_key, None)
                else:
                    self.table[table_key] = stored
        finally:
            self.stream._set_current_event(previous)

    def _stored_form(self, key: str, value: Any) -> list[tuple[str, Any]]:
        """The table records one logical write becomes, in write order (one here)."""
        return [(key, value)]

    async def seal(self, producer: Any) -> None:
        """Write the batch's state, then one marker per changelog partition it touched.

        Call it after the batch's output is flushed. The embedded broker (Tansu) reports a
        partition's end offset low (DESIGN.md: it answers with the start of the last
        produced batch), and faust recovers a changelog only up to that end offset, so after
        a restart the last writes of a partition would be missing. So the batch's writes are
        flushed first, and a marker follows them in a batch of its own: everything before
        the marker is recovered.
        """
        for key, value in self.pending.items():
            self._write(key, value)
        self.pending.clear()
        await producer.flush()
        last_per_partition: dict[int, EventT[bytes]] = {}
        for event in self.events_by_key.values():
            last_per_partition[event.message.partition] = event
        for partition, event in last_per_partition.items():
            previous = self._as_of(event)
            try:
                self.table[f"{MARKER_PREFIX}{partition}"] = {"marker": True}
            finally:
                self.stream._set_current_event(previous)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


class SourceStateTable(EventBoundTable):
    """The rules' per-source state, stored so that a batch writes only what changed.

    The rules read and write one logical value per source (up to 24 h of readings); the
    table holds it as a small head plus hourly chunks (streams/source_state.py), written
    after the batch's output like any EventBoundTable. Reads assemble the logical value once
    and keep it (``cache``, owned by the caller across batches) for as long as the table
    still holds the same head object: a recovery or another write replaces that object.
    """

    def __init__(self, table: Any, stream: faust.StreamT[bytes],
                 events_by_key: dict[str, EventT[bytes]], changed_from: dict[str, float],
                 cache: dict[str, tuple[Any, Any]]) -> None:
        super().__init__(table, stream, events_by_key)
        self.changed_from = changed_from
        self.cache = cache

    def _logical(self, key: str, default: Any) -> Any:
        head = self.table.get(key)
        if not head:
            return default if head is None else head
        cached = self.cache.get(key)
        if cached is not None and cached[0] is head:
            return cached[1]
        value = assemble(head, lambda k: self.table.get(chunk_key(key, k)), key)
        self.cache[key] = (head, value)
        return value

    def __getitem__(self, key: str) -> Any:
        if key in self.pending:
            return super().__getitem__(key)
        value = self._logical(key, None)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.pending:
            return super().get(key, default)
        return self._logical(key, default)

    def _stored_form(self, key: str, value: Any) -> list[tuple[str, Any]]:
        head = self.table.get(key)
        if value is _DELETED:
            self.cache.pop(key, None)
            sealed = head.get("sealed", []) if isinstance(head, dict) else []
            return [(key, _DELETED), *((chunk_key(key, k), _DELETED) for k in sealed)]
        if not isinstance(value, dict):
            return [(key, value)]
        stored = split(value, head, self.changed_from.get(key))
        self.cache[key] = (stored.head, value)
        # the head first: see streams/source_state.py on crash safety
        return [(key, stored.head), *((chunk_key(key, k), _DELETED if c is None else c)
                                      for k, c in stored.chunks.items())]


class Pipeline:
    """The faust app with one agent per stage; each agent a shell around its pure stage."""

    def __init__(self, ctx: WorkerContext, sinks: Sequence[AlertSink], *,
                 redis: aioredis.Redis | None = None, sms: SmsSink | None = None,
                 follow_up: SmsFollowUp | None = None) -> None:
        self.ctx = ctx
        self.sinks = list(sinks)
        self.redis = redis
        self.follow_up = follow_up
        self.m = ctx.metrics
        self.app = make_faust_app(ctx)
        self.observations = {name: self.topic(name)
                             for name in ("observations", "observations.priority")}
        self.hazards = self.topic("hazards")
        self.alerts = self.topic("alerts")
        self.deadletter = self.topic("deadletter")
        partitions = ctx.settings.partitions
        # No value_type: values are plain JSON dicts (value_type=dict makes faust try
        # dict.from_data when it recovers the changelog after a restart, and lose the state)
        self.source_state = self.app.Table(
            "onemap-source-state", default=dict, key_type=str,
            partitions=partitions)
        #: the rules' logical per-source values, assembled from the table (SourceStateTable)
        self._source_cache: dict[str, tuple[Any, Any]] = {}
        self._partitions: PartitionCache = {}  # see Outbox
        self.alert_state = self.app.Table(
            "onemap-alert-state", default=dict, key_type=str,
            partitions=partitions)
        self.m.rules_version.labels(ctx.rulebook.current.version).set(1)
        #: silences in force, refreshed from Redis (the wall's API writes them); the last
        #: good list is kept while Redis is unreachable
        self.silences: list[Silence] = []
        self._silences_read_at = -SILENCES_REFRESH_S
        self._rules_batch = asyncio.Lock()
        #: ledger partition -> the alert ids at its end when this worker took it over
        #: (streams/ledger_tail.py); forgotten when partitions are revoked
        self._ledger_tails: dict[int, set[str]] = {}
        self.app.on_partitions_revoked.connect(self._forget_ledger_tails)
        # two rules agents, one per lane, taking turns (self._rules_batch): the priority
        # lane waits for at most one batch of readings, never for the readings' backlog
        self.agent(self.observations["observations"], "onemap.rules", self.rules_agent)
        self.agent(self.observations["observations.priority"], "onemap.rules.priority",
                   self.rules_agent)
        self.agent(self.hazards, "onemap.lifecycle", self.lifecycle_agent)
        for sink in self.sinks:  # one agent per sink: a failing SMS gateway never holds up
            # the wall display (each agent gets every alert; offsets commit when all acked)
            self.agent(self.alerts, f"onemap.sinks.{sink.name}", self._sink_agent(sink))
        self.app.timer(interval=ctx.settings.rules_reload_interval_s)(self.reload_rules)
        self.app.timer(interval=SILENCE_CHECK_S)(self.check_silence)
        self.app.timer(interval=ctx.settings.rules_reload_interval_s)(self.reload_roster)
        # SMS follow-ups: summaries of held messages, escalation of unacknowledged alerts,
        # deputies of undeliverable ones. Every worker may run them: each step is claimed
        # once in Redis.
        if sms is not None:
            self.app.timer(interval=SMS_TICK_S)(sms.tick)
        if follow_up is not None:
            self.app.timer(interval=ESCALATION_CHECK_S)(follow_up.tick)
        # --- health: consumer lag, feed activity, live hazards, onemap:feeds (streams/health.py)
        consumed = [self.ctx.settings.topic(t) for t in (*self.observations,
                                                          "hazards", "alerts")]
        self.health = HealthMonitor(self.app, ctx, consumed, self.alert_state,
                                    hazards_topic=self.ctx.settings.topic("hazards"))
        self.app.timer(interval=HEALTH_INTERVAL_S)(self.health.tick)
        # --- ingest: a plain aiokafka batch loop in this process (streams/ingest_loop.py)
        s = ctx.settings
        self.ingest = IngestLoop(
            ctx, self.health,
            {feed: s.topic(t) for feed, t in INPUT_TOPICS.items() if feed in FEEDS},
            lambda feed: s.topic(observations_topic(feed)), s.topic("deadletter"),
            priority_feeds=PRIORITY_FEEDS)
        self.health.extra_lag = self.ingest.lag
        self.app.task(self.run_ingest)

    def outbox(self) -> Outbox:
        faust_producer: Any = self.app.producer  # the aiokafka producer faust sends with
        return Outbox(faust_producer._ensure_producer, self.m.broker_errors.labels("send").inc,
                      self._partitions)

    async def run_ingest(self) -> None:
        """The ingest loop, for as long as the app runs; its crash crashes the worker (as
        an agent's does: a restarted worker resumes from the committed offsets)."""
        try:
            await self.ingest.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the ingest loop crashed")
            await self.app.crash(exc)

    async def output_then_state(self, out: Outbox, state: EventBoundTable, stage: str) -> None:
        """End a stateful stage's batch: its output delivered first, then its state.

        If the worker dies in between, the batch is consumed again and its output re-issued
        under the same ids (the lifecycle stage leaves out the alerts already on the
        ledger, streams/ledger_tail.py; sinks are idempotent on them); the other order
        would find the batch already applied and lose its output.
        """
        had_output = bool(out)
        await out.send()
        await self.app.producer.flush()
        if had_output and os.environ.get(FAILPOINT_ENV) == f"{stage}:before-state":
            log.warning("failpoint %s: killing the worker between output and state", stage)
            os.kill(os.getpid(), signal.SIGKILL)
        await state.seal(self.app.producer)

    def agent(self, channel: faust.TopicT, name: str,
              fun: Callable[[faust.StreamT[bytes]], Awaitable[None]]) -> None:
        """An agent whose crash crashes the worker: a bug must not leave a stage silently
        dead while the process looks healthy; the restarted worker resumes from the
        committed offsets."""
        self.app.agent(channel, name=name, supervisor_strategy=CrashingSupervisor)(fun)

    def topic(self, name: str) -> faust.TopicT:
        s = self.ctx.settings
        return self.app.topic(s.topic(name), key_type=bytes, value_type=bytes,
                              partitions=s.partitions)

    async def batches(self, stream: faust.StreamT[bytes]) -> AsyncIterator[list[EventT[bytes]]]:
        s = self.ctx.settings
        concrete = cast(faust.Stream[bytes], stream)
        async for events in concrete.take_events(s.batch_size, within=s.batch_wait_s):
            yield list(events)

    async def decode(self, events: list[EventT[bytes]], stage: str,
                     decoder: Callable[[bytes], T]) -> list[tuple[T, EventT[bytes]]]:
        out: list[tuple[T, EventT[bytes]]] = []
        for e in events:
            try:
                out.append((decoder(e.value), e))
            except (ValueError, KeyError, TypeError) as exc:
                await self.internal_dead_letter(e, stage, exc)
        return out

    async def rules_agent(self, stream: faust.StreamT[bytes]) -> None:
        async for events in self.batches(stream):
            async with self._rules_batch:  # the silence check must not see half a batch
                await self.rules_batch(stream, events)

    async def rules_batch(self, stream: faust.StreamT[bytes],
                          events: list[EventT[bytes]]) -> None:
        started = time.perf_counter()
        decoded = await self.decode(events, "rules", Observation.from_json)
        changed_from: dict[str, float] = {}  # the oldest reading of each source
        event_of_key: dict[str, EventT[bytes]] = {}  # the last record of each source
        for o, e in decoded:
            key, t = state_key(o), o.observed_at.timestamp()
            event_of_key[key] = e
            if t < changed_from.get(key, t + 1.0):
                changed_from[key] = t
        state = SourceStateTable(self.source_state, stream, event_of_key, changed_from,
                                 self._source_cache)
        result = self.ctx.rules.process([o for o, _ in decoded], state,
                                        self.ctx.rulebook.current)
        now = self.ctx.now()
        out = self.outbox()
        event_of = {id(o): e for o, e in decoded}  # the exact record, for its bytes
        for rejected in result.rejected:
            event = event_of[id(rejected.observation)]
            self.m.dead_letters.labels(rejected.observation.feed, rejected.reason).inc()
            dl = DeadLetter(_raw(event), rejected.observation.feed, "rules",
                            rejected.reason, rejected.detail)
            out.add(self.deadletter.get_topic_name(), event.key, dl.to_json(now))
        for decision, count in result.decisions.items():
            if count:
                self.m.rule_decisions.labels(decision.value).inc(count)
        for hazard in result.hazards:
            out.add(self.hazards.get_topic_name(), rank_area(hazard.place).encode(),
                    hazard.to_json())
        await self.output_then_state(out, state, "rules")
        self.m.records_out.labels("rules").inc(len(result.hazards))
        self.m.batch_seconds.labels("rules").observe(time.perf_counter() - started)

    async def lifecycle_agent(self, stream: faust.StreamT[bytes]) -> None:
        async for events in self.batches(stream):
            started = time.perf_counter()
            decoded = await self.decode(events, "lifecycle", Hazard.from_json)
            await self.refresh_silences()
            bound: dict[str, EventT[bytes]] = {}
            for h, e in decoded:  # a hazard's state and its area's live index, bound to it
                for key in self.ctx.lifecycle.state_keys(h):
                    bound[key] = e
            state = EventBoundTable(self.alert_state, stream, bound)
            now = self.ctx.now()
            book = self.ctx.rulebook.current
            out = self.ctx.lifecycle.process([h for h, _ in decoded], state, book.urgency,
                                             book.lifecycle, now=now, mute=self.mute)
            outbox = self.outbox()
            on_ledger = await self.already_on_ledger({e.message.partition for _, e in decoded})
            for alert in out:
                if alert.alert_id in on_ledger:
                    log.info("alert already on the ledger, not issued again",
                             extra={"alert_id": alert.alert_id})
                    continue
                self.m.alerts.labels(alert.level.label, alert.transition).inc()
                self.m.event_to_alert.observe(
                    max(0.0, (now - alert.hazard.observed_at).total_seconds()))
                outbox.add(self.alerts.get_topic_name(), rank_area(alert.hazard.place).encode(),
                           alert.to_json())
            await self.output_then_state(outbox, state, "lifecycle")
            self.m.records_out.labels("lifecycle").inc(len(out))
            self.m.batch_seconds.labels("lifecycle").observe(time.perf_counter() - started)

    async def already_on_ledger(self, partitions: set[int]) -> set[str]:
        """Alert ids a batch of these hazard partitions must not issue again: those at the
        end of the same ledger partitions when this worker took them over (a batch whose
        alerts were out but whose state was not written when its worker died).

        Hazards and alerts share their key (the rank area) and partition count, so hazard
        partition p writes ledger partition p. If the ledger cannot be read, nothing is
        left out (at least once, as the sinks expect) and it is tried again next batch.
        """
        new = partitions - self._ledger_tails.keys()
        if new:
            s = self.ctx.settings
            try:
                self._ledger_tails.update(await ledger_tails(
                    s.bootstrap_servers, s.topic("alerts"), new, s.batch_size))
            except Exception as exc:  # the broker unreachable: the sinks are idempotent
                self.m.broker_errors.labels("ledger-tail").inc()
                log.warning("cannot read the ledger's end, issuing the batch as it is: %r", exc)
        return set().union(*(self._ledger_tails.get(p, set()) for p in partitions))

    async def _forget_ledger_tails(self, app: Any, /, *args: Any, signal: Any,
                                   **kwargs: Any) -> None:
        """A rebalance: partitions may come back after another worker wrote to them."""
        self._ledger_tails.clear()

    def _sink_agent(self, sink: AlertSink) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
        async def deliver(stream: faust.StreamT[bytes]) -> None:
            async for events in self.batches(stream):
                batch = [a for a, _ in await self.decode(events, f"sinks.{sink.name}",
                                                         Alert.from_json)]
                await deliver_until_done(sink, batch, self.ctx)
        return deliver

    async def check_silence(self) -> None:
        """Report sources of this worker's partitions that stopped reporting.

        A timer, every SILENCE_CHECK_S (also once the records stop: a source lost at the
        end of a storm is still reported). It waits for the rules agent's batch in progress:
        mid-batch, a source's new reading is not yet in the table, and the source would be
        reported silent by mistake.
        """
        async with self._rules_batch:
            await self._report_silent_sources()

    async def _report_silent_sources(self) -> None:
        hazards = self.ctx.rules.silent_sources(
            [(k, v) for k, v in self.source_state.items()
             if not k.startswith(MARKER_PREFIX) and not is_chunk_key(k)],
            self.ctx.rulebook.current)
        for hazard in hazards:
            self.m.rule_decisions.labels("source-silent").inc()
            await self.hazards.send(key=rank_area(hazard.place).encode(), value=hazard.to_json())

    def mute(self, hazard: Hazard) -> str | None:
        """Why a hazard's notifications are silenced (a silence in force at its event
        time), or None."""
        silence = silenced_by(hazard, self.silences, hazard.observed_at)
        if silence is None:
            return None
        return (f"silence {silence.id} by {silence.created_by} until "
                f"{silence.ends_at.isoformat()}: {silence.comment}")[:300]

    async def refresh_silences(self) -> None:
        """Re-read the silences if the copy is older than SILENCES_REFRESH_S (called before
        each lifecycle batch, so a silence set on the wall applies within that time)."""
        if self.redis is None or time.monotonic() - self._silences_read_at < SILENCES_REFRESH_S:
            return
        self._silences_read_at = time.monotonic()
        try:
            self.silences = await read_silences(self.redis)
        except RedisError as exc:
            log.warning("cannot read silences, keeping %d known: %s", len(self.silences), exc)

    async def reload_roster(self) -> None:
        outcome = self.ctx.roster.maybe_reload()
        if outcome is not None and self.follow_up is not None \
                and self.follow_up.metrics is not None:
            self.follow_up.metrics.roster_reloads.labels(outcome).inc()

    async def reload_rules(self) -> None:
        outcome = self.ctx.rulebook.maybe_reload()
        if outcome is not None:
            self.m.rule_reloads.labels(outcome).inc()
            if outcome == "reloaded":
                self.m.rules_version.clear()
                self.m.rules_version.labels(self.ctx.rulebook.current.version).set(1)

    async def internal_dead_letter(self, event: EventT[bytes], stage: str, exc: Exception) -> None:
        """An undecodable record between stages (a producer bug or foreign writer): keep it."""
        dl = DeadLetter(_raw(event), feed="internal", stage=stage, reason="undecodable",
                        detail=repr(exc)[:200])
        self.m.dead_letters.labels("internal", "undecodable").inc()
        await self.deadletter.send(key=event.key, value=dl.to_json(self.ctx.now()))


async def deliver_until_done(sink: AlertSink, batch: list[Alert], ctx: WorkerContext) -> None:
    """Send to one sink, retrying transient failures with backoff; the batch is only
    acknowledged (offsets committed) after every alert is delivered or failed for good."""
    pending = batch
    delay = 0.2
    sm = ctx.sink_metrics
    while pending:
        started = time.perf_counter()
        try:
            outcomes = await sink.send(pending)
        except Exception:  # a sink bug must not kill the worker: count it and retry
            log.exception("sink %s raised", sink.name)
            sm.errors.labels(sink.name).inc()
            outcomes = [Outcome.RETRY] * len(pending)
        sm.batch_seconds.labels(sink.name).observe(time.perf_counter() - started)
        retry: list[Alert] = []
        for alert, outcome in zip(pending, outcomes, strict=True):
            sm.deliveries.labels(sink.name, outcome.value).inc()
            if outcome == Outcome.RETRY:
                retry.append(alert)
            elif outcome == Outcome.FAILED:
                log.error("sink %s failed alert %s for good", sink.name, alert.alert_id)
        pending = retry
        if pending:
            await asyncio.sleep(delay)
            delay = min(SINK_RETRY_MAX_S, delay * 2)


def _raw(event: EventT[bytes]) -> RawRecord:
    msg: Any = event.message
    return RawRecord(event.value, event.key, msg.topic, msg.partition, msg.offset)
