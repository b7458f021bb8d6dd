"""`onemap worker`: one faust worker running every stage, its sinks and its /metrics."""

from __future__ import annotations

import gc
import logging

import faust
import redis
import redis.asyncio as aioredis
from faust.worker import Worker
from prometheus_client import start_http_server

from onemap import logs
from onemap.embedded import require_free
from onemap.errors import ComponentError
from onemap.levels import WarningLevel
from onemap.settings import Settings
from onemap.sinks.base import AlertSink
from onemap.sinks.dashboard.state import RedisStateSink
from onemap.sinks.sms.followup import SmsFollowUp, SmsFollowUpMetrics
from onemap.sinks.sms.outbox import provider_from_url
from onemap.sinks.sms.sink import SmsSink
from onemap.streams.app import Pipeline
from onemap.streams.context import build_context
from onemap.topics import ensure_topics

log = logging.getLogger(__name__)


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise ComponentError(
            f"Redis at {url} is not reachable ({exc}); start it or pass --redis URL") from exc


#: the cyclic collector's first generation: collected every GC_YOUNG net allocations of
#: container objects (Python's default, 700, collected ~300 times a second at capacity)
GC_YOUNG = 10_000


def tune_gc() -> None:
    """The cyclic garbage collector set for a worker (benchmarks/README.md, "Garbage
    collection": 18-22 % of a worker's CPU at capacity with Python's defaults, ~1 % so).

    What is built before consuming (the map's index, registries, rules, the app: ~180,000
    objects that live as long as the worker) is put out of its sight: every full
    collection scanned it again. The first generation is collected less often: nearly
    every object a batch makes is freed by reference counting within the batch, so a
    larger threshold means far fewer collections, not more garbage (objects in reference
    cycles wait for at most GC_YOUNG allocations)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


def faust_worker(app: faust.App, settings: Settings) -> Worker:
    """faust's worker for ``app``, leaving the logging as :func:`onemap.logs.configure` set it.

    By default mode's worker replaces the root logger's handlers with its own (so after the
    start ``ONEMAP_LOG_FORMAT=json`` no longer applied, nor our text format with the logger's
    name), and faust's start-up spinner sets the root logger to DEBUG for good: every debug
    call of aiokafka, faust and mode (several per fetch and produce request) then built a
    log record, walked the stack for its caller and passed two handlers, to be dropped."""
    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                    override_logging=False)
    worker.spinner = None  # its terminal codes went to the log
    return worker


def run_worker(settings: Settings) -> int:
    logs.configure(settings.log_level, settings.log_format)
    ctx = build_context(settings)  # bad boundaries, registries, rules or roster fail here
    check_redis(settings.redis_url)
    ensure_topics(settings)
    require_free(settings.metrics_host, settings.metrics_port, "worker metrics",
                 "--metrics-port or ONEMAP_METRICS_PORT")
    start_http_server(settings.metrics_port, settings.metrics_host, registry=ctx.registry)
    client = aioredis.Redis.from_url(settings.redis_url)
    def repeat_interval(level: WarningLevel) -> float | None:  # the rules in force now
        return ctx.rulebook.current.lifecycle.repeat_interval(level)

    follow_up = SmsFollowUp(client, roster=lambda: ctx.roster.current, now=ctx.now,
                            metrics=SmsFollowUpMetrics(ctx.registry),
                            repeat=repeat_interval,
                            pending_stale_s=settings.sms_pending_stale_s)
    provider = provider_from_url(settings.sms_outbox_url, secret=settings.sms_secret,
                                 on_event=follow_up.on_event)
    follow_up.attach(provider)
    sms = SmsSink(client, provider, roster=lambda: ctx.roster.current, now=ctx.now,
                  registries=ctx.registries, limits=lambda: ctx.sms_limits,
                  follow_up=follow_up, metrics=ctx.sink_metrics,
                  pending_stale_s=settings.sms_pending_stale_s)
    sinks: list[AlertSink] = [RedisStateSink(client), sms]
    app = Pipeline(ctx, sinks, redis=client, sms=sms, follow_up=follow_up).app
    log.warning("worker starting: kafka=%s redis=%s metrics=http://%s:%d/metrics",
                settings.kafka_url, settings.redis_url, settings.metrics_host,
                settings.metrics_port)
    worker = faust_worker(app, settings)
    tune_gc()
    worker.execute_from_commandline()
    return 0
