"""A/B prelude for ``bench_pipeline --prelude``: ingest as faust agents again (one per feed,
in the faust group), as before ``streams/ingest_loop.py`` took the stage off faust. A record
of that A/B: written for git 3ccba9f (ingest on its loop, rules still a faust agent); the
rules loop since changed the Pipeline it patches.

Applied to today's code it undoes only that change: the same pure stage, the same
``IngestLoop.process`` shell and ``Outbox`` into the same topics and partitions, the same
batch size and wait; the input topics' lag is read from faust's consumer again. The
difference between a run with and without it is what the plain aiokafka loop buys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

from onemap.streams import app
from onemap.streams.deadletter import RawRecord
from onemap.streams.feeds import FEEDS

_init = app.Pipeline.__init__


async def _no_loop(self: app.Pipeline) -> None:
    return None


def _agent(pipeline: app.Pipeline, feed: str) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for events in pipeline.batches(stream):
            records = [RawRecord(e.value, e.key, e.message.topic, e.message.partition,
                                 e.message.offset) for e in events]
            out = pipeline.outbox()
            produced = pipeline.ingest.process(feed, records, out)
            await out.send()
            pipeline.m.records_out.labels("ingest").inc(produced)
    return ingest


def __init__(self: app.Pipeline, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    s = self.ctx.settings
    for feed, topic_name in app.INPUT_TOPICS.items():
        if feed in FEEDS:
            self.agent(self.topic(topic_name), f"onemap.ingest.{feed}", _agent(self, feed))
            self.health.topics.append(s.topic(topic_name))
    self.health.extra_lag = None


app.Pipeline.run_ingest = _no_loop  # type: ignore[method-assign]
app.Pipeline.__init__ = __init__  # type: ignore[method-assign]
