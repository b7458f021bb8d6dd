"""The worker's logging as it was before faust_worker (A/B of that change): mode's worker
replaces the root handlers with its own at the start, and faust's start-up spinner leaves
the root logger at DEBUG, so every debug call of aiokafka, faust and mode builds a record."""

from __future__ import annotations

from faust.worker import Worker

from onemap.streams import worker


def _as_before(app, settings):  # type: ignore[no-untyped-def]
    return Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)


worker.faust_worker = _as_before
