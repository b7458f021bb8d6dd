"""The worker's stages: each a thin shell around its pure batch logic.

Ingest and rules, which see every reading, run on plain aiokafka batch loops, each in a
consumer group of its own (streams/batch_loop.py, ingest_loop.py, rules_loop.py: faust's
per-event stream cost more than the stages themselves; the rules loop keeps its per-source
state and changelog itself). Lifecycle and the sinks, which see only hazards and alerts,
are faust agents; the lifecycle's state is a faust table.

    onemap.in.<feed> --ingest--> onemap.observations --rules--> onemap.hazards
        --lifecycle--> onemap.alerts --sinks--> Redis state, SMS

Incident reports and CAP warnings take a lane of their own between ingest and rules,
``onemap.observations.priority``, whose fetched records both loops take first: a burst of
sensor readings (thousands a second in a storm) then never queues the news that is urgent
by itself (docs/operations.md, "Overload and priority").

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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import faust
import redis.asyncio as aioredis
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import EventT
from mode import CrashingSupervisor
from redis.exceptions import RedisError

from onemap.records import Alert, Hazard
from onemap.rules.lifecycle import rank_area
from onemap.rules.silences import Silence, silenced_by
from onemap.sinks.base import AlertSink, Outcome
from onemap.sinks.silences import read_silences
from onemap.sinks.sms.followup import ESCALATION_CHECK_S, SmsFollowUp
from onemap.sinks.sms.sink import SmsSink
from onemap.streams.batch_loop import BatchLoop
from onemap.streams.context import WorkerContext
from onemap.streams.deadletter import RawRecord, undecodable
from onemap.streams.feeds import FEEDS
from onemap.streams.handoff import LocalObservations
from onemap.streams.health import HEALTH_INTERVAL_S, HealthMonitor
from onemap.streams.ingest_loop import IngestLoop
from onemap.streams.ledger_tail import ledger_tails
from onemap.streams.outbox import Outbox, PartitionCache
from onemap.streams.rules_loop import RulesLoop
from onemap.streams.state_tables import EventBoundTable

log = logging.getLogger(__name__)

INPUT_TOPICS = {name: f"in.{name}" for name in ("weather", "water", "geohazard", "incident", "cap")}
PIPELINE_TOPICS = ("observations", "observations.priority", "hazards", "alerts", "deadletter")
#: feeds whose every record is a report on its own (no window, no rate): few, and the most
#: urgent news; their observations skip the queue of the sensor readings
PRIORITY_FEEDS = frozenset({"incident", "cap"})
SINK_RETRY_MAX_S = 10.0  # a sink back after an outage catches up within ~10 s
SILENCES_REFRESH_S = 5.0
#: how often held SMS are checked for a due summary
SMS_TICK_S = 15.0
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
        self.hazards = self.topic("hazards")
        self.alerts = self.topic("alerts")
        self.deadletter = self.topic("deadletter")
        partitions = ctx.settings.partitions
        # No value_type: values are plain JSON dicts (value_type=dict makes faust try
        # dict.from_data when it recovers the changelog after a restart, and lose the state)
        self._partitions: PartitionCache = {}  # see Outbox
        self.alert_state = self.app.Table(
            "onemap-alert-state", default=dict, key_type=str,
            partitions=partitions)
        self.m.rules_version.labels(ctx.rulebook.current.version).set(1)
        #: silences in force, refreshed from Redis (the wall's API writes them); the last
        #: good list is kept while Redis is unreachable
        self.silences: list[Silence] = []
        self._silences_read_at = -SILENCES_REFRESH_S
        #: ledger partition -> the alert ids at its end when this worker took it over
        #: (streams/ledger_tail.py); forgotten when partitions are revoked
        self._ledger_tails: dict[int, set[str]] = {}
        self.app.on_partitions_revoked.connect(self._forget_ledger_tails)
        self.agent(self.hazards, "onemap.lifecycle", self.lifecycle_agent)
        for sink in self.sinks:  # one agent per sink: a failing SMS gateway never holds up
            # the wall display (each agent gets every alert; offsets commit when all acked)
            self.agent(self.alerts, f"onemap.sinks.{sink.name}", self._sink_agent(sink))
        self.app.timer(interval=ctx.settings.rules_reload_interval_s)(self.reload_rules)
        self.app.timer(interval=ctx.settings.rules_reload_interval_s)(self.reload_roster)
        # SMS follow-ups: summaries of held messages, escalation of unacknowledged alerts,
        # deputies of undeliverable ones. Every worker may run them: each step is claimed
        # once in Redis.
        if sms is not None:
            self.app.timer(interval=SMS_TICK_S)(sms.tick)
        if follow_up is not None:
            self.app.timer(interval=ESCALATION_CHECK_S)(follow_up.tick)
        # --- health: consumer lag, feed activity, live hazards, onemap:feeds (streams/health.py)
        consumed = [self.ctx.settings.topic(t) for t in ("hazards", "alerts")]
        self.health = HealthMonitor(self.app, ctx, consumed, self.alert_state,
                                    hazards_topic=self.ctx.settings.topic("hazards"))
        self.app.timer(interval=HEALTH_INTERVAL_S)(self.health.tick)
        # --- ingest and rules: plain aiokafka batch loops in this process, each in a group
        # of its own (streams/batch_loop.py): they see every reading
        s = ctx.settings
        local = LocalObservations()  # what ingest made, for rules to take (streams/handoff.py)
        self.ingest = IngestLoop(
            ctx, self.health,
            {feed: s.topic(t) for feed, t in INPUT_TOPICS.items() if feed in FEEDS},
            lambda feed: s.topic(observations_topic(feed)), s.topic("deadletter"),
            priority_feeds=PRIORITY_FEEDS, local=local)
        # two lanes: the priority lane's fetched records are taken first, so a report
        # waits for at most one batch of readings, never for the readings' backlog
        self.rules = RulesLoop(ctx, observations=s.topic("observations"),
                               priority=s.topic("observations.priority"),
                               hazards=s.topic("hazards"), deadletter=s.topic("deadletter"),
                               local=local)
        self.loops: list[BatchLoop] = [self.ingest, self.rules]
        self.health.extra_lag = self.loops_lag
        for loop in self.loops:
            self.app.task(self._run_loop(loop))

    def outbox(self) -> Outbox:
        faust_producer: Any = self.app.producer  # the aiokafka producer faust sends with
        return Outbox(faust_producer._ensure_producer, self.m.broker_errors.labels("send").inc,
                      self._partitions)

    def _run_loop(self, loop: BatchLoop) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            """The loop, for as long as the app runs; its crash crashes the worker (as an
            agent's does: a restarted worker resumes from the committed offsets)."""
            try:
                await loop.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("the %s loop crashed", loop.name)
                await self.app.crash(exc)
        run.__name__ = f"run_{loop.name}_loop"
        return run

    async def loops_lag(self) -> dict[tuple[str, int], int]:
        lag: dict[tuple[str, int], int] = {}
        for loop in self.loops:
            lag.update(await loop.lag())
        return lag

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
        """The agent's events in batches: up to ``batch_size``, handed over when that many
        are buffered or else every ``batch_wait_s``. (Every ``batch_linger_s`` instead, so
        that the few records of these agents wait less for the next wake, was tried and
        measured no faster: benchmarks/results/pipeline-ab-agent-linger-*.md.)"""
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
        dl = undecodable(RawRecord.of(event.message), stage, exc)
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
