"""The worker's logging stays as ``onemap.logs.configure`` set it once faust's worker starts:
structured (text or JSON), quiet by default, and no debug records built in the hot path."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import faust
import pytest

from onemap import logs
from onemap.settings import Settings
from onemap.streams.worker import faust_worker


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    yield root
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def test_the_faust_worker_keeps_our_handler_and_level(root_logging: logging.Logger) -> None:
    """mode's worker set up its own handler at its first start (our JSON lines became
    ``[ts] [pid] [WARNING] msg``) and faust's spinner left the root logger at DEBUG, so every
    debug call of aiokafka built a record to drop. The worker's first start, as mode runs it,
    now leaves both alone."""
    logs.configure("WARNING", "json")
    [ours] = root_logging.handlers
    stream = io.StringIO()
    assert isinstance(ours, logging.StreamHandler)
    ours.setStream(stream)
    app = faust.App("onemap-logging-test", broker="kafka://127.0.0.1:9", web_enabled=False)
    worker = faust_worker(app, Settings.from_env({}))

    asyncio.run(worker.default_on_first_start())  # where mode set up its logging

    assert root_logging.handlers == [ours] and root_logging.level == logging.WARNING
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
    logging.getLogger("onemap.streams.rules_loop").warning("offsets not committed")
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["logger"] == "onemap.streams.rules_loop"
